"""`acc-capture diff` and `capture.diff`: where two real recordings part, against the runs' known truths."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import torch

import capture
from capture import Recording, TensorKey, record
from capture.diff import DiffError
from conftest import acc

# bcl_rec (conftest): bcl-slow, seed 0, 30 steps written 7 at a time


@pytest.fixture(scope="module")
def twin(recordings) -> Path:
    """bcl_rec's settings and seed, written 13 steps at a time."""
    path = recordings / "diff-twin"
    acc("run", "--steps", "30", "--chunk-steps", "13", "--out", str(path))
    return path


@pytest.fixture(scope="module")
def resumed(recordings) -> tuple[Path, Path]:
    """bcl_rec again, recorded 10 steps then resumed for 20; and a copy of it at 10 steps."""
    path, first10 = recordings / "diff-resumed", recordings / "diff-first10"
    acc("run", "--steps", "10", "--out", str(path))
    shutil.copytree(path, first10)
    acc("resume", str(path), "--steps", "20")
    return path, first10


@pytest.fixture(scope="module")
def med(recordings) -> Path:
    path = recordings / "diff-med"
    acc("run", "--steps", "3", "--condition", "bcl-med", "--out", str(path))
    return path


@pytest.fixture(scope="module")
def seed1(recordings) -> Path:
    path = recordings / "diff-seed1"
    acc("run", "--steps", "3", "--seed", "1", "--out", str(path))
    return path


def test_same_seed_different_chunk_steps_identical(bcl_rec, twin):
    proc = acc("diff", str(bcl_rec), str(twin), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("identical") and "first difference: none" in proc.stdout
    r = capture.diff(bcl_rec, twin)
    assert r.identical and r.first_step is None and r.first_key is None and r.compared == (0, 29)
    assert all(d.first_step is None and d.steps_compared == 30 and d.max_abs_diff == (None if d.named else 0)
               for d in r.keys.values())  # (labels and indices are equal or not: no max |A - B|)
    assert list(r.keys) == Recording.open(bcl_rec).keys and r.summaries and not r.settings


def test_identical_when_every_file_is_decoded(bcl_rec, twin, monkeypatch):
    """Byte-equal files are skipped unread; with no file equal to another, every value is compared."""
    module = importlib.import_module("capture.diff")  # the module (capture.diff is the function)
    monkeypatch.setattr(module._Rows, "same_file", lambda self, other, index: False)
    r = capture.diff(bcl_rec, twin, steps=(0, 12))
    assert r.identical and all(d.steps_compared == 13 for d in r.keys.values())


def test_resumed_twin_identical(bcl_rec, resumed):
    path, first10 = resumed
    assert capture.diff(bcl_rec, path).identical
    shorter = capture.diff(bcl_rec, first10)  # the common steps agree, but one run is longer
    assert not shorter.identical and shorter.lengths_differ and shorter.compared == (0, 9)
    assert shorter.first_key is None and all(d.steps_compared == 10 for d in shorter.keys.values())
    assert capture.diff(bcl_rec, first10, steps=(0, 9)).identical
    assert not capture.diff(bcl_rec, first10, steps=(5, 20)).identical


def test_packed_recording(bcl_rec, twin, tmp_path):
    from capture.pack import pack

    pack(str(twin), tmp_path / "twin.zip")
    assert capture.diff(bcl_rec, tmp_path / "twin.zip").identical


def test_som_lr_first_parts_runs_at_som_delta(bcl_rec, med):
    r = capture.diff(bcl_rec, med)
    assert not r.identical and r.first_step == 0 and r.first_key == "som_delta"
    assert {k for k in r.settings if k.startswith("config.")} == {"config.bcl.som_lr"}
    assert r.settings["config.bcl.som_lr"] == (0.001, 0.005) and r.settings["condition"] == ("bcl-slow", "bcl-med")
    keys = list(r.keys)
    before = keys[:keys.index("som_delta")]
    assert before and all(r.keys[k].first_step != 0 for k in before)  # everything captured before it is equal
    som = r.keys["som_delta"]
    a, b = Recording.open(bcl_rec).step(0)["som_delta"], Recording.open(med).step(0)["som_delta"]
    assert som.elements == int((a != b).sum()) and som.step_max_abs_diff == pytest.approx(float(np.abs(a - b).max()))
    assert r.summaries["som_delta_norm"].first_step == 0 and r.summaries["loss"].first_step == 1


def test_text_report_order_and_exit_1(bcl_rec, med):
    proc = acc("diff", str(bcl_rec), str(med), check=False)
    assert proc.returncode == 1 and not proc.stderr.strip()
    text = proc.stdout
    marks = ["config.bcl.som_lr", "lengths differ: A has 30 steps, B 3", "first difference: step 0, key som_delta:",
             "keys (first differing step):", "summaries (first differing step):", "the recordings differ"]
    assert all(m in text for m in marks) and [text.index(m) for m in marks] == sorted(text.index(m) for m in marks)
    lines = dict(line.split(None, 1) for line in text.splitlines() if line.startswith("  ") and line.split())
    assert lines["batch_images"] == "identical" and lines["som_delta"].startswith("step 0")


def test_seed_first_parts_runs_at_batch_images(bcl_rec, seed1):
    r = capture.diff(bcl_rec, seed1, steps=(0, 2))
    assert r.first_step == 0 and r.first_key == "batch_images" and list(r.settings) == ["seed"]
    assert r.keys["batch_images"].elements > 0 and r.keys["batch_images"].step_max_abs_diff <= 1


def test_labels_and_indices_are_equal_or_not_whatever_atol(bcl_rec, seed1):
    """Class labels and neighbour indices name things: within --atol of each other means nothing, so
    they are compared exactly and reported by count, with no max |A - B|."""
    r = capture.diff(bcl_rec, seed1, steps=(0, 2), atol=100)  # every pixel is within 100 of the other's
    assert r.keys["batch_images"].first_step is None
    labels = r.keys["batch_labels"]
    a, b = (Recording.open(p).step(0)["batch_labels"] for p in (bcl_rec, seed1))
    assert (r.first_step, r.first_key) == (0, "batch_labels") and labels.named and not r.keys["loss"].named
    assert labels.elements == int((a != b).sum()) > 0 and labels.step_max_abs_diff is None
    assert r.keys["neighbors"].named and r.keys["neighbors"].first_step == 0
    proc = acc("diff", str(bcl_rec), str(seed1), "--steps", "0-2", "--atol", "100", "--all", check=False)
    assert proc.returncode == 1
    assert f"first difference: step 0, key batch_labels: {labels.elements} elements differ\n" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("batch_labels"))
    assert line.split(None, 1)[1] == f"step 0  ({labels.elements} elements differ)  3 of 3 steps differ", line
    d = json.loads(acc("diff", str(bcl_rec), str(seed1), "--steps", "0-2", "--json", check=False).stdout)
    assert d["keys"]["batch_labels"]["named"] is True and d["keys"]["batch_labels"]["max_abs_diff"] is None


