"""The writer behind the loop (capture/writer.py): a process of its own fed through a shared ring.

What it writes is what the thread writer writes, bit for bit, for every dtype a recording stores;
the ring grows when steps are flushed later than promised; a writer that cannot be a process
(a vocabulary whose own summaries live in `__main__`) is a thread; the writer process never
outlives the training process; CUDA captures land in the ring once per step (on a CUDA machine);
large files go past the page cache, byte for byte, or the usual way where that is refused.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from capture import Recording, TensorKey, record
from capture import store
from capture.writer import VARIABLE, ProcessWriter, vocabularies_of
from conftest import assert_same_recording


class Keys(TensorKey):
    LOSS = "loss", (), "scalar"
    HALF = "half", ("row", "col"), "heatmap", True
    BRAIN = "brain", ("row", "col"), "heatmap", True
    WIDE = "wide", ("few", "col"), "heatmap"
    COUNT = "count", ("row",), "bars"
    MASK = "mask", ("row", "col"), "heatmap"
    PIXELS = "pixels", ("image", "height", "width"), "images"


def values(step: int) -> dict[Keys, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(64, 80, generator=g)  # 20 KB a step: above the small-tensor size, so sharded
    return {Keys.LOSS: x.mean(), Keys.HALF: x.half(), Keys.BRAIN: x.bfloat16(), Keys.WIDE: x.double()[:8],
            Keys.COUNT: (x > 0).sum(1), Keys.MASK: x > 1, Keys.PIXELS: (x.abs() * 60).clamp(0, 255).to(torch.uint8)[:4].reshape(4, 8, 10)}


def make(path: Path, steps: int, chunk_steps: int = 7, by_hand: int | None = None) -> None:
    with record(path, Keys, chunk_steps=chunk_steps) as rec:
        if by_hand:
            rec.flush_by_hand(by_hand)
        for step in range(steps):
            for key, value in values(step).items():
                rec.inspector.capture(key, value)
            rec.commit()
            if by_hand and (step + 1) % (3 * by_hand) == 0:  # later than promised: the ring grows
                rec.flush()


def test_the_process_writer_writes_what_the_thread_writer_writes(tmp_path, monkeypatch):
    with record(tmp_path / "probe", Keys) as rec:
        assert isinstance(rec._writer, ProcessWriter)
        for key, value in values(0).items():
            rec.inspector.capture(key, value)
        rec.commit()
    make(tmp_path / "process", 30)
    monkeypatch.setenv(VARIABLE, "thread")
    make(tmp_path / "thread", 30)
    assert_same_recording(tmp_path / "process", tmp_path / "thread", 30)
    rec = Recording.open(tmp_path / "process")
    for step in (0, 6, 7, 29):
        got, want = rec.step(step), values(step)
        for key, value in want.items():
            expect = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
            assert got[key.value].dtype == expect.dtype and np.array_equal(got[key.value], expect), (step, key)
    assert np.array_equal(rec.summary("loss"), [values(s)[Keys.LOSS].item() for s in range(30)])


def test_each_training_state_reaches_the_writer_process_whole(tmp_path):
    """A chunk's training state goes to the writer process through a memfd of its ring block, used
    again two chunks later: a smaller state after a larger one is saved as exactly its own bytes."""
    from capture.recorder import state_bytes

    path = tmp_path / "states"
    with record(path, Keys) as rec:
        assert isinstance(rec._writer, ProcessWriter)
        rec.flush_by_hand(2)
        for step in range(12):
            for key, value in values(step).items():
                rec.inspector.capture(key, value)
            rec.commit()
            if step % 2:
                state = {"step": step + 1, "w": torch.arange((step % 4 + 1) * 100_000, dtype=torch.float32) * step}
                rec.flush(state)
                rec.sync()
                saved = (path / "state" / f"step-{step + 1:08d}.pt").read_bytes()
                assert saved == state_bytes(state), f"the state after step {step}"
                assert torch.equal(torch.load(path / "state" / f"step-{step + 1:08d}.pt", weights_only=True)["w"], state["w"])


@pytest.mark.parametrize("refused", [None, "open", "open, not supported", "write"])
def test_large_files_are_written_exactly_past_the_page_cache_or_the_usual_way(tmp_path, monkeypatch, refused):
    if refused is None:
        try:
            os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        except OSError:
            pytest.skip(f"{tmp_path}'s file system does not do O_DIRECT")
        os.unlink(tmp_path / "probe")
    monkeypatch.setattr(store, "_direct", True)
    real_open, real_pwrite, direct = os.open, os.pwrite, []

    def fake_open(path, flags, *args):
        if flags & os.O_DIRECT:
            direct.append(path)
            if refused and refused.startswith("open"):
                raise OSError(errno.EINVAL if refused == "open" else errno.EOPNOTSUPP, "refused")
        return real_open(path, flags, *args)

    def fake_pwrite(fd, data, offset):
        if refused == "write":
            raise OSError(errno.EINVAL, "refused")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "pwrite", fake_pwrite)
    rng = np.random.default_rng(0)
    sizes = [0, 5, store.DIRECT_BYTES - 1, store.DIRECT_BYTES, store.DIRECT_BYTES + 1, 3 << 20, (9 << 20) + 7]  # (the last: 3 pieces)
    for n in sizes:
        data = rng.bytes(n)
        store.DirStore(tmp_path).put(f"a/f{n}", data)
        assert (tmp_path / "a" / f"f{n}").read_bytes() == data, n
        cuts = sorted([*rng.integers(0, n + 1, 6), min(n, 4 << 20), min(n, 8 << 20)])  # (as parts, like a shard's)
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
        store.DirStore(tmp_path).put(f"a/p{n}", parts)
        assert (tmp_path / "a" / f"p{n}").read_bytes() == data, n
        store.DirStore(tmp_path).put(f"a/m{n}", np.frombuffer(data[: n - n % 4], np.float32))  # (any buffer, as its bytes)
        assert (tmp_path / "a" / f"m{n}").read_bytes() == data[: n - n % 4], n
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(f"{f}{n}" for n in sizes for f in "fpm")  # (no .partial left)
    large = [n for n in sizes if n >= store.DIRECT_BYTES]
    assert len(direct) == (3 * len(large) if refused is None else 1)  # (refused once: not asked again)
    assert store._direct is (refused is None)


def test_a_ring_flushed_later_than_promised_grows_and_loses_nothing(tmp_path, monkeypatch):
    make(tmp_path / "grown", 40, by_hand=4)
    monkeypatch.setenv(VARIABLE, "thread")
    make(tmp_path / "plain", 40)
    assert_same_recording(tmp_path / "grown", tmp_path / "plain", 40)


class Own(TensorKey):
    LOSS = "loss", (), "scalar"

    @classmethod
    def summaries(cls) -> dict:
        return {"loss_twice": ((), "float32", ("loss",), lambda b: 2 * b["loss"])}


def test_own_summaries_are_computed_in_the_writer_process_or_on_a_thread(tmp_path):
    """A vocabulary the writer process can import has its summaries made there; one defined in a
    script's __main__ is written on a thread, with the same result."""
    assert vocabularies_of(Own) == [f"{Own.__module__}:Own"]
    with record(tmp_path / "own", Own) as rec:
        assert isinstance(rec._writer, ProcessWriter)
        for step in range(5):
            rec.inspector.capture(Own.LOSS, torch.tensor(float(step)))
            rec.commit()
    assert Recording.open(tmp_path / "own").summary("loss_twice").tolist() == [0, 2, 4, 6, 8]

    script = textwrap.dedent(f"""
        import torch
        from capture import TensorKey, Recording, record
        from capture.writer import ThreadWriter

        class Mine(TensorKey):
            LOSS = "loss", (), "scalar"

            @classmethod
            def summaries(cls):
                return {{"loss_twice": ((), "float32", ("loss",), lambda b: 2 * b["loss"])}}

        with record({str(tmp_path / "main")!r}, Mine) as rec:
            assert isinstance(rec._writer, ThreadWriter)
            for step in range(5):
                rec.inspector.capture(Mine.LOSS, torch.tensor(float(step)))
                rec.commit()
        print(Recording.open({str(tmp_path / "main")!r}).summary("loss_twice").tolist())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[0.0, 2.0, 4.0, 6.0, 8.0]", out.stderr


def test_the_writer_process_ends_with_the_training_process(tmp_path):
    """SIGKILL the training process while it records: its writer process is gone right after, and the
    recording reads `interrupted` with whole steps only."""
    path = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, sys, torch
        from capture import TensorKey, record

        class K(TensorKey):
            X = "x", ("row", "col"), "heatmap"

        with record({str(path)!r}, K, chunk_steps=2) as rec:
            print(rec._writer.process.pid, flush=True)
            step = 0
            while True:
                rec.inspector.capture(K.X, torch.full((64, 64), float(step)))
                rec.commit()
                step += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        writer = int(proc.stdout.readline())
        deadline = time.monotonic() + 60
        while not (path / "zarr.json").exists() or Recording.open(path).steps < 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{writer}").exists() and _state(writer) != "Z":
        assert time.monotonic() < deadline, "the writer process outlived the training process"
        time.sleep(0.01)
    rec = Recording.open(path)
    assert rec.status == "interrupted" and rec.steps >= 4 and rec.steps % 2 == 0
    step = rec.step(rec.steps - 1)["x"]
    assert np.all(step == rec.steps - 1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_captures_land_in_the_ring(tmp_path):
    """CUDA tensors are copied asynchronously into page-locked buffers, waited for once per step and
    moved into the ring: what is stored equals the CPU values, though the live tensors change right
    after each capture."""
    with record(tmp_path / "cuda", Keys, chunk_steps=3) as rec:
        for step in range(10):
            want = values(step)
            for key, value in want.items():
                live = value.cuda()
                rec.inspector.capture(key, live)
                live.add_(1) if live.dtype != torch.bool else live.logical_not_()  # after the copy, on the same stream
            rec.commit()
    # from the second step on, each key's capture went through a page-locked buffer of its own (bfloat16,
    # stored as float32, is converted on the way instead)
    assert set(rec.inspector._pinned) == set(Keys) - {Keys.BRAIN}
    assert all(b.is_pinned() for b in rec.inspector._pinned.values())
    rec = Recording.open(tmp_path / "cuda")
    for step in (0, 5, 9):
        got = rec.step(step)
        for key, value in values(step).items():
            expect = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
            assert np.array_equal(got[key.value], expect), (step, key)
