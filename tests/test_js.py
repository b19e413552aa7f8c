"""The viewer's JS unit tests (tests/js/*.test.mjs), run with node's own test runner.

Some of them read sharded arrays written here by zarr-python itself (every index layout the
viewer reads; gzip, blosc, blosc then crc32c, or crc32c alone after the inner chunks' bytes), with
the metadata the page builder makes of them, and
with the built shard index the page builder writes for them (covering their first BUILT_STEPS
steps); and plain (unsharded) blosc arrays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec

from capture.store import open_store
from conftest import _missing
from viewer.build import _chunk_codecs, array_meta, shard_index

JS_TESTS = Path(__file__).parent / "js"
BUILT_STEPS = 25  # the fixture's built shard index covers these: the steps after are read from the shards' indexes


def blosc(values: np.ndarray) -> BloscCodec:
    """The blosc codec as the recorder writes it (numcodecs.Blosc("lz4", 5, Blosc.SHUFFLE))."""
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=values.dtype.itemsize)


def sharded(group, name: str, values: np.ndarray, shard: int, inner: int, index_codecs, location: str, fill,
            after_bytes=None):
    """A sharded array of `values`; its inner chunks' codecs: `bytes`, then `after_bytes` (default: gzip)."""
    per = values.shape[1:]
    arr = group.create_array(
        name, shape=values.shape, chunks=(shard, *per), dtype=values.dtype, compressors=None, fill_value=fill,
        serializer=ShardingCodec(chunk_shape=(inner, *per),
                                 codecs=[BytesCodec(endian="little"), *(after_bytes or [GzipCodec(level=1)])],
                                 index_codecs=index_codecs, index_location=location),
        dimension_names=["step", *[f"d{i}" for i in range(len(per))]], chunk_key_encoding={"name": "default", "separator": "."})
    arr[:] = values
    return arr