def test_json(bcl_rec, med):
    proc = acc("diff", str(bcl_rec), str(med), "--json", "--all", check=False)
    assert proc.returncode == 1
    d = json.loads(proc.stdout)
    assert d["identical"] is False and d["first_step"] == 0 and d["first_key"] == "som_delta"
    assert d["config"] == {"bcl.som_lr": {"a": 0.001, "b": 0.005}} and d["seed"] is None
    assert d["condition"] == {"a": "bcl-slow", "b": "bcl-med"}
    assert d["keys"]["batch_images"] == {**d["keys"]["batch_images"], "first_step": None, "max_abs_diff": 0.0}
    enc = d["keys"]["encoder_weights"]  # --all: read over the whole range, step 0 equal, 1 and 2 not
    assert enc["first_step"] == 1 and enc["steps_compared"] == 3 and enc["steps_differing"] == 2
    assert d["summaries"]["loss"]["first_step"] == 1 and d["steps"]["lengths_differ"] is True


@pytest.fixture
def nudged(bcl_rec, tmp_path) -> tuple[Path, Path]:
    """Two copies of bcl_rec's first 10 steps (a recording cut short: steps_completed lowered)."""
    copies = []
    for name in ("a", "b"):
        path = Path(shutil.copytree(bcl_rec, tmp_path / name))
        root = zarr.open_group(path, mode="r+")
        meta = dict(root.attrs["acc_capture"])
        root.attrs["acc_capture"] = {**meta, "steps_completed": 10}
        copies.append(path)
    return copies[0], copies[1]


def _set(path: Path, key: str, where: tuple, value) -> None:
    zarr.open_array(path / "tensors" / key, mode="r+")[where] = value


