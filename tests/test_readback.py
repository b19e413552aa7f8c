"""Reading back what was recorded: `Recording.step` against plain zarr at the edges of files, a float16
recording that resumes, and the non-finite count of a run that really diverges (and the viewer's mark).

The recordings are made once for the module, by the real CLI, two at a time.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import zarr

from browser import copy_recording, open_at, serve_in_thread, wait_step
from capture import format as fmt
from capture.recording import Recording, RecordingError
from conftest import acc, assert_same_recording, fork_cli_chains
from viewer import build

LONG = 66  # steps of the long recording: the small tensors' chunks of 64 steps end at 63, the shards of 20 at 19
DIVERGED_LR = "1e37"  # legitimate (at most MAX_LR) and so large that the loss is NaN from the second step on


@pytest.fixture(scope="module")
def recs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("readback")
    out = {name: base / name for name in ("long", "half_resumed", "half_straight", "diverged")}
    cpu = ["--device", "cpu"]
    chains = {
        "long": [(["run", "--steps", str(LONG), "--chunk-steps", "33", "--out", str(out["long"]), *cpu], base)],
        "half_resumed": [(["run", "--steps", "5", "--dtype", "float16", "--out", str(out["half_resumed"]), *cpu], base),
                         (["resume", str(out["half_resumed"]), "--steps", "6", "--chunk-steps", "4", *cpu], base)],
        "half_straight": [(["run", "--steps", "11", "--dtype", "float16", "--out", str(out["half_straight"]), *cpu], base)],
        "diverged": [(["run", "--steps", "8", "--lr", DIVERGED_LR, "--out", str(out["diverged"]), *cpu], base)],
    }
    done = fork_cli_chains(chains)
    for name, procs in done.items():
        for proc in procs:
            assert proc.returncode == 0, f"{name}: acc-capture {' '.join(proc.args[1:])} failed:\n{proc.stderr}"
    return out


# -- Recording.step against plain zarr ---------------------------------------------------------------

def test_the_long_recording_crosses_files_of_both_layouts(recs):
    rec = Recording.open(recs["long"])
    assert rec.steps == LONG and rec.status == "complete"
    layouts = {k: fmt.file_layout(a) for k, a in rec.tensors.items()}
    sharded = {k for k, f in layouts.items() if f and f.sharded}
    plain = {k for k, f in layouts.items() if f and not f.sharded}
    assert sharded and plain, layouts
    assert {layouts[k].steps for k in sharded} == {fmt.SHARD_STEPS} == {20}
    assert {layouts[k].steps for k in plain} == {fmt.SMALL_CHUNK} == {64}


@pytest.mark.parametrize("step", [0, 19, 20, 63, 64, LONG - 1])
def test_step_is_what_plain_zarr_reads_bit_for_bit(recs, step):
    rec = Recording.open(recs["long"])
    got = rec.step(step)
    root = zarr.open_group(recs["long"], mode="r")
    names = sorted(root["tensors"].array_keys())
    assert sorted(got) == names and len(names) == 27
    for key in names:
        want = root["tensors"][key][step]
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        assert got[key].tobytes() == want.tobytes(), f"{key} at step {step}"
    # and the steps differ from one another: the comparison is not of fill values
    assert not np.array_equal(got["batch_labels"], rec.step((step + 1) % LONG)["batch_labels"])
    assert np.isfinite(got["encoder_weights"]).all()


def test_a_step_beyond_the_recording_is_an_index_error(recs):
    rec = Recording.open(recs["long"])
    with pytest.raises(IndexError):
        rec.step(LONG)


# -- corrupt data ------------------------------------------------------------------------------------

@pytest.fixture
def damaged(recs, tmp_path) -> Path:
    return shutil.copytree(recs["long"], tmp_path / "rec")


def shard_of(path: Path, key: str, step: int) -> Path:
    arr = Recording.open(path).tensors[key]
    return path / fmt.chunk_key(arr, step // fmt.SHARD_STEPS)


def assert_corrupt(path: Path, step: int, file: Path) -> None:
    rec = Recording.open(path)  # the metadata is intact: it opens
    with pytest.raises(RecordingError) as e:
        rec.step(step)
    message = str(e.value)
    assert "\n" not in message and str(file) in message, message


def test_a_truncated_shard_is_a_recording_error_naming_the_file(damaged):
    file = shard_of(damaged, "strength", 25)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])  # the index at its end is lost
    assert_corrupt(damaged, 25, file)
    file.write_bytes(data[:100])  # shorter than its index
    assert_corrupt(damaged, 25, file)
    Recording.open(damaged).step(19)  # the other shards still read


def test_an_index_entry_pointing_outside_the_file_is_a_recording_error(damaged):
    file = shard_of(damaged, "strength", 45)
    data = bytearray(file.read_bytes())
    n = fmt.SHARD_STEPS
    slot = len(data) - 16 * n + 16 * (45 % n)
    offset, nbytes = struct.unpack_from("<QQ", data, slot)
    struct.pack_into("<QQ", data, slot, len(data) + 10, nbytes)  # past the end of the file
    file.write_bytes(bytes(data))
    assert_corrupt(damaged, 45, file)
    struct.pack_into("<QQ", data, slot, offset, len(data))  # runs into the index and beyond
    file.write_bytes(bytes(data))
    assert_corrupt(damaged, 45, file)
    struct.pack_into("<QQ", data, slot, offset + 3, nbytes - 3)  # inside the data, but not a gzip stream
    file.write_bytes(bytes(data))
    assert_corrupt(damaged, 45, file)


def test_a_damaged_blosc_chunk_is_a_recording_error(damaged):
    """A Blosc chunk is followed by its CRC-32C: a flipped bit, or header sizes that lie (numcodecs
    itself would raise a SystemError on some), are errors, by step() and the whole-file path alike."""
    rec = Recording.open(damaged)
    key = next(k for k in rec.keys if (f := fmt.file_layout(rec.tensors[k])) and f.sharded and f.codec == "blosc")
    file = shard_of(damaged, key, 45)
    data = bytearray(file.read_bytes())
    n = fmt.SHARD_STEPS
    offset, nbytes = struct.unpack_from("<QQ", data, len(data) - 16 * n + 16 * (45 % n))
    good = bytes(data)
    for at, value in ((4, 2**31 + 5), (4, 12), (12, nbytes + 1), (nbytes // 2, None)):  # decoded size: huge, too
        data[:] = good  # small; its own size; one bit in the middle
        if value is None:
            data[offset + at] ^= 0x10
        else:
            struct.pack_into("<I", data, offset + at, value)
        file.write_bytes(bytes(data))
        assert_corrupt(damaged, 45, file)
        with pytest.raises(RecordingError, match=str(file)):
            Recording.open(damaged).to_xarray()[key][40:60].values


def test_a_missing_shard_of_a_kept_step_is_a_recording_error(recs, damaged):
    """Where summary/full_capture says a step kept its full tensors, a shard gone missing is damage,
    not the fill value a `--full-every` policy's other steps read as: step() and diff say so in one line."""
    file = shard_of(damaged, "encoder_weights", 25)
    file.unlink()
    assert_corrupt(damaged, 25, file)
    Recording.open(damaged).step(19)  # the other shards still read
    proc = acc("diff", str(damaged), str(recs["long"]), check=False)
    assert proc.returncode == 2 and not proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "missing" in proc.stderr and str(file) in proc.stderr, proc.stderr


