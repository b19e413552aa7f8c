"""The single writer: while a process holds a recording's writer lock, `info` says `recording` and every
command that would write it (`run --force` onto it, `resume`, `serve`) is refused with one line; of two
`resume`s started together, exactly one proceeds.

The lock is held either by a real `acc-capture run`, or, where a test needs it held for as long as it
likes, by a child process that takes it with `capture.format.lock_writer` and waits.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import free_port
from capture.cli import describe
from capture.recording import Recording
from conftest import acc, acc_start, assert_one_line_error, fork_cli, snapshot

HOLD = ("import sys; from pathlib import Path; from capture.format import lock_writer; "
        "lock_writer(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()")


class Holder:
    """A child process holding the writer lock of `path` until `release()`."""

    def __init__(self, path: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "locked\n", f"the lock was not taken: {line!r} {self.proc.stderr.read()}"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def stale_status(path: Path, status: str) -> None:
    """Set the status in the recording's attributes (as a writer does when it starts)."""
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["acc_capture"]["status"] = status
    (path / "zarr.json").write_text(json.dumps(doc))


def status_line(info_stdout: str) -> str:
    return next(line for line in info_stdout.splitlines() if line.startswith("status"))


@pytest.fixture(scope="module")
def held(control_rec, tmp_path_factory) -> dict:
    """A recording being written (status `recording`, its lock held by another process), and what each
    command made of it meanwhile; then the lock is released."""
    base = tmp_path_factory.mktemp("lock")
    path = shutil.copytree(control_rec, base / "rec")
    stale_status(path, "recording")
    cwd = base / "cwd"
    cwd.mkdir()
    calls = {
        "info": ["info", str(path)],
        "info_json": ["info", "--json", str(path)],
        "run_force": ["run", "--steps", "2", "--condition", "control", "--out", str(path), "--force"],
        "resume": ["resume", str(path), "--steps", "2", "--device", "cpu"],
        "serve": ["serve", str(path), "--port", str(free_port()), "--no-open", "--device", "cpu"],
    }
    holder = Holder(path)
    try:
        before = snapshot(path)
        procs = fork_cli({name: (args, cwd) for name, args in calls.items()})
        after = snapshot(path)
    finally:
        holder.release()
    return dict(path=path, procs=procs, before=before, after=after, cwd=cwd)


def test_info_says_recording_while_the_lock_is_held(held):
    for name in ("info", "info_json"):
        proc = held["procs"][name]
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert status_line(held["procs"]["info"].stdout).split()[1] == "recording"
    assert json.loads(held["procs"]["info_json"].stdout)["status"] == "recording"


@pytest.mark.parametrize("name", ["run_force", "resume", "serve"])
def test_writing_commands_are_refused_while_the_lock_is_held(held, name):
    assert_one_line_error(held["procs"][name], "another process is writing")
    assert held["after"] == held["before"], "the recording was changed while another process held it"
    assert not any(held["cwd"].iterdir())


def test_once_the_writer_is_gone_the_recording_is_interrupted_and_resumes(held):
    proc = acc("info", str(held["path"]))
    assert status_line(proc.stdout).split()[1] == "interrupted"
    acc("resume", str(held["path"]), "--steps", "2", "--device", "cpu")
    rec = Recording.open(held["path"])
    assert rec.status == "complete" and rec.steps == 14


def test_a_real_run_reads_as_recording_while_it_writes(tmp_path):
    path = tmp_path / "rec"
    proc = acc_start("run", "--steps", "100000", "--keys", "loss", "--chunk-steps", "1", "--device", "cpu",
                     "--out", str(path))
    try:
        def steps_written() -> int:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended early ({proc.returncode})")
            try:
                return json.loads((path / "zarr.json").read_text())["attributes"]["acc_capture"]["steps_completed"]
            except (OSError, ValueError, KeyError):
                return 0
        while not steps_written():
            time.sleep(0.05)
        assert describe(Recording.open(path))["status"] == "recording"  # what `info` shows
        assert proc.poll() is None, "the run ended before `info` looked"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert describe(Recording.open(path))["status"] == "interrupted"


def test_of_two_resumes_started_together_exactly_one_proceeds(control_rec, tmp_path):
    """Both are started at the same moment from one interpreter that has imported everything; should one
    have finished before the other began (no contest at all), the pair is started again."""
    for attempt in range(5):
        path = shutil.copytree(control_rec, tmp_path / f"rec{attempt}")
        args = ["resume", str(path), "--steps", "40", "--chunk-steps", "5", "--device", "cpu"]
        procs = fork_cli({"a": (args, tmp_path), "b": (args, tmp_path)})
        codes = sorted(p.returncode for p in procs.values())
        if codes == [0, 0]:  # one after the other: they never met
            assert Recording.open(path).steps == 12 + 80
            continue
        assert codes == [0, 1], {n: (p.returncode, p.stderr) for n, p in procs.items()}
        loser = next(p for p in procs.values() if p.returncode == 1)
        assert_one_line_error(loser, "another process is writing")
        rec = Recording.open(path)
        assert rec.status == "complete" and rec.steps == 12 + 40
        return
    pytest.fail("the two resumes never ran at the same time in 5 tries")
