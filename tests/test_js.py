"""The viewer's JS unit tests (tests/js/*.test.mjs), run with node's own test runner.

Some of them read sharded arrays written here by zarr-python itself (every index layout the
viewer reads), with the metadata the page builder makes of them, and with the built shard index
the page builder writes for them (covering their first BUILT_STEPS steps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec

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
    index, spec = shard_index(root, {name: a["meta"] for name, a in out.items()}, BUILT_STEPS)
    spec["path"] = "shard-index.bin"
    (root / spec["path"]).write_bytes(index)
    (root / "expected.json").write_text(json.dumps({"arrays": out, "shard_index": spec}))


def test_js_unit_tests_pass(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the viewer's JS unit tests need it (apt-get install nodejs)")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no JS tests found"
    write_fixture(tmp_path / "zarr")
    proc = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ACC_ZARR_FIXTURE": str(tmp_path / "zarr")})
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert f"# pass {0}" not in proc.stdout
    assert "# skipped 0" in proc.stdout, "the tests on zarr-python's own shards did not run"
