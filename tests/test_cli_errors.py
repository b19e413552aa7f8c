"""Bad input: one clear line on stderr, a non-zero exit, no traceback, and nothing damaged.

Every case runs the real CLI in a process of its own. Most of a call's time is importing torch,
so the `bad` fixture imports the CLI once in a helper process that forks one child per case
(`fork_cli`); each child runs `capture.cli.main()` with its own argv, working directory and
stdout/stderr files, and exits as the interpreter would (an uncaught exception prints its
traceback and exits 1). The files a case might damage are hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from capture import Recording


# Runs in a fresh interpreter: import the CLI once, then fork a child per call, two at a time.
# stdin: a list of chains, each a list of calls run one after the other; stdout: their exit codes.
_FORK_DRIVER = r"""
import json, os, sys, threading, traceback
from capture.cli import main
import acc.data, acc.recipe, capture.recorder  # (what `run` imports when called: once, not per child)
assert threading.active_count() == 1, f"threads before fork: {threading.enumerate()}"
chains = json.load(sys.stdin)
codes = [[None] * len(chain) for chain in chains]
sys.stdout.flush()

def child(c):
    code = 1
    try:
        os.chdir(c["cwd"])
        for fd, name in ((1, c["stdout"]), (2, c["stderr"])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["acc-capture", *c["args"]]
        try:
            main()
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

pending, running = [(i, 0) for i in range(len(chains))], {}
while pending or running:
    while pending and len(running) < 2:
        i, j = pending.pop(0)
        pid = os.fork()
        if pid == 0:
            child(chains[i][j])
        running[pid] = (i, j)
    pid, status = os.wait()
    i, j = running.pop(pid)
    codes[i][j] = os.waitstatus_to_exitcode(status)
    if j + 1 < len(chains[i]):
        pending.insert(0, (i, j + 1))
print(json.dumps(codes))
"""


def fork_cli_chains(chains: dict[str, list[tuple[list[str], Path]]],
                    scratch: Path) -> dict[str, list[subprocess.CompletedProcess]]:
    """Run named chains of `acc-capture ARGS` calls (in CWD), a process each, a chain's calls in order.

    The calls are the real CLI in processes of their own, forked from one interpreter that has
    imported it (importing torch is most of a call's time); two run at a time.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    jobs = [[{"args": args, "cwd": str(cwd), "stdout": str(scratch / f"{name}.{j}.out"),
              "stderr": str(scratch / f"{name}.{j}.err")} for j, (args, cwd) in enumerate(calls)]
            for name, calls in chains.items()]
    driver = subprocess.run([sys.executable, "-c", _FORK_DRIVER], input=json.dumps(jobs), capture_output=True,
                            text=True, timeout=600, env={**os.environ, "COLUMNS": "120"})
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout)
    def result(job: dict, code: int) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["acc-capture", *job["args"]], code, Path(job["stdout"]).read_text(),
                                           Path(job["stderr"]).read_text())

    return {name: [result(job, code) for job, code in zip(chain, chain_codes)]
            for name, chain, chain_codes in zip(chains, jobs, codes)}


def fork_cli(calls: dict[str, tuple[list[str], Path]], scratch: Path) -> dict[str, subprocess.CompletedProcess]:
    """`fork_cli_chains` for independent calls."""
    done = fork_cli_chains({name: [call] for name, call in calls.items()}, scratch)
    return {name: procs[0] for name, procs in done.items()}


