"""Crashes at named points of the write path (capture/crash.py), and a full disk: whatever a crash
leaves, the recording opens as `interrupted`, every step it counts is bit-equal to an uninterrupted
run, and `resume` finishes it bit-exactly, removing the `.partial` files the crash left.

The reference is the `bcl_rec` fixture: 30 steps of bcl-slow, seed 0, `--chunk-steps 7`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import zarr

from capture import Recording
from capture.crash import EXIT_CODE, VARIABLE
from conftest import acc, assert_same_recording

STEPS, CHUNK = 30, 7
RUN = ["run", "--steps", str(STEPS), "--chunk-steps", str(CHUNK)]


def crashing(point: str, n: int, *args: str) -> subprocess.CompletedProcess:
    """`acc-capture ARGS` in a process of its own, set to crash the n-th time it reaches `point`."""
    return acc(*args, env={**os.environ, VARIABLE: f"{point}:{n}"}, check=False)


def partials(path: Path) -> list[Path]:
    return sorted(path.rglob("*.partial"))


def finish_and_compare(path: Path, reference: Path) -> int:
    """Check what a crash left at `path`, resume it to STEPS steps and compare; returns the steps it counted."""
    rec = Recording.open(path)
    assert rec.status == "interrupted"
    counted = rec.steps
    assert 0 < counted < STEPS
    assert_same_recording(path, reference, steps=counted)
    acc("resume", str(path), "--steps", str(STEPS - counted), "--chunk-steps", str(CHUNK))
    assert partials(path) == []
    assert Recording.open(path).status == "complete"
    assert_same_recording(path, reference)
    assert [p.name for p in (path / "state").glob("*.pt")] == [f"step-{STEPS:08d}.pt"]
    return counted


def test_crash_after_data_before_publishing(bcl_rec, tmp_path):
    path = tmp_path / "rec"
    proc = crashing("data-written", 2, *RUN, "--out", str(path))
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert (path / "state" / f"step-{2 * CHUNK:08d}.pt").exists()  # written, not yet counted
    info = acc("info", str(path))
    assert "interrupted" in info.stdout and f"{CHUNK} completed" in info.stdout
    assert finish_and_compare(path, bcl_rec) == CHUNK


def test_crash_after_publishing_before_pruning(bcl_rec, tmp_path):
    path = tmp_path / "rec"
    proc = crashing("published", 2, *RUN, "--out", str(path))
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert {p.name for p in (path / "state").glob("*.pt")} == {f"step-{CHUNK:08d}.pt", f"step-{2 * CHUNK:08d}.pt"}
    assert finish_and_compare(path, bcl_rec) == 2 * CHUNK


def test_crash_in_the_middle_of_a_file(bcl_rec, tmp_path):
    path = tmp_path / "rec"
    arrays = sum(len(list(zarr.open_group(bcl_rec, mode="r")[g].array_keys())) for g in ("tensors", "summary"))
    # the first chunk puts one file per array and its state (and perhaps the state at step 0): put
    # number arrays + 3 is a data file of the second chunk
    proc = crashing("mid-file", arrays + 3, *RUN, "--out", str(path))
    assert proc.returncode == EXIT_CODE, proc.stderr
    left = partials(path)
    assert len(left) == 1 and left[0].stat().st_size > 0, left
    assert finish_and_compare(path, bcl_rec) == CHUNK


def test_crash_in_the_middle_of_rows_written_in_place(bcl_rec, tmp_path):
    """A small tensor's or a summary's file is written whole once, then only its new rows, in place:
    a crash halfway through those rows leaves the published ones intact."""
    path = tmp_path / "rec"
    proc = crashing("mid-row", 3, *RUN, "--out", str(path))  # (the second chunk's third)
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert finish_and_compare(path, bcl_rec) == CHUNK


def test_crash_during_resume(bcl_rec, tmp_path):
    path = tmp_path / "rec"
    acc("run", "--steps", str(2 * CHUNK), "--chunk-steps", str(CHUNK), "--out", str(path))
    proc = crashing("resume", 1, "resume", str(path), "--steps", "5")
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert Recording.open(path).meta["resumed"][-1]["at_step"] == 2 * CHUNK
    assert finish_and_compare(path, bcl_rec) == 2 * CHUNK


LIVE = """
import sys
from pathlib import Path
from capture.cli import open_live_server
server = open_live_server(None, "bcl-slow", 0, "auto", None, Path(sys.argv[1]))
for _ in range(2):
    print(*server.api.handle("POST", "/inspect/step", b'{"n": %d}'), flush=True)
""" % CHUNK


def test_crash_during_a_live_step(bcl_rec, tmp_path):
    proc = subprocess.run([sys.executable, "-c", LIVE, str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, VARIABLE: "live-step:2"})
    assert proc.returncode == EXIT_CODE, proc.stderr
    assert proc.stdout.startswith("200 "), proc.stdout  # the first step was answered
    # the second step's chunk was handed to the writer: it is counted or not, as the crash fell
    assert finish_and_compare(tmp_path / "run1", bcl_rec) in (CHUNK, 2 * CHUNK)


def test_full_disk_leaves_the_recording_interrupted_and_resumable(bcl_rec, tmp_path):
    """Files may grow to a size that the first chunk's files fit but the second chunk's shards (twice as
    many steps) do not: the write fails with EFBIG, as on a full disk."""
    shard = max(p.stat().st_size for p in (bcl_rec / "tensors").rglob("c.*"))  # 20 steps
    state = max(p.stat().st_size for p in (bcl_rec / "state").glob("*.pt"))
    limit = int(max(state, shard * CHUNK / 20) * 1.15)
    assert limit < shard * 2 * CHUNK / 20 * 0.9, "the second chunk's shards would fit under the limit"

    path = tmp_path / "rec"
    proc = acc(*RUN, "--out", str(path), env=dict(os.environ), fsize=limit, check=False)  # (SIGXFSZ ignored: EFBIG)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "too large" in lines[-1].lower(), proc.stderr
    assert all(line.startswith("recording ") for line in lines[:-1]), proc.stderr  # (the progress bar)
    assert finish_and_compare(path, bcl_rec) == CHUNK
