"""The recorder end to end: determinism, capture policies, the reader API, info.

Every recording here is made by the real CLI on real MNIST. The module's own recordings are made
once, several at a time, by the `runs` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from capture import Recording, RecordingError
from conftest import fork_cli_chains

B, D = 128, 64
CONDITIONS = ("control", "bcl-slow", "bcl-med", "bcl-fast")


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of a recording (tensors/ and summary/), trusted steps only, read with plain zarr."""
    root = zarr.open_group(str(path), mode="r")
    T = root.attrs["acc_capture"]["steps_completed"]
    out = {}
    for group in ("tensors", "summary"):
        for name, arr in root[group].arrays():
            out[f"{group}/{name}"] = arr[:T]
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], steps: int | None = None,
                       skip: tuple[str, ...] = ()) -> None:
    """Bit-for-bit equality of every array (of the first `steps` steps, if given)."""
    assert set(a) == set(b)
    for name in sorted(a):
        if name in skip:
            continue
        x, y = (a[name], b[name]) if steps is None else (a[name][:steps], b[name][:steps])
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def bcl_arrays(bcl_rec) -> dict[str, np.ndarray]:
    """Every array of the 30-step fixture recording (seed 0, chunk 7): the reference the others match."""
    return read_all(bcl_rec)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bcl_rec, float16_rec) -> dict:
    base = tmp_path_factory.mktemp("recorder")
    cwd = base / "cwd"
    cwd.mkdir()
    p = {name: base / name for name in ("chunk1", "chunk_all", "every10", "full_steps", "keys", "loss100", "nbr52")}
    chains = {
        "loss100": [["run", "--steps", "100", "--keys", "loss", "--chunk-steps", "50", "--out", str(p["loss100"])]],
        "chunk1": [["run", "--steps", "14", "--chunk-steps", "1", "--out", str(p["chunk1"])]],
        "chunk_all": [["run", "--steps", "30", "--chunk-steps", "30", "--out", str(p["chunk_all"])]],
        "every10": [["run", "--steps", "30", "--full-every", "10", "--out", str(p["every10"])]],
        # default --out, in a fresh working directory: recordings/run1 (seed 1), then recordings/run2 (seed 0)
        "cwd": [["run", "--steps", "2", "--seed", "1"], ["run", "--steps", "2"]],
        "full_steps": [["run", "--steps", "10", "--full-steps", "0-3,8", "--out", str(p["full_steps"])]],
        "keys": [["run", "--steps", "10", "--keys", "loss,rank_score", "--out", str(p["keys"])]],
        "nbr52": [["run", "--steps", "52", "--keys", "neighbors,encoder_weights", "--chunk-steps", "26",
                   "--out", str(p["nbr52"])]],
        "info_json": [["info", str(bcl_rec), "--json"]],
        "conditions": [["conditions"]],
    }
    done = fork_cli_chains({name: [(args, cwd) for args in calls] for name, calls in chains.items()})
    for name, procs in done.items():
        for proc in procs:
            assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stderr}"
    p["cwd"] = cwd
    p["float16"] = float16_rec  # (the session's: the viewer's tests show it too)
    p["cwd_stdout"] = [proc.stdout for proc in done["cwd"]]
    p["info_json"], p["conditions"] = done["info_json"][0].stdout, done["conditions"][0].stdout
    return p


# -- determinism ----------------------------------------------------------------------------------


def test_recording_does_not_depend_on_chunk_steps(runs, bcl_arrays):
    """Seed 0 written 7 steps at a time (the fixture), 30 at once, or one by one: every array bit for bit."""
    ref = bcl_arrays
    assert Recording.open(runs["chunk_all"]).status == "complete"
    assert_same_arrays(read_all(runs["chunk_all"]), ref)
    one_by_one = read_all(runs["chunk1"])  # (14 steps: the first two 7-step chunks of the fixture)
    assert one_by_one["summary/loss"].shape == (14,)
    assert_same_arrays(one_by_one, ref, steps=14)


def test_same_seed_same_arrays_whatever_the_length(runs, bcl_arrays):
    """A 2-step run with seed 0 is bit for bit the first 2 steps of the 30-step run."""
    short = read_all(runs["cwd"] / "recordings" / "run2")
    assert_same_arrays(short, bcl_arrays, steps=2)