def test_a_recording_without_full_capture_is_corrupt(damaged):
    shutil.rmtree(damaged / "summary" / fmt.FULL_CAPTURE)
    with pytest.raises(RecordingError, match=f"corrupt recording .*summary/{fmt.FULL_CAPTURE}"):
        Recording.open(damaged)


def test_a_truncated_plain_chunk_is_a_recording_error_naming_the_file(damaged):
    arr = Recording.open(damaged).tensors["loss"]
    assert not fmt.file_layout(arr).sharded
    file = damaged / fmt.chunk_key(arr, 0)
    file.write_bytes(file.read_bytes()[:-9])
    assert_corrupt(damaged, 3, file)
    with pytest.raises(RecordingError, match=str(file)):  # the dask path reads the file whole
        Recording.open(damaged).to_xarray()["loss"].values


def test_a_truncated_summary_chunk_is_a_recording_error_naming_its_array(damaged):
    arr = Recording.open(damaged).summaries["loss"]
    file = damaged / fmt.chunk_key(arr, 0)
    file.write_bytes(file.read_bytes()[:-9])
    with pytest.raises(RecordingError) as e:
        Recording.open(damaged).summary("loss")
    assert "\n" not in str(e.value) and str(damaged / "summary" / "loss") in str(e.value), e.value


