"""`record()` and `capture.watch()` as a user of the public API meets them: values round trip bit for
bit, every bad use is one clear error that leaves the committed steps intact, the arrays grow and
are cut, the save policies and summaries hold, a SIGKILL leaves whole steps, and the example runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

import capture
from acc.step_inspector import StepTensorKey
from capture import CaptureError, Recording, RecordingSession, TensorKey, record
from conftest import acc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mlp_classifier.py"


class K(TensorKey):
    LOSS = "loss", (), "scalar", False, "a float scalar"
    COUNT = "count", (), "scalar", False, "an integer scalar"
    W = "w", ("row", "col"), "weights", True, "8 KB a step: one chunk a step, in shards"
    V = "v", ("col",), "bars", True, "small: many steps a chunk"
    LABELS = "labels", ("row",), "labels"
    MASK = "mask", ("col",), "bars"


def values(step: int) -> dict[K, torch.Tensor]:
    """The known tensors of `step` (the same in every process)."""
    g = torch.Generator().manual_seed(step)
    return {K.LOSS: torch.tensor(1 / (step + 1)), K.COUNT: torch.tensor(step * 3), K.W: torch.randn(32, 64, generator=g),
            K.V: torch.randn(64, generator=g), K.LABELS: torch.randint(0, 10, (32,), generator=g),
            K.MASK: torch.rand(64, generator=g) > 0.5}


def commit_steps(rec: RecordingSession, start: int, stop: int) -> None:
    for step in range(start, stop):
        for key, value in values(step).items():
            rec.inspector.capture(key, value)
        rec.commit()


def record_forever(path: str) -> None:
    """For the SIGKILL test: record the known steps until killed."""
    with record(path, K, chunk_steps=3) as rec:
        step = 0
        while True:
            commit_steps(rec, step, step + 1)
            step += 1


def assert_steps(path: Path, steps: int, status: str) -> None:
    """The recording opens with `steps` steps, `status`, and every step holds exactly its known values."""
    rec = Recording.open(path)
    assert (rec.steps, rec.status) == (steps, status)
    for step in range(steps):
        got = rec.step(step)
        for key, value in values(step).items():
            assert got[key.value].tobytes() == value.numpy().tobytes(), f"{key.value} at step {step}"


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text
    return text


# -- values round trip ---------------------------------------------------------------------------------

def test_values_read_back_with_plain_zarr_are_bit_equal(tmp_path):
    path = tmp_path / "rec"
    with record(path, K, chunk_steps=7) as rec:
        commit_steps(rec, 0, 25)
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["acc_capture"]["steps_completed"] == 25
    for key in K:
        arr = root["tensors"][key.value]
        assert arr.metadata.dimension_names == ("step", *key.dims)
        want = np.stack([values(s)[key].numpy() for s in range(25)])
        got = arr[:]
        assert (got.shape, got.dtype) == (want.shape, want.dtype), key.value
        assert got.tobytes() == want.tobytes(), key.value
    assert root.attrs["acc_capture"]["key_table"] == K.table()
    assert_steps(path, 25, "complete")


def load_example():
    spec = importlib.util.spec_from_file_location("mlp_classifier", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_end_to_end(tmp_path, monkeypatch, capsys):
    # in a process of its own, as a user runs it
    out = tmp_path / "sub"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "5", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"recorded 5 steps to {out}", f"view it: acc-capture view {out}"]

    # the same loop here, every commit watched: what it captured is what plain zarr reads back
    captured: list[dict[str, torch.Tensor]] = []
    commit = RecordingSession.commit

    def watched_commit(self):
        captured.append({k.value: self.inspector.get(k) for k in self.keys if self.inspector.get(k) is not None})
        commit(self)
    monkeypatch.setattr(RecordingSession, "commit", watched_commit)
    here = tmp_path / "here"
    example = load_example()
    assert example.main(["--steps", "5", "--out", str(here)]) == 0
    monkeypatch.undo()
    assert len(captured) == 5
    table = {e["key"]: e for e in Recording.open(here).key_table}
    mine, theirs = zarr.open_group(str(here), mode="r"), zarr.open_group(str(out), mode="r")
    wanted = {"images", "labels", "logits", "softmax", "loss", "accuracy"} | {
        f"fc{i}_{what}" for i in (1, 2) for what in ("output", "weight", "weight_grad", "bias", "bias_grad")}
    assert set(mine["tensors"].array_keys()) == set(table) == set(captured[0]) == wanted
    for key, entry in table.items():
        arr = mine["tensors"][key]
        assert arr.metadata.dimension_names == ("step", *entry["dims"])
        want = np.stack([c[key].numpy() for c in captured])
        assert arr[:].dtype == want.dtype and arr[:].tobytes() == want.tobytes(), key
        assert theirs["tensors"][key][:].tobytes() == want.tobytes(), f"{key}: the two runs differ"
    assert table["fc1_weight"]["dims"] == ["fc1_out", "fc1_in"] and table["fc1_output"]["dims"] == ["image", "fc1_out"]
    assert table["fc1_weight"]["render"] == "weights" and table["fc1_weight_grad"]["signed"]

    info = acc("info", str(out)).stdout
    for key in wanted:
        assert re.search(rf"^  {key} ", info, re.M), f"info does not list {key}"
    capsys.readouterr()
    for args, error in [(["--out", str(out)], r"a recording already exists at .*--force"),
                        (["--steps", "0", "--out", str(tmp_path / "none")], r"--steps must be at least 1, not 0")]:
        assert example.main(args) == 1
        printed = capsys.readouterr()
        assert printed.out == "" and re.fullmatch(rf"error: {error}.*\n", printed.err), printed.err
    assert Recording.open(out).steps == 5 and not (tmp_path / "none").exists()


# -- bad uses: one clear error, every committed step intact ---------------------------------------------

def capture_all_but(rec: RecordingSession, step: int, *skip: K) -> None:
    for key, value in values(step).items():
        if key not in skip:
            rec.inspector.capture(key, value)


def shape_change(rec):
    capture_all_but(rec, 3, K.W)
    rec.inspector.capture(K.W, torch.zeros(16, 64))
    rec.commit()


def dtype_change(rec):
    capture_all_but(rec, 3, K.W)
    rec.inspector.capture(K.W, torch.zeros(32, 64, dtype=torch.float64))
    rec.commit()


def missing_key(rec):
    capture_all_but(rec, 3, K.V)
    rec.commit()


def keyboard_interrupt(rec):
    capture_all_but(rec, 3)
    raise KeyboardInterrupt


def exception(rec):
    capture_all_but(rec, 3)
    raise RuntimeError("the loop failed")


BAD_USES = {  # what the loop does in step 3: the error, and words its message must hold
    "non-tensor": (lambda rec: rec.inspector.capture(K.LOSS, 0.5), CaptureError, ["loss", "torch.Tensor", "float"]),
    "key of another vocabulary": (lambda rec: rec.inspector.capture(StepTensorKey.LOSS, torch.tensor(1.0)),
                                  CaptureError, ["StepTensorKey.LOSS", "not a key of K"]),
    "unknown key name": (lambda rec: rec.inspector.capture("lost", torch.tensor(1.0)), CaptureError, ["'lost'", "K"]),
    "wrong number of dims": (lambda rec: rec.inspector.capture(K.W, torch.zeros(64)), CaptureError, ["w", "(64,)"]),
    "shape change": (shape_change, CaptureError, ["w", "step 3", "(16, 64)", "(32, 64)"]),
    "dtype change": (dtype_change, CaptureError, ["w", "torch.float64", "torch.float32"]),
    "missing key": (missing_key, CaptureError, ["step 3", "did not capture v"]),
    "nothing captured": (lambda rec: rec.commit(), CaptureError, ["nothing was captured", "step 3"]),
    "exception": (exception, RuntimeError, ["the loop failed"]),
    "KeyboardInterrupt": (keyboard_interrupt, KeyboardInterrupt, []),
}


@pytest.mark.parametrize("bad", BAD_USES)
def test_bad_use_leaves_every_committed_step(tmp_path, bad):
    act, error, words = BAD_USES[bad]
    path = tmp_path / "rec"
    with pytest.raises(error) as e:
        with record(path, K, chunk_steps=2) as rec:  # steps 0-1 written by now, step 2 on its way at the error
            commit_steps(rec, 0, 3)
            act(rec)
    if words:
        message = one_line(e.value)
        assert all(w in message for w in words), message
    assert_steps(path, 3, "interrupted")


def test_stopped_before_the_first_step(tmp_path):
    with pytest.raises(RuntimeError):
        with record(tmp_path / "rec", K):
            raise RuntimeError("before any commit")
    assert_steps(tmp_path / "rec", 0, "interrupted")
    info = acc("info", str(tmp_path / "rec")).stdout
    assert re.search(r"^steps +0 completed", info, re.M)


def test_a_step_capturing_a_key_the_first_did_not(tmp_path):
    with pytest.raises(CaptureError, match="step 1 captured v, which the first step did not"):
        with record(tmp_path / "rec", K) as rec:
            capture_all_but(rec, 0, K.V)
            rec.commit()
            capture_all_but(rec, 1)
            rec.commit()
    assert Recording.open(tmp_path / "rec").steps == 1


def test_dimension_named_with_two_sizes(tmp_path):
    class Bad(TensorKey):
        A = "a", ("unit",), "bars"
        B = "b", ("unit",), "bars"

    with pytest.raises(CaptureError, match=r"dimension 'unit' is 3 in b \(3,\) but 2 in a"):
        with record(tmp_path / "rec", Bad) as rec:
            rec.inspector.capture(Bad.A, torch.zeros(2))
            rec.inspector.capture(Bad.B, torch.zeros(3))
            rec.commit()
    assert Recording.open(tmp_path / "rec").steps == 0


def test_leaving_normally_is_complete(tmp_path):
    with record(tmp_path / "rec", K, chunk_steps=4) as rec:
        commit_steps(rec, 0, 10)
    assert rec.steps_completed == 10
    assert_steps(tmp_path / "rec", 10, "complete")


def test_unwritable_path(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    with pytest.raises(PermissionError) as e:
        record(afile / "rec", K)
    assert "is not a writable directory" in one_line(e.value)
    with pytest.raises(FileExistsError) as e:
        record(afile, K)
    assert "not a directory" in one_line(e.value)
    assert afile.read_text() == "not a directory"


def test_existing_recording_needs_force(tmp_path):
    path = tmp_path / "rec"
    with record(path, K) as rec:
        commit_steps(rec, 0, 4)
    with pytest.raises(FileExistsError) as e:
        record(path, K)
    assert "already exists" in one_line(e.value) and "force" in str(e.value)
    assert_steps(path, 4, "complete")
    with record(path, K, force=True) as rec:
        commit_steps(rec, 0, 2)
    assert_steps(path, 2, "complete")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty and is not a recording"):
        record(other, K, force=True)
    assert (other / "notes.txt").read_text() == "mine"


class NormClash(TensorKey):  # names that would clash in the recording's summaries, or in to_xarray's names
    W = "w", ("a",), "bars"
    W_NORM = "w_norm", (), "scalar"


class OwnName(TensorKey):
    N = "nonfinite", (), "scalar"


class Prefixed(TensorKey):
    L = "summary_loss", (), "scalar"


class Stepped(TensorKey):
    X = "x", ("step",), "bars"


@pytest.mark.parametrize("kwargs, words", [
    ({"keys": StepTensorKey.LOSS}, "keys must be a TensorKey enum"),
    ({"chunk_steps": 0}, "chunk_steps must be a positive integer"),
    ({"full_every": 0}, "full_every must be a positive integer"),
    ({"dtype": "int8"}, "dtype must be 'float32' or 'float16'"),
    ({"config": {"lr": object()}}, "config is not JSON-able"),
    ({"only": [StepTensorKey.LOSS]}, "StepTensorKey.LOSS is not a key of K"),
    ({"seed": "42"}, "seed must be an integer"),  # (read back, a string seed made the recording unreadable)
    ({"seed": True}, "seed must be an integer"),
    ({"seed": 1.0}, "seed must be an integer"),
    ({"note": 5}, "note must be a string"),
    ({"full_steps": (0, 5)}, "full_steps must be a list of (start, end) ranges"),
    ({"full_steps": [("a", "b")]}, "full_steps must be a list of (start, end) ranges"),
    ({"keys": NormClash}, "would have the name of the norm of 'w'"),
    ({"keys": OwnName}, "a name the recording keeps"),
    ({"keys": Prefixed}, "a name the recording keeps"),
    ({"keys": Stepped}, "'step' is the recording's first dimension"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, words):
    args = {"keys": K, **kwargs}
    with pytest.raises(ValueError) as e:
        record(tmp_path / "rec", args.pop("keys"), **args)
    assert words in one_line(e.value)
    assert not (tmp_path / "rec").exists()


def test_a_numpy_seed_and_one_key_as_only_are_taken(tmp_path):
    with record(tmp_path / "rec", K, seed=np.int64(3), only="loss") as rec:
        commit_steps(rec, 0, 2)
    r = Recording.open(tmp_path / "rec")
    assert r.meta["seed"] == 3 and r.keys == ["loss"] and r.steps == 2


class Complex(TensorKey):
    W = "w", ("row", "col"), "weights", True
    SPECTRUM = "spectrum", ("row", "col"), "heatmap"

    @classmethod
    def derived(cls) -> dict:
        return {"spectrum": (("w",), lambda b: np.fft.fft2(b["w"]))}


class Misderived(TensorKey):
    W = "w", ("row", "col"), "weights", True
    GRAM = "gram", ("row", "col"), "heatmap"  # (w w^T is [row, row])

    @classmethod
    def derived(cls) -> dict:
        return {"gram": (("w",), lambda b: b["w"] @ b["w"].transpose(0, 2, 1))}


class MisSummarised(TensorKey):
    W = "w", ("row", "col"), "weights", True

    @classmethod
    def summaries(cls) -> dict:
        return {"row_sums": (("row",), "float32", ("w",), lambda b: b["w"].sum(axis=1))}  # (sums over rows: [col])


@pytest.mark.parametrize("keys, words", [
    (Complex, "spectrum: dtype complex64 is not one a recording stores"),
    (Misderived, "dimension 'col' is 32 in gram but 64 in w"),
    (MisSummarised, "summary row_sums: its function gave shape (2, 64) for 2 steps, not (2, 32)"),
])
def test_a_derived_key_or_own_summary_that_does_not_fit_is_one_line_naming_it(tmp_path, keys, words):
    with pytest.raises(ValueError) as e:
        with record(tmp_path / "rec", keys, chunk_steps=2) as rec:
            for step in range(2):
                rec.inspector.capture(keys.W, values(step)[K.W])
                rec.commit()
    assert words in one_line(e.value)


class Chained(TensorKey):
    W = "w", ("row", "col"), "weights", True
    GRAM2 = "gram2", ("row", "other_row"), "heatmap", True, "(w w^T)^2, from gram: listed before it"
    GRAM = "gram", ("row", "other_row"), "heatmap", True

    @classmethod
    def derived(cls) -> dict:
        return {"gram2": (("gram",), lambda b: b["gram"] @ b["gram"]),
                "gram": (("w",), lambda b: b["w"] @ b["w"].transpose(0, 2, 1))}


def test_a_derived_key_may_need_one_listed_after_it(tmp_path):
    with record(tmp_path / "rec", Chained, full_every=2) as rec:
        for step in range(4):
            rec.inspector.capture(Chained.W, values(step)[K.W])
            rec.commit()
    r = Recording.open(tmp_path / "rec")
    assert r.keys == ["w", "gram2", "gram"]
    for step in (0, 2):
        w = values(step)[K.W].numpy()
        got = r.step(step)
        assert np.allclose(got["gram"], w @ w.T, rtol=1e-6, atol=1e-5)  # (the writer's BLAS on one thread)
        assert np.allclose(got["gram2"], got["gram"] @ got["gram"], rtol=1e-6, atol=1e-3)


def test_a_sparse_capture_is_stored_as_its_dense_values(tmp_path):
    with record(tmp_path / "rec", K, only=["w"]) as rec:
        for step in range(3):
            for key, value in values(step).items():
                rec.inspector.capture(key, value.to_sparse() if key is K.W else value)
            rec.commit()
    r = Recording.open(tmp_path / "rec")
    assert all(np.array_equal(r.step(s)["w"], values(s)[K.W].numpy()) for s in range(3))


def test_commit_after_close_is_a_capture_error(tmp_path):
    with record(tmp_path / "rec", K) as rec:
        commit_steps(rec, 0, 2)
    for key, value in values(2).items():
        rec.inspector.capture(key, value)
    with pytest.raises(CaptureError, match="is closed"):
        rec.commit()
    assert Recording.open(tmp_path / "rec").steps == 2


# -- shapes and save policies ----------------------------------------------------------------------------

def test_arrays_grow_and_are_cut_to_the_steps(tmp_path):
    path = tmp_path / "rec"
    with record(path, K, chunk_steps=7) as rec:
        commit_steps(rec, 0, 7)
        rec.sync()
        first = zarr.open_group(str(path), mode="r")["tensors"]["w"].shape[0]
        commit_steps(rec, 7, 150)
        rec.sync()
        grown = zarr.open_group(str(path), mode="r")["tensors"]["w"].shape[0]
    assert 7 <= first < 150 <= grown
    root = zarr.open_group(str(path), mode="r")
    for group in ("tensors", "summary"):
        for name, arr in root[group].arrays():
            assert arr.shape[0] == 150, f"{group}/{name}"
    assert_steps(path, 150, "complete")


def test_full_every_keeps_summaries_of_every_step(tmp_path):
    path = tmp_path / "rec"
    with record(path, K, full_every=5, chunk_steps=3) as rec:
        commit_steps(rec, 0, 12)
    rec = Recording.open(path)
    assert rec.full_capture.tolist() == [s % 5 == 0 for s in range(12)]
    assert rec.summary("loss").tolist() == [values(s)[K.LOSS].item() for s in range(12)]
    w = zarr.open_group(str(path), mode="r")["tensors"]["w"][:]
    labels = zarr.open_group(str(path), mode="r")["tensors"]["labels"][:]
    for s in range(12):
        if s % 5 == 0:
            assert rec.step(s)["w"].tobytes() == values(s)[K.W].numpy().tobytes()
        else:
            assert np.isnan(w[s]).all() and (labels[s] == -1).all()
            with pytest.raises(LookupError):
                rec.step(s)


def test_only_stores_those_keys_and_summarizes_all(tmp_path):
    path = tmp_path / "rec"
    with record(path, K, only=[K.LOSS, "w"]) as rec:
        commit_steps(rec, 0, 3)
    rec = Recording.open(path)
    assert rec.keys == ["loss", "w"] and rec.meta["policy"]["only"] == ["loss", "w"]
    assert sorted(zarr.open_group(str(path), mode="r")["tensors"].array_keys()) == ["loss", "w"]
    norms = [np.linalg.norm(values(s)[K.V].numpy().astype(np.float64)) for s in range(3)]
    np.testing.assert_allclose(rec.summary("v_norm"), norms, rtol=1e-6)


def test_float16_halves_large_floats_only(tmp_path):
    path = tmp_path / "rec"
    with record(path, K, dtype="float16") as rec:
        commit_steps(rec, 0, 3)
    rec = Recording.open(path)
    assert rec.tensors["w"].dtype == np.float16 and rec.tensors["v"].dtype == np.float32
    for s in range(3):
        got = rec.step(s)
        assert got["w"].tobytes() == values(s)[K.W].half().numpy().tobytes()
        assert got["v"].tobytes() == values(s)[K.V].numpy().tobytes()
    exact = [np.linalg.norm(values(s)[K.W].numpy().astype(np.float64)) for s in range(3)]
    np.testing.assert_allclose(rec.summary("w_norm"), exact, rtol=1e-6)  # from the captures, not the halves


def test_config_note_and_seed_are_stored(tmp_path):
    config = {"lr": 0.1, "layers": [784, 128, 10], "name": "mlp"}
    with record(tmp_path / "rec", K, config=config, note="lr 0.1", seed=7) as rec:
        commit_steps(rec, 0, 1)
    meta = Recording.open(tmp_path / "rec").meta
    assert (meta["config"], meta["note"], meta["seed"]) == (config, "lr 0.1", 7)
    info = json.loads(acc("info", "--json", str(tmp_path / "rec")).stdout)
    assert (info["config"], info["note"], info["seed"]) == (config, "lr 0.1", 7)


# -- summaries --------------------------------------------------------------------------------------------

def test_summaries_of_any_recording(tmp_path):
    path = tmp_path / "rec"
    steps = [values(s) for s in range(6)]
    steps[2][K.W][3, 5] = float("nan")
    steps[4][K.V][[1, 9]] = float("inf")
    with record(path, K, chunk_steps=4) as rec:
        for captures in steps:
            for key, value in captures.items():
                rec.inspector.capture(key, value)
            rec.commit()
    rec = Recording.open(path)
    assert set(rec.summaries) == {"loss", "count", "w_norm", "v_norm", "nonfinite", "full_capture"}
    assert rec.summary("loss").tolist() == [c[K.LOSS].item() for c in steps]
    assert rec.summary("count").tolist() == [c[K.COUNT].item() for c in steps]
    assert rec.summary("count").dtype == np.int64
    for key in (K.W, K.V):
        want = [np.linalg.norm(c[key].numpy().astype(np.float64)) for c in steps]
        np.testing.assert_allclose(rec.summary(f"{key.value}_norm"), want, rtol=1e-6)
    assert rec.summary("nonfinite").tolist() == [0, 0, 1, 0, 2, 0]


# -- a SIGKILL -------------------------------------------------------------------------------------------

class Derived(TensorKey):
    """A vocabulary with a derived key: the writer computes `gram` from the captured `w`."""
    W = "w", ("row", "col"), "weights", True
    GRAM = "gram", ("row", "other_row"), "heatmap", True, "w w^T, derived by the writer"

    @classmethod
    def derived(cls) -> dict:
        return {"gram": (("w",), lambda b: b["w"] @ b["w"].transpose(0, 2, 1))}


class BadlyDerived(TensorKey):
    W = "w", ("row", "col"), "weights", True
    GRAM = "gram", ("row", "other_row"), "heatmap", True

    @classmethod
    def derived(cls) -> dict:
        return {"gram": (("w",), lambda b: b["w"][0])}  # (one step's value, not one per step)


def record_derived(path: Path, writer: str, monkeypatch) -> Recording:
    monkeypatch.setenv("ACC_CAPTURE_WRITER", writer)  # (anything but "thread": a process)
    with record(path, Derived, chunk_steps=3) as rec:
        for step in range(7):
            rec.inspector.capture(Derived.W, values(step)[K.W])
            rec.commit()
    return Recording.open(path)


def test_derived_keys_are_computed_by_the_writer(tmp_path, monkeypatch):
    got = record_derived(tmp_path / "rec", "process", monkeypatch)
    # the same bits from a writer thread in this process (its BLAS on one thread, as the process's)
    assert got.tensors["gram"][:].tobytes() == record_derived(tmp_path / "thread", "thread", monkeypatch).tensors["gram"][:].tobytes()
    assert sorted(got.keys) == ["gram", "w"]
    assert "w_norm" in got.summaries and "gram_norm" not in got.summaries  # (derived only at the steps stored)
    for step in range(7):
        w = values(step)[K.W].numpy()
        np.testing.assert_allclose(got.step(step)["gram"], w @ w.T, rtol=1e-5, atol=1e-4)
    # a derived key the loop captures itself is stored as captured
    with record(tmp_path / "own", Derived, chunk_steps=3) as rec:
        rec.inspector.capture(Derived.W, values(0)[K.W])
        rec.inspector.capture(Derived.GRAM, torch.zeros(32, 32))
        rec.commit()
    assert not Recording.open(tmp_path / "own").step(0)["gram"].any()


DERIVED_STEPS: list[int] = []  # how many steps each derivation of Counted's `gram` was given (a writer thread's)


class Counted(TensorKey):
    """Derived's vocabulary, counting the steps its derivation is given."""
    W = "w", ("row", "col"), "weights", True
    GRAM = "gram", ("row", "other_row"), "heatmap", True

    @classmethod
    def derived(cls) -> dict:
        def gram(b):
            DERIVED_STEPS.append(len(b["w"]))
            return b["w"] @ b["w"].transpose(0, 2, 1)
        return {"gram": (("w",), gram)}