def test_different_seed_different_arrays(runs, bcl_arrays):
    a, b = read_all(runs["cwd"] / "recordings" / "run1"), bcl_arrays
    assert zarr.open_group(str(runs["cwd"] / "recordings" / "run1"), mode="r").attrs["acc_capture"]["seed"] == 1
    for name in ("tensors/batch_images", "tensors/batch_labels", "tensors/encoder_weights", "tensors/rank_score",
                 "tensors/grad_masked", "summary/loss"):
        assert not np.array_equal(a[name][:2], b[name][:2]), f"{name} is the same with seed 1 and seed 0"


def _train_and_capture(steps: int, threads) -> list[dict[str, np.ndarray]]:
    """bcl-slow, seed 0: every captured key of each step, training on `threads(step)` torch threads."""
    import torch

    from acc.conditions import make_config
    from acc.recipe import InspectorHooks, build_run
    from acc.step_inspector import StepInspector

    run, inspector, before = build_run(make_config("bcl-slow"), seed=0), StepInspector(), torch.get_num_threads()
    hooks, out = InspectorHooks(run, inspector), []
    try:
        for step in range(steps):
            torch.set_num_threads(threads(step))
            run.trainer.train(1, hooks.metrics_fn)
            ((_, captures),) = inspector.drain()
            out.append({k.value: v.numpy().copy() for k, v in captures.items()})
    finally:
        torch.set_num_threads(before)
        hooks.remove()
    return out