def test_atol(nudged):
    a, b = nudged
    w = np.asarray(zarr.open_array(a / "tensors" / "encoder_weights", mode="r")[4, 3, 5])
    _set(b, "encoder_weights", (4, 3, 5), w + np.float32(2e-6))
    r = capture.diff(a, b)
    assert not r.identical and r.first_step == 4 and r.first_key == "encoder_weights"
    assert r.keys["encoder_weights"].elements == 1
    assert r.keys["encoder_weights"].step_max_abs_diff == pytest.approx(2e-6, rel=0.1)
    proc = acc("diff", str(a), str(b), "--atol", "1e-5", "--json", check=False)
    assert proc.returncode == 0
    d = json.loads(proc.stdout)
    assert d["identical"] is True and d["atol"] == 1e-5 and 0 < d["keys"]["encoder_weights"]["max_abs_diff"] < 1e-5
    assert not capture.diff(a, b, atol=1e-7).identical


def test_nan_equals_nan_in_place(nudged):
    a, b = nudged
    quiet, payload = np.float32("nan"), np.array([0x7FC00001], np.uint32).view(np.float32)[0]  # two NaNs, other bits
    _set(a, "som_delta", (2, 0, 0), quiet)
    _set(b, "som_delta", (2, 0, 0), payload)
    assert capture.diff(a, b).identical and capture.diff(a, b, atol=1e-3).identical
    _set(b, "som_delta", (3, 1, 1), quiet)  # a NaN against a number differs
    for atol in (0.0, 1.0):
        r = capture.diff(a, b, atol=atol)
        assert r.first_step == 3 and r.first_key == "som_delta" and r.keys["som_delta"].elements == 1
        assert r.to_dict()["keys"]["som_delta"]["step_max_abs_diff"] is None


def test_summary_only_steps(bcl_rec, sparse_rec):
    """sparse_rec kept full tensors every 5th step: tensors compare there, summaries at every step."""
    r = capture.diff(bcl_rec, sparse_rec, steps=(0, 19))
    assert r.first_key is None and all(d.steps_compared == 4 for d in r.keys.values())
    assert r.summaries["full_capture"].first_step == 1 and r.summaries["loss"].first_step is None
    assert "policy.full_every" in r.settings and not r.identical


class Keys(TensorKey):
    LOSS = "loss", (), "scalar"
    HIDDEN = "hidden", ("image", "unit"), "heatmap", True


class Other(TensorKey):
    ERROR = "error", (), "scalar"


def _loop(path: Path, flip_at: int | None = None, keys: type[TensorKey] = Keys) -> Path:
    """8 steps of a toy loop recorded with `record()`; `flip_at`: flip the sign of one hidden value
    at that step (the loss, a mean of absolute values, stays the same)."""
    g = torch.Generator().manual_seed(0)
    with record(path, keys, seed=0, chunk_steps=3) as rec:
        for step in range(8):
            h = torch.randn(4, 3, generator=g)
            if step == flip_at:
                h[1, 2] = -h[1, 2]
            for key in keys:
                rec.inspector.capture(key, h if key.value == "hidden" else h.abs().mean())
            rec.commit()
    return path


def test_record_loops(tmp_path):
    a, same, flipped = _loop(tmp_path / "a"), _loop(tmp_path / "same"), _loop(tmp_path / "flipped", flip_at=5)
    assert capture.diff(a, same).identical
    r = capture.diff(a, flipped)
    assert r.first_step == 5 and r.first_key == "hidden" and list(r.keys) == ["loss", "hidden"]
    assert r.keys["loss"].first_step is None and r.keys["hidden"].elements == 1
    other = _loop(tmp_path / "other", keys=Other)
    with pytest.raises(DiffError, match="no tensor key in common"):
        capture.diff(a, other)
    proc = acc("diff", str(a), str(other), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no tensor key in common")


def test_bad_steps(bcl_rec):
    with pytest.raises(DiffError, match="beyond both recordings"):
        capture.diff(bcl_rec, bcl_rec, steps=(40, 50))
    with pytest.raises(DiffError):
        capture.diff(bcl_rec, bcl_rec, steps=(5, 2))


@pytest.mark.parametrize("case", ["missing", "not a recording", "steps backwards"])
def test_bad_input_exits_2(case, bcl_rec, tmp_path):
    args = {
        "missing": [str(tmp_path / "nothing"), str(bcl_rec)],
        "not a recording": [str(bcl_rec), str(tmp_path)],
        "steps backwards": [str(bcl_rec), str(bcl_rec), "--steps", "5-2"],
    }[case]
    proc = acc("diff", *args, check=False)
    assert proc.returncode == 2 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