class DerivedSummed(TensorKey):
    """Counted's vocabulary with a summary of the derived key: its trace."""
    W = "w", ("row", "col"), "weights", True
    GRAM = "gram", ("row", "other_row"), "heatmap", True

    @classmethod
    def derived(cls) -> dict:
        return Counted.derived()

    @classmethod
    def summaries(cls) -> dict:
        return {"gram_trace": ((), "float32", ("gram",), lambda b: np.trace(b["gram"], axis1=1, axis2=2))}


def test_a_derived_key_is_derived_where_it_is_stored_or_summarised(tmp_path, monkeypatch):
    """Under --full-every 3 the writer derives `gram` at steps 0, 3 and 6 only (the others read as the
    fill value), unless a summary needs it: then at every step; with only=[w], at none (but the first
    write's first step, which gives every key's shape)."""
    monkeypatch.setenv("ACC_CAPTURE_WRITER", "thread")  # (DERIVED_STEPS is this process's)
    for vocabulary, policy, name, steps in ((Counted, {"full_every": 3}, "sparse", [1, 1, 1, 1]),
                                            (DerivedSummed, {"full_every": 3}, "summed", [1, 2, 2, 2, 1]),
                                            (Counted, {"only": [Counted.W]}, "w only", [1])):
        DERIVED_STEPS.clear()  # (chunks of 2 steps: 0 1, 2 3, 4 5 with none kept, 6)
        with record(tmp_path / name, vocabulary, chunk_steps=2, **policy) as rec:
            for step in range(7):
                rec.inspector.capture(vocabulary.W, values(step)[K.W])
                rec.commit()
        assert DERIVED_STEPS == steps, name
        got = Recording.open(tmp_path / name)
        w = np.stack([values(step)[K.W].numpy() for step in range(7)])
        if name == "w only":
            assert got.keys == ["w"]
            continue
        gram = got.tensors["gram"][:]
        for step in range(7):
            if step % 3:
                assert np.isnan(gram[step]).all(), (name, step)
            else:
                np.testing.assert_allclose(gram[step], w[step] @ w[step].T, rtol=1e-5, atol=1e-4)
        if name == "summed":
            np.testing.assert_allclose(got.summary("gram_trace"), (w.astype(np.float64) ** 2).sum(axis=(1, 2)), rtol=1e-5)


