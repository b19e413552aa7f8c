"""The viewer's JS unit tests (tests/js/*.test.mjs), run with node's own test runner.

Some of them read sharded arrays written here by zarr-python itself (every index layout the
viewer reads), with the metadata the page builder makes of them, and with the built shard index
the page builder writes for them (covering their first BUILT_STEPS steps).
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
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec

from capture.store import open_store
from conftest import _missing
from viewer.build import array_meta, shard_index

JS_TESTS = Path(__file__).parent / "js"
BUILT_STEPS = 25  # the fixture's built shard index covers these: the steps after are read from the shards' indexes


def sharded(group, name: str, values: np.ndarray, shard: int, inner: int, index_codecs, location: str, fill):
    per = values.shape[1:]
    arr = group.create_array(
        name, shape=values.shape, chunks=(shard, *per), dtype=values.dtype, compressors=None, fill_value=fill,
        serializer=ShardingCodec(chunk_shape=(inner, *per), codecs=[BytesCodec(endian="little"), GzipCodec(level=1)],
                                 index_codecs=index_codecs, index_location=location),
        dimension_names=["step", *[f"d{i}" for i in range(len(per))]], chunk_key_encoding={"name": "default", "separator": "."})
    arr[:] = values
    return arr


def write_fixture(root: Path) -> None:
    """Sharded arrays of every index layout, with empty inner chunks and a shard never written."""
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
    assert not (root / "end" / "c.2.0.0").exists()
    out = {}
    for name, arr in arrays.items():
        meta = array_meta(name, arr)
        assert isinstance(meta, dict), meta
        values = arr[:].reshape(arr.shape[0], -1)
        steps = [[None if np.isnan(v) else float(v) for v in row] if values.dtype.kind == "f" else row.tolist() for row in values]
        out[name] = {"meta": meta, "steps": steps}
    index, spec = shard_index(open_store(root), {name: a["meta"] for name, a in out.items()}, BUILT_STEPS)
    spec["path"] = "shard-index.bin"
    (root / spec["path"]).write_bytes(index)
    (root / "expected.json").write_text(json.dumps({"arrays": out, "shard_index": spec}))


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
    arrays = json.loads((tmp_path / "zarr" / "expected.json").read_text())["arrays"]
    assert len(arrays) == 4
    for name in arrays:
        passed = re.findall(rf"^\s*ok \d+ - {re.escape(name)} \(", proc.stdout, re.M)
        assert len(passed) == 3, f"{len(passed)} of the 3 tests on {name} passed:\n{proc.stdout[-3000:]}"


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