# -- float16 -----------------------------------------------------------------------------------------

def large_floats(path: Path) -> set[str]:
    root = zarr.open_group(path, mode="r")
    return {k for k, a in root["tensors"].arrays() if a.dtype == np.float16}


def test_a_float16_recording_resumes_as_float16(recs):
    rec = Recording.open(recs["half_resumed"])
    assert rec.steps == 11 and rec.status == "complete"
    assert rec.meta["policy"]["large_float"] == "float16"
    halves = large_floats(recs["half_resumed"])
    assert {"batch_images", "encoder_weights", "strength", "weight_cosine_matrix"} <= halves
    assert "loss" not in halves and "batch_labels" not in halves
    assert halves == large_floats(recs["half_straight"])
    for step in (4, 5, 10):  # the last step before the resume, the first after, the last
        assert rec.step(step)["encoder_weights"].dtype == np.float16
    # the same arrays as one float16 run of 11 steps
    assert_same_recording(recs["half_resumed"], recs["half_straight"])


# -- a run that diverges -----------------------------------------------------------------------------

def counted_nonfinite(path: Path) -> np.ndarray:
    """NaN and Inf per step over every captured float tensor (not the derived cosine matrices),
    counted here with plain zarr."""
    root = zarr.open_group(path, mode="r")
    steps = root.attrs["acc_capture"]["steps_completed"]
    counts = np.zeros(steps, dtype=np.int64)
    for name, arr in root["tensors"].arrays():
        if arr.dtype.kind == "f" and "cosine_matrix" not in name:
            counts += (~np.isfinite(arr[:steps])).reshape(steps, -1).sum(axis=1)
    return counts


def test_the_nonfinite_count_of_a_run_that_diverges(recs):
    rec = Recording.open(recs["diverged"])
    assert rec.steps == 8 and rec.status == "complete"
    stored = rec.summary("nonfinite")
    loss = rec.summary("loss")
    assert stored.tolist() == counted_nonfinite(recs["diverged"]).tolist()
    assert stored[0] == 0 and np.isfinite(loss[0]), "the first step, before any update, is finite"
    assert (stored[1:] > 0).all() and not np.isfinite(loss[1:]).any(), (stored, loss)


@pytest.fixture(scope="module")
def diverged_site(recs, tmp_path_factory):
    path = copy_recording(recs["diverged"], tmp_path_factory.mktemp("readback") / "diverged_site")
    build(Recording.open(path))
    served = serve_in_thread(path)
    yield served
    served.stop()


def test_the_viewer_marks_the_steps_that_diverged(page, recs, diverged_site):
    counts = Recording.open(recs["diverged"]).summary("nonfinite")
    open_at(page, diverged_site, 0)
    assert page.locator("html").get_attribute("data-nonfinite") == "0"
    assert "non-finite" not in page.locator("#flags").text_content()
    for step in (1, 7):
        page.keyboard.press("End" if step == 7 else "ArrowRight")
        wait_step(page, step)
        assert page.locator("html").get_attribute("data-nonfinite") == str(counts[step])
        assert f"{counts[step]} non-finite" in page.locator("#flags").text_content()