class Drifting(TensorKey):
    """A derived key whose shape changes after the first chunk."""
    W = "w", ("row", "col"), "weights", True
    HEAD = "head", ("row", "col"), "weights", True

    @classmethod
    def derived(cls) -> dict:
        return {"head": (("w",), lambda b: b["w"][:, :, : 64 if b["w"][0, 0, 0] > -100 else 60])}


class Misnamed(TensorKey):
    W = "w", ("row", "col"), "weights", True

    @classmethod
    def derived(cls) -> dict:
        return {"gramm": (("w",), lambda b: b["w"])}


def test_a_derivation_of_the_wrong_shape_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError) as e:
        with record(tmp_path / "rec", BadlyDerived, chunk_steps=3) as rec:
            for step in range(4):
                rec.inspector.capture(BadlyDerived.W, values(step)[K.W])
                rec.commit()
    assert "gram" in one_line(e.value)
    assert Recording.open(tmp_path / "rec").status == "interrupted"
    # a derivation whose shape changes after the first chunk: refused before those steps are published
    with pytest.raises(ValueError) as e:
        with record(tmp_path / "drift", Drifting, chunk_steps=3) as rec:
            for step in range(9):
                w = values(step)[K.W]
                if step >= 3:
                    w[0, 0] = -1000.0  # (the derivation then gives 60 columns)
                rec.inspector.capture(Drifting.W, w)
                rec.commit()
    assert "head" in one_line(e.value)
    drift = Recording.open(tmp_path / "drift")
    assert (drift.steps, drift.status) == (3, "interrupted")
    assert drift.step(2)["head"].tobytes() == values(2)[K.W].numpy().tobytes()
    with pytest.raises(ValueError, match="gramm"):  # a derived key the vocabulary does not have: nothing written
        record(tmp_path / "misnamed", Misnamed)
    assert not (tmp_path / "misnamed").exists()


