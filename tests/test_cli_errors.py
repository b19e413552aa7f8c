"""Bad input: one clear line on stderr, a non-zero exit, no traceback, and nothing damaged.

Every case runs the real CLI in a process of its own, forked from one interpreter that imported it
(`fork_cli`, conftest.py). The files a case might damage are hashed before and after.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import zarr

from capture import Recording
from capture.recorder import state_bytes
from conftest import assert_one_line_error, fork_cli, snapshot


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
    def copy_with(name: str, change: Callable[[Path], None]) -> Path:
        """A copy of a good recording, damaged by `change(copy)`."""
        path = base / name
        shutil.copytree(control_rec, path)
        change(path)
        return path

    def state_file(path: Path) -> Path:
        [file] = (path / "state").glob("*.pt")
        return file

    good_state = state_file(control_rec).read_bytes()
    damaged_states = {  # name -> (a recording whose saved training state is damaged, a word of the error line)
        "resume_state_garbage": (copy_with("state_garbage", lambda p: state_file(p).write_bytes(b"garbage\n")),
                                 "cannot be read"),
        "resume_state_truncated": (copy_with("state_truncated", lambda p: state_file(p).write_bytes(good_state[:1000])),
                                   "cannot be read"),
        "resume_state_of_another_run": (copy_with("state_other", lambda p: state_file(p).write_bytes(
            state_bytes({"model": {}}))), "does not fit"),
    }
    no_full_capture = copy_with("no_full_capture", lambda p: shutil.rmtree(p / "summary" / "full_capture"))
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
        "chunk_steps_too_many": (["--chunk-steps", "100000"], "chunk-steps"),  # (a ring of three chunks of every key)
        "full_steps_none": (["--full-steps", ","], "names no step"),
        "full_steps_open_ended": (["--full-steps", "5-"], "5-"),
        "dtype_unknown": (["--dtype", "float64"], "float64"),
        "data_root_empty": (["--steps", "2", "--data-root", str(empty_data)], "mnist"),
        # settings of the run out of their range (acc/conditions.py make_config)
        "lr_negative": (["--lr", "-1"], "lr"),
        "lr_zero": (["--lr", "0"], "lr"),
        "lr_nan": (["--lr", "nan"], "lr"),
        "lr_infinite": (["--lr", "inf"], "lr"),
        "lr_beyond_float32": (["--lr", "1e38"], "lr"),
        "som_lr_nan_temperature_negative": (["--som-lr", "nan", "--temperature", "-5"], "som_lr"),
        "som_lr_negative": (["--som-lr", "-0.5"], "som_lr"),
        "temperature_zero": (["--temperature", "0"], "temperature"),
        "temperature_infinite": (["--temperature", "-inf"], "temperature"),
        "neighborhood_k_all_features": (["--neighborhood-k", "64"], "neighborhood"),
        "neighborhood_k_zero": (["--neighborhood-k", "0"], "neighborhood"),
        "recompute_every_zero": (["--recompute-every", "0"], "recompute"),
        "batch_size_beyond_the_dataset": (["--batch-size", "100000"], "batch"),
        "batch_size_zero": (["--batch-size", "0"], "batch"),
        "bcl_setting_without_bcl": (["--condition", "control", "--som-lr", "0.1"], "control"),
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
    cases.update({name: (["resume", str(path), "--steps", "2"], word, [path])
                  for name, (path, word) in damaged_states.items()})
    cases["info_no_full_capture"] = (["info", str(no_full_capture)], "full_capture", [no_full_capture])
    cases["resume_chunk_steps_too_many"] = (["resume", str(existing), "--chunk-steps", "1001"], "chunk-steps", [existing])
    ports = {"port_zero": "0", "port_negative": "-1", "port_too_large": "65536", "port_huge": "99999999999"}
    for name, port in ports.items():  # neither command writes anything: not the viewer, not a new recording
        cases[f"view_{name}"] = (["view", str(existing), "--port", port, "--no-open"], "port", [existing])
        cases[f"serve_{name}"] = (["serve", str(existing), "--port", port, "--no-open"], "port", [existing])
        cases[f"serve_new_{name}"] = (["serve", "--condition", "control", "--port", port, "--no-open"], "port", [])
    before = {name: [snapshot(p) for p in paths] for name, (_, _, paths) in cases.items()}
    calls = {name: args for name, (args, _, _) in cases.items()}
    calls["replace_with_force"] = ["run", "--steps", "2", "--condition", "control", "--out", str(to_replace), "--force"]
    cwds = {name: base / "cwd" / name for name in calls}  # a refused run must not leave recordings/ behind
    for cwd in cwds.values():
        cwd.mkdir(parents=True)
    procs = fork_cli({name: (args, cwds[name]) for name, args in calls.items()})
    return dict(cases=cases, before=before, procs=procs, cwds=cwds, never=never, to_replace=to_replace)


USAGE_ERRORS = {"steps_not_a_number", "dtype_unknown"}  # refused by the option parser itself: exit code 2


def check_refused(bad: dict, name: str) -> None:
    args, word, paths = bad["cases"][name]
    assert_one_line_error(bad["procs"][name], word, code=2 if name in USAGE_ERRORS else 1)
    for path, snap in zip(paths, bad["before"][name]):
        assert snapshot(path) == snap, f"{path} was changed"
    assert not (bad["never"] / name).exists(), "a refused run created its --out"
    assert not any(bad["cwds"][name].iterdir()), "a refused run left files in its working directory"


REFUSED = ["info_missing", "info_not_a_recording", "info_a_file", "info_corrupt_zarr_json",
           "info_corrupt_array_metadata", "condition_unknown", "key_unknown", "key_not_in_condition", "steps_zero",
           "steps_negative", "steps_not_a_number", "full_steps_backwards", "full_steps_garbage", "full_steps_none",
           "full_steps_open_ended", "chunk_steps_zero", "chunk_steps_too_many", "resume_chunk_steps_too_many",
           "info_no_full_capture",
           "data_root_empty", "out_existing_recording", "out_corrupt_recording", "out_corrupt_recording_force", "out_not_a_recording",
           "out_not_a_recording_force", "out_a_file", "out_under_a_file", "out_under_proc"]
OUT_OF_RANGE = ["lr_negative", "lr_zero", "lr_nan", "lr_infinite", "lr_beyond_float32", "som_lr_nan_temperature_negative", "som_lr_negative",
                "temperature_zero", "temperature_infinite", "neighborhood_k_all_features", "neighborhood_k_zero",
                "recompute_every_zero", "batch_size_beyond_the_dataset", "batch_size_zero", "bcl_setting_without_bcl"]
PORTS = [f"{command}_{name}" for command in ("view", "serve", "serve_new")
         for name in ("port_zero", "port_negative", "port_too_large", "port_huge")]


@pytest.mark.parametrize("name", REFUSED)
def test_bad_input_is_refused_cleanly(bad, name):
    check_refused(bad, name)


@pytest.mark.parametrize("name", ["resume_state_garbage", "resume_state_truncated", "resume_state_of_another_run"])
def test_resume_refuses_a_damaged_training_state_and_leaves_the_recording_as_it_was(bad, name):
    """A state that cannot be read, or that loads but is not this run's, is refused before the
    recording is touched: every file the same bytes, so it still reads complete, with no resume noted."""
    check_refused(bad, name)
    rec = Recording.open(bad["cases"][name][2][0])
    assert rec.status == "complete" and rec.steps == 12 and not rec.meta.get("resumed")


@pytest.mark.parametrize("name", OUT_OF_RANGE)
def test_settings_out_of_range_are_refused_before_anything_is_written(bad, name):
    """A negative, zero, NaN or infinite rate, a batch larger than MNIST, a neighbourhood as large as the
    features: one line, exit 1, and no --out (nor recordings/) created."""
    check_refused(bad, name)


@pytest.mark.parametrize("name", PORTS)
def test_ports_outside_1_to_65535_are_refused(bad, name):
    """`view` writes no viewer into the recording and `serve` starts no new one."""
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


def test_help_shows_each_default_written_in_an_options_help():
    """An option's help that says its default in brackets shows it (rich took `[default: 128]` for
    markup and printed `Images per step .`)."""
    import re

    from typer.testing import CliRunner

    from capture.cli import app

    source = (Path(__file__).resolve().parent.parent / "capture" / "cli.py").read_text()
    written = re.findall(r"(\[default: [^\]]+\])", source)
    assert len(written) >= 10
    shown = ""
    for command in ("run", "resume", "diff"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        shown += " ".join(result.output.split())
    for default in written:
        assert default in shown, default
