"""A recording written in format 1 (before the key table) still opens, `info`s, views and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from acc.step_inspector import StepTensorKey
from capture import Recording
from conftest import acc

FIXTURE = Path(__file__).parent / "fixtures" / "v1_bcl"
KEYS = ["batch_labels", "loss", "encoder_weights", "win_rate", "neighbors"]  # in StepTensorKey order


@pytest.fixture
def v1(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "v1"))


def test_opens_with_bcl_key_table(v1):
    rec = Recording.open(v1)
    assert rec.meta["format"] == 1 and rec.steps == 6 and rec.status == "complete"
    assert rec.key_table == StepTensorKey.table() and rec.recipe == "bcl"
    assert rec.keys == KEYS
    step = rec.step(5)
    root = zarr.open_group(v1, mode="r")
    for key in KEYS:
        assert step[key].tobytes() == np.asarray(root["tensors"][key][5]).tobytes(), key


def test_info_lists_its_keys(v1):
    d = json.loads(acc("info", str(v1), "--json").stdout)
    assert d["format"] == 1 and d["condition"] == "bcl-slow" and d["steps_completed"] == 6
    assert list(d["keys"]) == KEYS
    assert d["keys"]["encoder_weights"]["dims"] == ["feature", "pixel"]


def test_view_builds_the_bcl_page(v1):
    acc("view", str(v1), "--build-only")
    html = (v1 / "index.html").read_text()
    assert 'data-section="trace-strength"' in html and 'data-section="cosine"' in html


def test_resume_appends_and_keeps_format_1(v1, tmp_path):
    straight = tmp_path / "straight"
    acc("run", "--steps", "9", "--chunk-steps", "3", "--keys", ",".join(KEYS), "--out", str(straight))
    acc("resume", str(v1), "--steps", "3")
    old, new = zarr.open_group(v1, mode="r"), zarr.open_group(straight, mode="r")
    meta = old.attrs["acc_capture"]
    assert meta["format"] == 1 and meta["steps_completed"] == 9 and meta["status"] == "complete"
    for key in KEYS:  # the same seed and settings: the same tensors, bit for bit
        a, b = np.asarray(old["tensors"][key][:9]), np.asarray(new["tensors"][key][:9])
        if key == "loss":  # (the fixture's 6 losses are nn.L1Loss's mean; acc.trainer.l1_loss sums image by image)
            np.testing.assert_allclose(a[:6], b[:6], rtol=1e-6, atol=0)
            a, b = a[6:], b[6:]
        assert a.tobytes() == b.tobytes(), key
    for name in old["summary"].array_keys():  # the summaries it has are continued
        a, b = np.asarray(old["summary"][name][:9]), np.asarray(new["summary"][name][:9])
        if "cosine" in name or name == "loss":  # (the fixture's 6 steps had their cosine matrices made in the
            np.testing.assert_allclose(a[:6], b[:6], rtol=0, atol=1e-6)  # loop by torch, the recorder derives
            a, b = a[6:], b[6:]  # them now; and the loss, above)
        assert a.tobytes() == b.tobytes(), name