def test_sigkill_leaves_only_whole_steps(tmp_path):
    path = tmp_path / "killed"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_record_api as t; t.record_forever({str(path)!r})"
    log = open(tmp_path / "log", "w")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300  # (not an assertion on time: only so a broken writer cannot hang the suite)
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "the recording never reached 6 steps"
            try:
                done = json.loads((path / "zarr.json").read_text())["attributes"]["acc_capture"]["steps_completed"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                done = 0
            if done >= 6:
                break
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    rec = Recording.open(path)
    assert rec.status == "interrupted" and rec.steps >= 6 and rec.steps % 3 == 0
    assert_steps(path, rec.steps, "interrupted")
    straight = tmp_path / "straight"
    with record(straight, K, chunk_steps=3) as again:
        commit_steps(again, 0, rec.steps)
    a, b = zarr.open_group(str(path), mode="r"), zarr.open_group(str(straight), mode="r")
    for group in ("tensors", "summary"):
        assert sorted(a[group].array_keys()) == sorted(b[group].array_keys())
        for name, arr in b[group].arrays():
            assert a[group][name][: rec.steps].tobytes() == arr[:].tobytes(), f"{group}/{name}"


# -- capture.watch: keys from module names --------------------------------------------------------------

class Hand(TensorKey):
    LOSS = "loss", (), "scalar"
    IMAGES = "images", ("image", "channel", "height", "width"), "images"


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_watch_builds_keys_from_module_names():
    model = cnn()
    keys = capture.watch(model, ["0", "4"]).keys
    table = {e["key"]: e for e in keys.table()}
    assert list(table) == [f"layer{i}_{w}" for i in (0, 4) for w in ("output", "weight", "weight_grad", "bias", "bias_grad")]
    assert table["layer0_weight"]["dims"] == ["layer0_out", "layer0_in", "layer0_kh", "layer0_kw"]
    assert table["layer0_output"]["dims"] == ["batch", "layer0_out", "layer0_h", "layer0_w"]
    assert table["layer4_weight"]["dims"] == table["layer4_weight_grad"]["dims"] == ["layer4_out", "layer4_in"]
    assert table["layer4_output"]["dims"] == ["batch", "layer4_out"] and table["layer4_bias"]["dims"] == ["layer4_out"]
    assert [table[k]["render"] for k in ("layer4_weight", "layer4_output", "layer4_bias", "layer0_weight")] == \
        ["weights", "heatmap", "bars", "images"]
    assert all(e["signed"] for e in table.values())
    assert table["layer4_weight_grad"]["description"] == "gradient of 4.weight"
    assert keys.LAYER4_WEIGHT.value == "layer4_weight"

    # the four forms of filter pick the same modules
    for names in ("[04]", re.compile(r"0|4"), ["0", "4"], lambda n: n in ("0", "4")):
        assert [e["key"] for e in capture.watch(model, names).keys.table()] == list(table)

    # an unknown rank needs an example batch, which runs without training the model
    with pytest.raises(ValueError, match=r"output of 1 \(BatchNorm2d\).*example="):
        capture.watch(model, "1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    keys = capture.watch(model, "*", example=torch.zeros(2, 1, 8, 8), batch_dim="image").keys
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training
    table = {e["key"]: e for e in keys.table()}
    assert table["layer1_output"]["dims"] == ["image", "layer1_output_d1", "layer1_output_d2", "layer1_output_d3"]
    assert table["layer1_weight"]["dims"] == ["layer1_weight_d0"]
    assert table["layer3_output"]["dims"] == ["image", "layer3_output_d1"]

    nested = nn.Module()
    nested.add_module("a_b", nn.Linear(2, 3))
    nested.add_module("a", nn.Module())
    nested.a.add_module("b", nn.Linear(3, 4))
    table = {e["key"]: e for e in capture.watch(nested, "*", outputs=False).keys.table()}  # a_b and a.b
    assert table["a_b_weight"]["dims"] == ["a_b_out", "a_b_in"] and table["a_b_2_weight"]["dims"] == ["a_b_2_out", "a_b_2_in"]
    assert [e["key"] for e in capture.watch(nested, "a_b", params=False, grads=False).keys.table()] == ["a_b_output"]


@pytest.mark.parametrize("names, words", [
    ("conv*", "no module of the model matches 'conv*' (its modules: 0, 1, 2, 3, 4)"),
    (["0", "9"], "the model has no module named '9'"),
    ("2", "cannot tell how many dimensions the output of 2 (ReLU) has"),
])
def test_watch_bad_filters(names, words):
    with pytest.raises(ValueError) as e:
        capture.watch(cnn(), names)
    assert words in one_line(e.value)


def test_merge():
    class Other(TensorKey):
        ACC = "accuracy", (), "scalar"

    merged = capture.merge(Hand, Other, name="Both")
    assert [k.value for k in merged] == ["loss", "images", "accuracy"] and merged.merged_from == (Hand, Other)
    assert merged.table() == Hand.table() + Other.table()
    with pytest.raises(ValueError, match="Hand.LOSS and Hand.LOSS have the same name"):
        capture.merge(Hand, Hand)
    with pytest.raises(ValueError, match="StepTensorKey.LOSS and Hand.LOSS"):
        capture.merge(Hand, StepTensorKey)
    assert capture.merge(StepTensorKey).summaries() == StepTensorKey.summaries()


def test_watch_records_outputs_weights_and_gradients(tmp_path):
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    layers = capture.watch(model, ["0", "4"], extra=Hand, batch_dim="image")
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, 1, 8, 8, generator=g) for _ in range(4)]
    want: list[dict[str, torch.Tensor]] = []
    path = tmp_path / "rec"
    with record(path, layers.keys, chunk_steps=3) as rec, layers.attach(rec):
        for x in batches:
            h = model[0](x)
            loss = model[4](model[3](model[2](model[1](h)))).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            layers.capture()
            rec.inspector.capture(Hand.LOSS, loss)  # a key of `extra` works in the merged vocabulary
            rec.inspector.capture(Hand.IMAGES, x)
            want.append({"loss": loss, "images": x, "layer0_output": h, "layer4_output": None,
                         **{f"layer{i}_{p}": getattr(model[i], p).detach().clone() for i in (0, 4) for p in ("weight", "bias")},
                         **{f"layer{i}_{p}_grad": getattr(model[i], p).grad.clone() for i in (0, 4) for p in ("weight", "bias")}})
            want[-1]["layer4_output"] = rec.inspector.get(layers.keys.LAYER4_OUTPUT)
            rec.commit()
            opt.step()
    assert not model[0]._forward_hooks  # leaving the `with` took the hooks off
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["acc_capture"]["steps_completed"] == 4
    assert set(root["tensors"].array_keys()) == set(want[0])
    for key in want[0]:
        stacked = np.stack([w[key].detach().numpy() for w in want])
        assert root["tensors"][key][:].tobytes() == stacked.tobytes(), key
    assert root["tensors"]["layer0_output"].metadata.dimension_names == ("step", "image", "layer0_out", "layer0_h", "layer0_w")


def test_watch_misuse(tmp_path):
    model = cnn()
    layers = capture.watch(model, "4", extra=Hand)
    with pytest.raises(CaptureError, match="attach the watch to a recording first"):
        layers.capture()
    with record(tmp_path / "other", Hand) as rec:  # a recording without the watched keys
        with pytest.raises(CaptureError, match="'layer4_output' is not a key of Hand"):
            layers.attach(rec)
        rec.inspector.capture(Hand.LOSS, torch.tensor(1.0))
        rec.commit()
    with pytest.raises(CaptureError, match=r"layer4_weight_grad.*4.weight has no gradient.*after backward"):
        with record(tmp_path / "rec", layers.keys) as rec, layers.attach(rec):
            model(torch.zeros(2, 1, 8, 8))
            layers.capture()
    assert Recording.open(tmp_path / "rec").status == "interrupted"