def snapshot(path: Path) -> dict[str, str]:
    """Every file and folder under `path` (or the file itself) with the sha256 of its bytes."""
    assert path.exists(), path
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# name -> (CLI arguments, a word the error line must contain, the paths that must come through unchanged)
Case = tuple[list[str], str, list[Path]]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, control_rec) -> dict:
    base = tmp_path_factory.mktemp("bad")

    existing = base / "existing"
    shutil.copytree(control_rec, existing)
    to_replace = base / "to_replace"
    shutil.copytree(control_rec, to_replace)
    corrupt = base / "corrupt"
    shutil.copytree(control_rec, corrupt)
    (corrupt / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_type": "gr\x00\xff garbage')
    corrupt_array = base / "corrupt_array"
    shutil.copytree(control_rec, corrupt_array)
    (corrupt_array / "tensors" / "loss" / "zarr.json").write_text("not json at all")
    not_rec = base / "not_a_recording"
    (not_rec / "sub").mkdir(parents=True)
    (not_rec / "notes.txt").write_text("my results, keep them\n")
    (not_rec / "sub" / "data.bin").write_bytes(bytes(range(256)) * 10)
    foreign = base / "foreign_zarr"
    group = zarr.open_group(str(foreign), mode="w", zarr_format=3)
    group.attrs["project"] = "someone else's data"
    group.create_array("x", shape=(4,), dtype="float32")[:] = np.arange(4, dtype="float32")
    a_file = base / "somefile"
    a_file.write_text("a regular file\n")
    empty_data = base / "empty_data"
    empty_data.mkdir()

    def bad_meta(name: str, **fields) -> Path:
        """A copy of a good recording whose zarr.json is valid JSON holding nonsense in `fields`."""
        path = base / name
        shutil.copytree(control_rec, path)
        doc = json.loads((path / "zarr.json").read_text())
        doc["attributes"]["acc_capture"].update(fields)
        (path / "zarr.json").write_text(json.dumps(doc))
        return path

    meta_cases = {
        "meta_keys_not_a_list": bad_meta("meta_keys", keys=5),
        "meta_status_not_a_string": bad_meta("meta_status", status=["complete"]),
        "meta_config_not_an_object": bad_meta("meta_config", config="bcl"),
        "meta_steps_negative": bad_meta("meta_steps_negative", steps_completed=-4),
        "meta_steps_beyond_the_arrays": bad_meta("meta_steps_beyond", steps_completed=1000),
    }
    never = base / "never"  # --out of runs refused before they start: never/<case> must not be created
    refused_runs = {  # name -> (arguments of `run`, a word the error line must contain)
        "condition_unknown": (["--condition", "nope"], "nope"),
        "key_unknown": (["--keys", "nope"], "nope"),
        "key_not_in_condition": (["--keys", "rank_score", "--condition", "control"], "rank_score"),
        "steps_zero": (["--steps", "0"], "steps"),
        "steps_negative": (["--steps", "-3"], "steps"),
        "steps_not_a_number": (["--steps", "abc"], "steps"),
        "full_steps_backwards": (["--full-steps", "5-2"], "5-2"),
        "full_steps_garbage": (["--full-steps", "x"], "full-steps"),
        "chunk_steps_zero": (["--chunk-steps", "0"], "chunk-steps"),
        "dtype_unknown": (["--dtype", "float64"], "float64"),
        "data_root_empty": (["--steps", "2", "--data-root", str(empty_data)], "mnist"),
    }

    cases: dict[str, Case] = {
        "info_missing": (["info", str(base / "no_such_dir")], "no_such_dir", []),
        "info_not_a_recording": (["info", str(not_rec)], "not_a_recording", [not_rec]),
        "info_a_file": (["info", str(a_file)], "somefile", [a_file]),
        "info_corrupt_zarr_json": (["info", str(corrupt)], "corrupt", [corrupt]),
        "info_corrupt_array_metadata": (["info", str(corrupt_array)], "corrupt", [corrupt_array]),
        **{name: (["run", *args, "--out", str(never / name)], word, [empty_data] if name == "data_root_empty" else [])
           for name, (args, word) in refused_runs.items()},
        "out_existing_recording": (["run", "--steps", "2", "--out", str(existing)], "--force", [existing]),
        "out_corrupt_recording": (["run", "--steps", "2", "--out", str(corrupt)], "refusing", [corrupt]),
        "out_corrupt_recording_force": (["run", "--steps", "2", "--out", str(corrupt), "--force"], "refusing", [corrupt]),
        "out_not_a_recording": (["run", "--steps", "2", "--out", str(not_rec)], "not_a_recording", [not_rec]),
        "out_not_a_recording_force": (["run", "--steps", "2", "--out", str(not_rec), "--force"], "not_a_recording",
                                      [not_rec]),
        "out_a_file": (["run", "--steps", "2", "--out", str(a_file)], "somefile", [a_file]),
        "out_under_a_file": (["run", "--steps", "2", "--out", str(a_file / "run1")], "somefile", [a_file]),
        "out_under_proc": (["run", "--steps", "2", "--out", "/proc/acc-capture-test/run1"], "/proc", []),
        "out_foreign_zarr_force": (["run", "--steps", "2", "--out", str(foreign), "--force"], "foreign_zarr",
                                   [foreign]),
    }
    cases.update({f"info_{name}": (["info", str(path)], path.name, [path]) for name, path in meta_cases.items()})
    before = {name: [snapshot(p) for p in paths] for name, (_, _, paths) in cases.items()}
    calls = {name: args for name, (args, _, _) in cases.items()}
    calls["replace_with_force"] = ["run", "--steps", "2", "--condition", "control", "--out", str(to_replace), "--force"]
    cwds = {name: base / "cwd" / name for name in calls}  # a refused run must not leave recordings/ behind
    for cwd in cwds.values():
        cwd.mkdir(parents=True)
    procs = fork_cli({name: (args, cwds[name]) for name, args in calls.items()}, base / "outputs")
    return dict(cases=cases, before=before, procs=procs, cwds=cwds, never=never, to_replace=to_replace)


def check_refused(bad: dict, name: str) -> None:
    args, word, paths = bad["cases"][name]
    proc = bad["procs"][name]
    assert proc.returncode != 0, f"acc-capture {' '.join(args)} succeeded:\n{proc.stdout}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr is not one line:\n{proc.stderr}"
    assert word.lower() in lines[0].lower(), f"{word!r} not in the error line: {lines[0]}"
    for path, snap in zip(paths, bad["before"][name]):
        assert snapshot(path) == snap, f"{path} was changed"
    assert not (bad["never"] / name).exists(), "a refused run created its --out"
    assert not any(bad["cwds"][name].iterdir()), "a refused run left files in its working directory"


REFUSED = ["info_missing", "info_not_a_recording", "info_a_file", "info_corrupt_zarr_json",
           "info_corrupt_array_metadata", "condition_unknown", "key_unknown", "key_not_in_condition", "steps_zero",
           "steps_negative", "steps_not_a_number", "full_steps_backwards", "full_steps_garbage", "chunk_steps_zero",
           "data_root_empty", "out_existing_recording", "out_corrupt_recording", "out_corrupt_recording_force", "out_not_a_recording",
           "out_not_a_recording_force", "out_a_file", "out_under_a_file", "out_under_proc"]


@pytest.mark.parametrize("name", REFUSED)
def test_bad_input_is_refused_cleanly(bad, name):
    check_refused(bad, name)


@pytest.mark.parametrize("name", [
    "info_meta_keys_not_a_list",
    "info_meta_status_not_a_string",
    "info_meta_config_not_an_object",
    "info_meta_steps_negative",
    "info_meta_steps_beyond_the_arrays",
])
def test_info_refuses_nonsense_metadata(bad, name):
    """A zarr.json that is valid JSON but holds values of the wrong type or range is corrupt metadata too."""
    check_refused(bad, name)


def test_force_does_not_replace_a_foreign_zarr_store(bad):
    check_refused(bad, "out_foreign_zarr_force")


def test_existing_recording_still_reads_after_refusal(bad):
    path = bad["cases"]["out_existing_recording"][2][0]
    rec = Recording.open(path)
    assert rec.status == "complete" and rec.steps == 12 and rec.condition == "control"


def test_force_replaces_a_recording(bad):
    proc = bad["procs"]["replace_with_force"]
    assert proc.returncode == 0, proc.stderr
    rec = Recording.open(bad["to_replace"])
    assert rec.steps == 2 and rec.status == "complete" and rec.condition == "control"
    root = zarr.open_group(str(bad["to_replace"]), mode="r")
    assert root["tensors/loss"].shape == (2,), "the old recording's arrays were kept"
    assert "--force" in root.attrs["acc_capture"]["command"]