def compressible(rng, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Steps that blosc compresses (smooth, then partly zero) and steps it cannot (random)."""
    steps, n = shape[0], int(np.prod(shape[1:]))
    t = np.arange(n) / 37.0
    out = np.stack([np.sin(t + s / 5) * (s + 1) for s in range(steps)])
    out[steps // 3:2 * steps // 3] = rng.standard_normal((2 * steps // 3 - steps // 3, n)) * 100
    out[2 * steps // 3:, : n // 2] = 0
    return out.reshape(shape).astype(dtype)


def step_lists(arr) -> list[list]:
    """Each step's values as JSON takes them (NaN as null)."""
    values = arr[:].reshape(arr.shape[0], -1)
    return [[None if np.isnan(v) else float(v) for v in row] if values.dtype.kind == "f" else row.tolist() for row in values]


def blosc_frames(root: Path, name: str) -> list[tuple[int, int]]:
    """(nbytes, cbytes) of every chunk file of a plain blosc array, from each frame's header."""
    frames = []
    for f in sorted((root / name / "c").rglob("*")):
        if f.is_file():
            head = f.read_bytes()[:16]
            frames.append((int.from_bytes(head[4:8], "little"), int.from_bytes(head[12:16], "little")))
    return frames


def write_fixture(root: Path) -> None:
    """Sharded arrays of every index layout, gzip, blosc, blosc then crc32c or crc32c alone, with empty
    inner chunks and a shard never written; a plain blosc array with a chunk never written."""
    rng = np.random.default_rng(0)
    group = zarr.open_group(root, mode="w")
    floats = rng.standard_normal((45, 3, 5)).astype(np.float32)
    floats[7] = np.nan   # the fill value: an empty inner chunk
    floats[40:] = np.nan  # shard 2 holds fill values only: zarr writes no file for it
    ints = rng.integers(-5, 100, (30, 4)).astype(np.int32)
    ints[10:12] = -1      # one empty inner chunk of two steps
    arrays = {
        "end": sharded(group, "end", floats, 20, 1, [BytesCodec(endian="little")], "end", float("nan")),
        "end_crc32c": sharded(group, "end_crc32c", floats, 20, 1, [BytesCodec(endian="little"), Crc32cCodec()], "end",
                              float("nan")),
        "start": sharded(group, "start", floats, 20, 1, [BytesCodec(endian="little")], "start", float("nan")),
        "start_crc32c_int": sharded(group, "start_crc32c_int", ints, 10, 2, [BytesCodec(endian="little"), Crc32cCodec()],
                                    "start", -1),
    }
    for dtype in ("float32", "float16"):
        values = compressible(rng, (45, 16, 32), dtype)
        values[7] = np.nan    # an empty inner chunk
        values[40:] = np.nan  # a shard never written
        arrays[f"blosc_{dtype}"] = sharded(group, f"blosc_{dtype}", values, 20, 1, [BytesCodec(endian="little")], "end",
                                           float("nan"), after_bytes=[blosc(values)])
    # inner chunks with their own crc32c, as the recorder writes large tensors: after blosc, or alone
    for name, codecs in (("blosc_crc32c", lambda v: [blosc(v), Crc32cCodec()]), ("crc32c", lambda v: [Crc32cCodec()])):
        values = compressible(rng, (45, 16, 32), "float32")
        values[7] = np.nan    # an empty inner chunk: a step never written
        values[40:] = np.nan  # a shard never written
        arrays[name] = sharded(group, name, values, 20, 1, [BytesCodec(endian="little"), Crc32cCodec()], "end",
                               float("nan"), after_bytes=codecs(values))
    for name in ("end", "blosc_float16", "blosc_crc32c", "crc32c"):
        assert not (root / name / "c.2.0.0").exists(), name
    plain_ints = compressible(rng, (30, 4, 64), "int32")
    plain_ints[16:20] = rng.integers(-2**31, 2**31 - 1, plain_ints[16:20].shape, dtype=np.int32)  # chunk 4: no pattern
    plain_ints[8:12] = -1  # chunk 2 (steps 8 to 11) holds fill values only: zarr writes no file for it
    plain = {"blosc_plain_int32": group.create_array(
        "blosc_plain_int32", shape=plain_ints.shape, chunks=(4, 4, 64), dtype="int32", fill_value=-1,
        compressors=[blosc(plain_ints)], dimension_names=["step", "a", "b"])}
    plain["blosc_plain_int32"][:] = plain_ints
    assert not (root / "blosc_plain_int32" / "c" / "2").exists()
    frames = blosc_frames(root, "blosc_plain_int32")
    assert len(frames) == 7 and all(n == 4 * 4 * 64 * 4 for n, _ in frames), frames
    assert any(c < n // 2 for n, c in frames) and any(c > n for n, c in frames), f"compressed and stored chunks: {frames}"
    codecs = {"blosc_crc32c": ["bytes", "blosc", "crc32c"], "crc32c": ["bytes", "crc32c"]}
    out, plain_out = {}, {}
    for name, arr in [*arrays.items(), *plain.items()]:
        meta = array_meta(name, arr)
        assert isinstance(meta, dict), meta
        assert meta["codecs"] == codecs.get(name, ["bytes", "blosc" if "blosc" in name else "gzip"]), meta
        (plain_out if name in plain else out)[name] = {"meta": meta, "steps": step_lists(arr)}
    index, spec = shard_index(open_store(root), {name: a["meta"] for name, a in out.items()}, BUILT_STEPS)
    spec["path"] = "shard-index.bin"
    (root / spec["path"]).write_bytes(index)
    (root / "expected.json").write_text(json.dumps({"arrays": out, "plain": plain_out, "shard_index": spec}))


@pytest.fixture(scope="module")
def node() -> str:
    """node: without it the JS tests cannot run, which fails the suite under CI (and skips them elsewhere)."""
    found = shutil.which("node")
    if found is None:
        _missing("node is not installed; the viewer's JS unit tests need it (apt-get install nodejs)")
    return found


def node_test(node: str, files: list[str], fixture: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ACC_ZARR_FIXTURE"}
    if fixture is not None:
        env["ACC_ZARR_FIXTURE"] = str(fixture)
    return subprocess.run([node, "--test", "--test-reporter=tap", *files], capture_output=True, text=True, timeout=120,
                          env=env)


def test_js_unit_tests_pass(node, tmp_path):
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no JS tests found"
    write_fixture(tmp_path / "zarr")
    proc = node_test(node, files, tmp_path / "zarr")
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert not re.search(r"^# pass 0$", proc.stdout, re.M), "no JS test passed"
    assert re.search(r"^# skipped 0$", proc.stdout, re.M), "some JS tests were skipped"
    # every array of the fixture was read, in each of its three ways: none of those tests vanished
    expected = json.loads((tmp_path / "zarr" / "expected.json").read_text())
    arrays, plain = expected["arrays"], expected["plain"]
    assert len(arrays) == 8 and len(plain) == 1
    for name in arrays:
        passed = re.findall(rf"^\s*ok \d+ - {re.escape(name)} \(", proc.stdout, re.M)
        assert len(passed) == 3, f"{len(passed)} of the 3 tests on {name} passed:\n{proc.stdout[-3000:]}"
    for name in ("blosc_crc32c", "crc32c"):  # and each of their inner chunks, one byte flipped, was refused
        passed = re.findall(rf"^\s*ok \d+ - {re.escape(name)}: a flipped byte", proc.stdout, re.M)
        assert len(passed) == 1, f"the flipped-byte test on {name} did not pass:\n{proc.stdout[-3000:]}"
    for name in plain:
        passed = re.findall(rf"^\s*ok \d+ - {re.escape(name)} \(plain chunks\)", proc.stdout, re.M)
        assert len(passed) == 1, f"the test on {name} did not pass:\n{proc.stdout[-3000:]}"


def test_js_fixture_tests_fail_without_their_fixture(node, tmp_path):
    """A fixture folder that is missing or empty fails the shard tests; with none named they show as skipped."""
    files = [str(JS_TESTS / "zarr_files.test.mjs")]
    missing = node_test(node, files, tmp_path / "missing")
    assert missing.returncode != 0 and re.search(r"^# fail 1$", missing.stdout, re.M), missing.stdout
    assert "names no readable fixture" in missing.stdout
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "expected.json").write_text('{"arrays": {}}')
    empty = node_test(node, files, tmp_path / "empty")
    assert empty.returncode != 0 and "not ok 1 - the fixture holds arrays" in empty.stdout, empty.stdout
    unset = node_test(node, files, None)
    assert unset.returncode == 0 and re.search(r"^# skipped 1$", unset.stdout, re.M), unset.stdout


@pytest.mark.parametrize("names", [["bytes"], ["bytes", "gzip"], ["bytes", "blosc"], ["bytes", "crc32c"],
                                   ["bytes", "gzip", "crc32c"], ["bytes", "blosc", "crc32c"]])
def test_chunk_codecs_the_viewer_reads(names):
    codecs = [{"name": n, "configuration": {"endian": "big"} if n == "bytes" else {}} for n in names]
    assert _chunk_codecs(codecs) == (names, "big")


@pytest.mark.parametrize("names", [[], ["crc32c"], ["gzip"], ["bytes", "zstd"], ["bytes", "crc32c", "gzip"],
                                   ["bytes", "crc32c", "blosc"], ["bytes", "crc32c", "crc32c"], ["bytes", "gzip", "blosc"],
                                   ["bytes", "gzip", "blosc", "crc32c"], ["bytes", "zstd", "crc32c"], ["bytes", "bytes"]])
def test_chunk_codecs_refused(names):
    assert _chunk_codecs([{"name": n} for n in names]) == f"codecs {names}"