def test_training_gives_the_same_bits_on_any_power_of_two_threads():
    """capture.runner trains on 1 thread while the writer works and on 2 while it waits (on 2 cores):
    which steps get which is a matter of timing, so every captured value must be the same either way
    (nn.L1Loss's mean was not: its last bits followed the thread count)."""
    one = _train_and_capture(40, lambda s: 1)
    for name, threads in (("2 threads", lambda s: 2), ("4 threads", lambda s: 4),
                          ("1, 2 and 4 by turns", lambda s: (1, 2, 4)[s // 3 % 3])):
        other = _train_and_capture(40, threads)
        for step, (a, b) in enumerate(zip(one, other)):
            for key in a:
                assert a[key].tobytes() == b[key].tobytes(), f"{name}: {key} differs at step {step}"


def test_a_recording_is_the_run_plain_training_makes(bcl_arrays):
    """Recording changes nothing in training: the fixture's losses and weights are those of the same
    run trained without capture, on every core, bit for bit."""
    from acc.conditions import make_config
    from acc.recipe import build_run

    run = build_run(make_config("bcl-slow"), seed=0)
    losses = []
    for _ in range(30):
        run.trainer.train(1)
        losses.append(run.trainer.loss.item())
    assert np.array(losses, dtype=np.float32).tobytes() == bcl_arrays["summary/loss"].tobytes()
    weights = run.trainer.model.encoder[0].weight.detach().numpy()
    assert weights.tobytes() == bcl_arrays["tensors/encoder_weights_post"][29].tobytes()


def test_default_out_is_the_next_free_run(runs):
    recs = runs["cwd"] / "recordings"
    assert sorted(p.name for p in recs.iterdir()) == ["run1", "run2"]
    for n, stdout in enumerate(runs["cwd_stdout"], start=1):
        assert f"recordings/run{n}" in stdout
        rec = Recording.open(recs / f"run{n}")
        assert rec.steps == 2 and rec.status == "complete" and rec.condition == "bcl-slow"


# -- loss -----------------------------------------------------------------------------------------


def test_loss_starts_near_047_and_falls(runs):
    root = zarr.open_group(str(runs["loss100"]), mode="r")
    assert root.attrs["acc_capture"]["keys"] == ["loss"]
    assert sorted(name for name, _ in root["tensors"].arrays()) == ["loss"]
    loss = root["summary/loss"][:]
    assert loss.shape == (100,)
    np.testing.assert_array_equal(loss, root["tensors/loss"][:])
    assert abs(float(loss[0]) - 0.47) < 0.01, loss[0]
    assert np.isfinite(loss).all()
    first, last = loss[:10].mean(), loss[-10:].mean()
    assert last < 0.6 * first, (first, last)


# -- neighbourhoods ------------------------------------------------------------------------------


def test_neighbors_recomputed_at_call_50(runs):
    """Over 52 steps the neighbours are fixed until step 50, then step 50's top-8 cosine neighbours."""
    root = zarr.open_group(str(runs["nbr52"]), mode="r")
    nbr = root["tensors/neighbors"][:]
    w = root["tensors/encoder_weights"][:].astype(np.float64)
    np.testing.assert_array_equal(nbr[:50], np.broadcast_to(nbr[0], (50, D, 8)))
    np.testing.assert_array_equal(nbr[50], nbr[51])
    assert not np.array_equal(nbr[50], nbr[0]), "the neighbourhoods were not recomputed at step 50"
    for t in (0, 50):
        unit = w[t] / np.linalg.norm(w[t], axis=1, keepdims=True)
        cos = unit @ unit.T
        np.fill_diagonal(cos, -np.inf)
        order = np.argsort(-cos, axis=1)
        for d in range(D):
            if cos[d, order[d, 7]] - cos[d, order[d, 8]] > 1e-6:  # (a tie at the 8th place may go either way)
                assert set(nbr[t, d]) == set(order[d, :8]), f"step {t}, feature {d}"


# -- policies -------------------------------------------------------------------------------------


def _unwritten_reads_as_fill(arr: np.ndarray) -> bool:
    return bool((arr == -1).all()) if arr.dtype.kind == "i" else bool(np.isnan(arr).all())


def test_full_every_10(runs, bcl_rec, bcl_arrays):
    path = runs["every10"]
    root = zarr.open_group(str(path), mode="r")
    meta = root.attrs["acc_capture"]
    assert meta["policy"]["full_every"] == 10
    full = np.arange(30) % 10 == 0
    np.testing.assert_array_equal(root["summary/full_capture"][:], full)
    mine, ref = read_all(path), bcl_arrays
    # summaries exist for every step and do not depend on the policy
    assert_same_arrays({k: v for k, v in mine.items() if k.startswith("summary/")},
                       {k: v for k, v in ref.items() if k.startswith("summary/")}, skip=("summary/full_capture",))
    assert all(np.isfinite(v).all() for k, v in mine.items() if k.startswith("summary/") and v.dtype.kind == "f")
    tensors = [k for k in mine if k.startswith("tensors/")]
    assert len(tensors) == 27
    for name in tensors:
        assert mine[name][full].tobytes() == ref[name][full].tobytes(), name
        for t in np.flatnonzero(~full):
            assert _unwritten_reads_as_fill(mine[name][t]), f"{name} step {t}"
            assert not (path / "tensors" / name.split("/")[1] / "c" / str(t)).exists(), f"{name} step {t} has a chunk"
    rec = Recording.open(path)
    np.testing.assert_array_equal(rec.full_capture, full)
    with pytest.raises(LookupError):
        rec.step(3)
    assert rec.step(20)["rank_score"].tobytes() == ref["tensors/rank_score"][20].tobytes()
    # three of thirty steps: about a tenth of the disk of the full recording
    ratio = tree_bytes(path / "tensors") / tree_bytes(bcl_rec / "tensors")
    assert 0.05 < ratio < 0.2, ratio


def test_full_every_5_fixture(sparse_rec, bcl_rec):
    rec = Recording.open(sparse_rec)
    assert rec.steps == 20 and rec.meta["policy"]["full_every"] == 5
    np.testing.assert_array_equal(rec.full_capture, np.arange(20) % 5 == 0)
    ref = Recording.open(bcl_rec)
    for name in ("loss", "win_rate", "dead_features", "update_norm", "som_delta_norm"):
        assert rec.summary(name).tobytes() == ref.summary(name)[:20].tobytes(), name
    assert np.isnan(rec.tensors["som_delta"][7]).all() and (rec.tensors["neighbors"][7] == -1).all()
    with pytest.raises(LookupError):
        rec.step(7)
    assert rec.step(15)["som_delta"].tobytes() == ref.step(15)["som_delta"].tobytes()


def test_full_steps_ranges(runs, bcl_arrays):
    path = runs["full_steps"]
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["acc_capture"]["policy"]["full_steps"] == [[0, 3], [8, 8]]
    full = np.isin(np.arange(10), [0, 1, 2, 3, 8])
    np.testing.assert_array_equal(root["summary/full_capture"][:], full)
    mine, ref = read_all(path), bcl_arrays
    for name in (k for k in mine if k.startswith("tensors/")):
        assert mine[name][full].tobytes() == ref[name][:10][full].tobytes(), name
        assert all(_unwritten_reads_as_fill(mine[name][t]) for t in np.flatnonzero(~full)), name
    assert np.isfinite(mine["summary/loss"]).all() and mine["summary/win_rate"].shape == (10, D)


def test_keys_policy_stores_only_those_arrays_but_every_summary(runs, bcl_arrays):
    path = runs["keys"]
    root = zarr.open_group(str(path), mode="r")
    assert sorted(root.attrs["acc_capture"]["keys"]) == ["loss", "rank_score"]
    assert sorted(name for name, _ in root["tensors"].arrays()) == ["loss", "rank_score"]
    mine, ref = read_all(path), bcl_arrays
    assert set(k for k in mine if k.startswith("summary/")) == set(k for k in ref if k.startswith("summary/"))
    for name in (k for k in mine if k.startswith("summary/")):
        assert mine[name].shape[0] == 10
        assert mine[name].tobytes() == ref[name][:10].tobytes(), f"{name} differs from the full recording's"
    for name in ("tensors/loss", "tensors/rank_score"):
        assert mine[name].tobytes() == ref[name][:10].tobytes(), name
    rec = Recording.open(path)
    assert sorted(rec.keys) == ["loss", "rank_score"]
    assert set(rec.step(4)) == {"loss", "rank_score"}


# -- crash consistency: tests/test_crash_points.py (crashes at named points, a full disk) and
# tests/test_resume.py (a real SIGKILL) ------------------------------------------------------------


# -- reader API, info, conditions -----------------------------------------------------------------


def test_dtype_float16_rounds_only_the_large_float_tensors(runs, bcl_rec, bcl_arrays):
    """--dtype float16: each large float tensor is the float32 run's values rounded to half precision, bit
    for bit; everything else (small tensors, integers, every summary) is the float32 run's exactly; the
    tensors take about half the disk; the reader and resume keep the type."""
    half = read_all(runs["float16"])
    assert half.keys() == bcl_arrays.keys()
    large = 0
    for name, values in bcl_arrays.items():
        per_step = values[0].nbytes
        if name.startswith("tensors/") and values.dtype == np.float32 and per_step > 4096:
            large += 1
            assert half[name].dtype == np.float16, name
            assert half[name].tobytes() == values.astype(np.float16).tobytes(), name
        else:
            assert half[name].dtype == values.dtype and half[name].tobytes() == values.tobytes(), name
    assert large == 18  # batch_images, six [128,64], eight [64,784] and the three [64,64] cosine matrices
    assert tree_bytes(runs["float16"] / "tensors") < 0.55 * tree_bytes(bcl_rec / "tensors")
    rec = Recording.open(runs["float16"])
    assert rec.step(3)["grad_raw"].dtype == np.float16 and rec.meta["policy"]["large_float"] == "float16"
    assert rec.step(3)["grad_raw"].tobytes() == half["tensors/grad_raw"][3].tobytes()


def test_reader_api(bcl_rec):
    rec = Recording.open(bcl_rec)
    root = zarr.open_group(str(bcl_rec), mode="r")
    assert rec.steps == 30
    assert rec.status == "complete"
    assert rec.condition == "bcl-slow"
    assert rec.meta["note"] == "fixture" and rec.meta == root.attrs["acc_capture"]
    assert list(rec.keys) == list(root.attrs["acc_capture"]["keys"]) and len(rec.keys) == 27
    step = rec.step(17)
    assert set(step) == set(rec.keys)
    rank = step["rank_score"]
    assert rank.shape == (B, D) and rank.dtype == np.float32
    assert rank.tobytes() == root["tensors/rank_score"][17].tobytes()
    assert step["neighbors"].dtype == np.int32 and step["neighbors"].shape == (D, 8)
    loss = rec.summary("loss")
    assert loss.shape == (30,) and loss.dtype == np.float32
    np.testing.assert_array_equal(loss, root["summary/loss"][:])
    assert rec.summary("win_rate").shape == (30, D)
    assert rec.full_capture.all() and rec.full_capture.shape == (30,)
    for bad in (30, 31, -1):
        with pytest.raises(IndexError):
            rec.step(bad)
    with pytest.raises(KeyError):
        rec.summary("no_such_summary")


def _shard(path: Path) -> list[bytes | None]:
    """The gzip chunks of a shard file, parsed by hand as docs/FORMAT.md describes it (None: empty)."""
    data = path.read_bytes()
    index = np.frombuffer(data[-16 * 20:], "<u8").reshape(20, 2)
    out = []
    for offset, nbytes in index.tolist():
        if offset == nbytes == 2**64 - 1:
            out.append(None)
        else:
            assert offset + nbytes <= len(data) - 16 * 20
            out.append(data[offset:offset + nbytes])
    return out


def test_codecs_are_chosen_from_the_first_step_whatever_the_chunking(bcl_rec, sparse_rec):
    """The same run written 7 steps at a time and 20 at a time (and keeping fewer full steps): each
    large array gets the same codec, so the same run gives the same files."""
    def codecs_of(path: Path) -> dict:
        return {p.parent.name: json.loads(p.read_text())["codecs"] for p in (path / "tensors").glob("*/zarr.json")}

    seven, twenty = codecs_of(bcl_rec), codecs_of(sparse_rec)
    assert seven == twenty and len({json.dumps(c) for c in seven.values()}) > 2  # (and not all alike)


def test_large_tensors_are_shards_of_20_steps_one_chunk_a_step(bcl_rec, bcl_arrays):
    """30 steps written 7 at a time: two shard files per large array, and each step's chunk holds
    exactly its float32 bytes under the array's own codec, as its zarr.json names it (so any reader
    of plain gzip or Blosc can take one step out), Blosc's followed by its CRC-32C."""
    import gzip

    import google_crc32c
    from numcodecs import blosc

    def unblosc(chunk: bytes) -> bytes:
        assert google_crc32c.value(chunk[:-4]) == int.from_bytes(chunk[-4:], "little")
        return blosc.decompress(chunk[:-4])

    decode = {"gzip": gzip.decompress, "blosc": unblosc}
    chosen = {}
    for key in ("grad_raw", "batch_images", "rank_score", "som_targets", "in_nbr"):
        folder = bcl_rec / "tensors" / key
        inner = json.loads((folder / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"]
        assert inner[0] == {"name": "bytes", "configuration": {"endian": "little"}}
        chosen[key] = inner[1]["name"]
        assert [c["name"] for c in inner] == (["bytes", "gzip"] if chosen[key] == "gzip" else ["bytes", "blosc", "crc32c"]), inner
        files = sorted(p for p in folder.iterdir() if p.name != "zarr.json")
        assert [p.name.split(".")[1] for p in files] == ["0", "1"], f"{key}: {files}"
        chunks = _shard(files[0]) + _shard(files[1])
        assert chunks[30:] == [None] * 10, "steps 30..39 of the second shard were never written"
        for step in range(30):
            assert decode[chosen[key]](chunks[step]) == bcl_arrays[f"tensors/{key}"][step].astype("<f4").tobytes(), (key, step)
    assert chosen["batch_images"] == "gzip" and chosen["som_targets"] == "blosc", chosen  # (MNIST's zeros; smooth floats)


def test_each_large_tensor_gets_the_codec_that_pays():
    """Real MNIST images (many zeros, few levels) take gzip, smooth floats Blosc with its shuffle,
    random bits nothing (no codec shrinks them); each round-trips exactly, through zarr too."""
    from acc.data import load_mnist
    from capture import codecs

    rng = np.random.default_rng(0)
    images = (load_mnist(None)[0][:512].numpy().reshape(4, 128, 1, 28, 28) / np.float32(255)).astype(np.float32)
    smooth = (np.cumsum(rng.normal(size=(4, 64, 784)), axis=-1) * 1e-3).astype(np.float32)
    noise = rng.integers(0, 2**32, size=(4, 64, 784), dtype=np.uint32).view(np.float32)
    assert [codecs.choose(a[0]) for a in (images, smooth, noise)] == ["gzip", "blosc", "bytes"]
    for codec in codecs.CODECS:
        for values in (images[0], smooth[0], noise[0], smooth[0].astype(np.float16)):
            for crc in (False, True):
                stored = codecs.encode(codec, values, crc)
                assert codecs.decode(codec, stored, values.nbytes, crc) == values.astype(values.dtype.newbyteorder("<")).tobytes()
            flipped = bytearray(stored)
            flipped[len(flipped) // 2] ^= 0x10
            with pytest.raises(ValueError, match="crc32c"):
                codecs.decode(codec, bytes(flipped), values.nbytes, crc=True)
    good = codecs.encode("blosc", smooth[0])
    huge = good[:4] + (2**31 + 5).to_bytes(4, "little") + good[8:]  # (numcodecs itself raises SystemError on it)
    for codec, data in [("blosc", good[:100]), ("blosc", huge), ("blosc", good[:8]), ("gzip", codecs.encode("gzip", smooth[0])[:100]),
                        ("bytes", smooth[0].tobytes()[:100])]:
        with pytest.raises(ValueError, match=codec):
            codecs.decode(codec, data, smooth[0].nbytes)


def test_chunks_zarr_writes_with_each_codec_read_back_exactly(tmp_path):
    """Arrays zarr-python itself writes with the codecs the recorder chooses from read back exactly
    through this tool's fast reader (`format.file_layout`, `Recording`'s `_read_row`)."""
    from zarr.codecs import BytesCodec, ShardingCodec

    from capture import codecs
    from capture import format as fmt
    from capture.recording import _read_row

    rng = np.random.default_rng(1)
    values = (np.cumsum(rng.normal(size=(6, 64, 784)), axis=-1) * 1e-3).astype(np.float32)
    for codec in codecs.CODECS:
        inner = [BytesCodec(endian="little"), *codecs.zarr_codecs(codec, 4)]
        arr = zarr.open_group(str(tmp_path / codec)).create_array("x", shape=(8, 64, 784), chunks=(4, 64, 784), dtype="float32",
                                compressors=None, fill_value=np.nan,
                                serializer=ShardingCodec(chunk_shape=(1, 64, 784), codecs=inner, index_codecs=[BytesCodec()]))
        arr[:6] = values
        files = fmt.file_layout(arr)
        assert files == fmt.Files(4, True, codec, codec != "gzip")  # (gzip has a CRC of its own)
        for n in range(6):
            assert _read_row(tmp_path / codec, arr, files, n).tobytes() == values[n].tobytes(), (codec, n)
        assert np.isnan(_read_row(tmp_path / codec, arr, files, 7)).all()


def test_sparse_shards_leave_unkept_steps_empty(sparse_rec):
    chunks = _shard(sparse_rec / "tensors" / "grad_raw" / "c.0.0.0")
    assert [c is not None for c in chunks] == [s % 5 == 0 for s in range(20)]


def test_reader_refuses_what_is_not_a_recording(tmp_path):
    with pytest.raises(RecordingError):
        Recording.open(tmp_path / "missing")
    with pytest.raises(RecordingError):
        Recording.open(tmp_path)


def test_info_json(runs, bcl_rec):
    d = json.loads(runs["info_json"])
    assert d["steps_completed"] == 30
    assert d["condition"] == "bcl-slow"
    assert d["status"] == "complete"
    assert d["note"] == "fixture" and d["seed"] == 0
    assert len(d["keys"]) == 27
    assert d["keys"]["rank_score"] == {"shape": [B, D], "dtype": "float32", "dims": ["image", "feature"],
                                       "render": "heatmap", "description": ""}
    assert d["format"] == 2 and d["recipe"] == "bcl" and d["vocabulary"] == "StepTensorKey"
    assert d["keys"]["encoder_weights"]["shape"] == [D, 784]
    assert d["keys"]["batch_images"]["shape"] == [B, 1, 28, 28]
    assert d["keys"]["loss"]["shape"] == []
    assert d["keys"]["neighbors"] == {"shape": [D, 8], "dtype": "int32", "dims": ["feature", "neighbor"],
                                      "render": "neighbors", "description": ""}
    assert d["keys"]["grad_cosine_matrix"]["dims"] == ["feature", "other_feature"]
    assert 0 < d["size_bytes"] <= tree_bytes(bcl_rec)


def test_conditions_lists_the_four(runs):
    text = runs["conditions"]
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    for name, som_lr in zip(CONDITIONS, ("-", "0.001", "0.005", "0.01")):
        assert name in rows, f"{name} missing:\n{text}"
        assert rows[name][1] == som_lr, rows[name]
