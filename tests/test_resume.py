"""Resume: a recording continued later equals one uninterrupted run, bit for bit."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from conftest import acc, acc_start


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the recording, cut to its completed steps."""
    root = zarr.open_group(path, mode="r")
    done = root.attrs["acc_capture"]["steps_completed"]
    return {f"{g}/{k}": root[g][k][:done] for g in ("tensors", "summary") for k in root[g].array_keys()}


def assert_same(a: Path, b: Path) -> None:
    xa, xb = arrays(a), arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        assert xa[name].shape == xb[name].shape, name
        assert xa[name].tobytes() == xb[name].tobytes(), f"{name} differs"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """130 uninterrupted steps: crosses the neighbour recomputations at steps 50 and 100."""
    path = tmp_path_factory.mktemp("resume") / "straight"
    acc("run", "--steps", "130", "--out", str(path), "--chunk-steps", "13")
    return path


def test_resume_equals_one_run(straight, tmp_path):
    path = tmp_path / "split"
    acc("run", "--steps", "70", "--out", str(path), "--chunk-steps", "9")
    acc("resume", str(path), "--steps", "60", "--chunk-steps", "4")
    assert_same(path, straight)
    meta = zarr.open_group(path, mode="r").attrs["acc_capture"]
    assert meta["status"] == "complete" and meta["steps_completed"] == 130
    assert [r["at_step"] for r in meta["resumed"]] == [70]


def as_saved_on_a_gpu(file: Path) -> None:
    """Rewrite a training state as torch.save writes it on a GPU: its storages located on cuda:0."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # (the location, a pickled str)
    saved, out = zipfile.ZipFile(io.BytesIO(file.read_bytes())), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in saved.infolist():
            data = saved.read(info)
            if info.filename.endswith("/data.pkl"):
                assert cpu in data
                data = data.replace(cpu, cuda)
            z.writestr(info.filename, data)
    file.write_bytes(out.getvalue())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a state from a GPU on a machine without one")
def test_a_state_saved_on_a_gpu_resumes_on_the_cpu(straight, tmp_path):
    path = tmp_path / "from_gpu"
    acc("run", "--steps", "120", "--out", str(path), "--chunk-steps", "40")
    [state] = (path / "state").glob("*.pt")
    as_saved_on_a_gpu(state)
    with pytest.raises(RuntimeError, match="CUDA"):  # what torch.load alone makes of it here
        torch.load(state, weights_only=True)
    acc("resume", str(path), "--steps", "10", "--device", "cpu")
    assert_same(path, straight)


def test_resume_several_times_and_sparse_policy(tmp_path):
    straight, split = tmp_path / "a", tmp_path / "b"
    acc("run", "--steps", "36", "--out", str(straight), "--full-every", "5", "--keys", "rank_score,loss,neighbors")
    acc("run", "--steps", "11", "--out", str(split), "--full-every", "5", "--keys", "rank_score,loss,neighbors")
    acc("resume", str(split), "--steps", "1")
    acc("resume", str(split), "--steps", "24", "--chunk-steps", "5")
    assert_same(split, straight)


def test_kill_then_resume_equals_uninterrupted(straight, tmp_path):
    path = tmp_path / "killed"
    proc = acc_start("run", "--steps", "130", "--out", str(path), "--chunk-steps", "6")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                done = json.loads((path / "zarr.json").read_text())["attributes"]["acc_capture"]["steps_completed"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                done = 0
            if done >= 40:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    info = acc("info", str(path), "--json")
    d = json.loads(info.stdout)
    assert d["status"] == "interrupted"
    done = d["steps_completed"]
    assert 40 <= done < 130
    acc("resume", str(path), "--steps", str(130 - done))
    assert_same(path, straight)
    assert list((path / "state").glob("*.pt")) == [path / "state" / "step-00000130.pt"]


def test_resume_refuses_bad_input(straight, tmp_path):
    for args, words in [
        (["resume", str(tmp_path / "nope"), "--steps", "5"], "no such directory"),
        (["resume", str(straight), "--steps", "0"], "positive"),
        (["resume", str(tmp_path), "--steps", "5"], "not a recording"),
    ]:
        before = {p: p.read_bytes() for p in straight.rglob("*") if p.is_file()}
        proc = acc(*args, check=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr + proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
        assert before == {p: p.read_bytes() for p in straight.rglob("*") if p.is_file()}
