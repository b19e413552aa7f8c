"""Storage: one zip file per run (pack/unpack, read in place), analysis with xarray and dask, and
recordings in an object store (a real S3 API: moto's server on 127.0.0.1, started here)."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from capture import Recording
from capture.store import DirStore, Overlay, ZipStore, open_store
from conftest import acc


def files_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(proc) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def same_steps(a: Recording, b: Recording, steps) -> None:
    """Steps `steps` of `a` and `b` hold the same keys, dtypes and bytes."""
    assert a.keys == b.keys
    for n in steps:
        x, y = a.step(n), b.step(n)
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), (k, n)


# -- one file per run ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed(bcl_rec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "bcl.zip"
    proc = acc("pack", str(bcl_rec), str(out))
    assert f"packed {bcl_rec} into {out}" in proc.stdout
    return out


def test_pack_stores_every_file_unchanged_and_unpack_gives_the_directory_back(bcl_rec, packed, tmp_path):
    with zipfile.ZipFile(packed) as zf:
        infos = zf.infolist()
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}, "entries must be stored, not deflated"
    original = files_of(bcl_rec)
    assert {i.filename for i in infos if not i.is_dir()} == set(original)
    assert packed.stat().st_size < sum(map(len, original.values())) * 1.01 + 100_000

    proc = acc("unpack", str(packed), str(tmp_path / "back"))
    assert "unpacked" in proc.stdout
    assert files_of(tmp_path / "back") == original  # the same files, the same bytes

    acc("pack", str(bcl_rec), str(tmp_path / "again.zip"))  # the same recording packs to the same bytes
    assert (tmp_path / "again.zip").read_bytes() == packed.read_bytes()


def test_file_urls_name_local_paths_in_every_command(bcl_rec, packed, tmp_path):
    """`file:///a/b` is the local /a/b wherever a command takes a recording (Path alone makes it file:/a/b)."""
    copy = shutil.copytree(bcl_rec, tmp_path / "rec")
    acc("view", f"file://{copy}", "--build-only")
    assert (copy / "index.html").is_file()
    assert "complete" in acc("info", f"file://{copy}").stdout
    acc("unpack", f"file://{packed}", str(tmp_path / "back"))
    assert files_of(tmp_path / "back") == files_of(bcl_rec)
    acc("run", "--steps", "2", "--condition", "control", "--out", f"file://{tmp_path / 'new'}", cwd=tmp_path)
    assert Recording.open(tmp_path / "new").steps == 2 and not (tmp_path / "file:").exists()


def test_zarr_zipstore_opens_the_pack_as_the_same_group(bcl_rec, packed):
    z = zarr.open_group(zarr.storage.ZipStore(packed, mode="r"), mode="r")
    d = zarr.open_group(str(bcl_rec), mode="r")
    assert dict(z.attrs) == dict(d.attrs)
    for name in ("tensors/rank_score", "tensors/loss", "summary/loss", "tensors/encoder_weights"):
        assert z[name].metadata.to_dict() == d[name].metadata.to_dict()
        assert np.array_equal(z[name][:], d[name][:], equal_nan=True), name


def test_recording_open_info_and_diff_read_the_zip_in_place(bcl_rec, packed):
    rec, ref = Recording.open(packed), Recording.open(bcl_rec)
    assert isinstance(rec.store, ZipStore) and rec.path == packed and rec.name == "bcl"
    assert rec.status == "complete" and rec.meta == ref.meta
    same_steps(rec, ref, [0, 7, 19, 20, 29])
    assert np.array_equal(rec.summary("loss"), ref.summary("loss"))
    assert rec.size_bytes() == packed.stat().st_size

    info = acc("info", str(packed), "--json")
    import json

    d = json.loads(info.stdout)
    assert d["steps_completed"] == 30 and d["status"] == "complete" and d["path"] == str(packed)
    assert d["size_bytes"] == packed.stat().st_size

    same = acc("diff", str(packed), str(bcl_rec), check=False)
    assert same.returncode == 0 and same.stdout.rstrip().endswith("identical"), same.stdout


def test_zip_store_ranged_reads(packed, bcl_rec):
    store = open_store(packed)
    assert isinstance(store, ZipStore)
    key = "tensors/rank_score/c.0.0.0"
    whole = (bcl_rec / key).read_bytes()
    assert store.get(key) == whole and store.size(key) == len(whole)
    assert store.get_range(key, 100, 50) == whole[100:150]
    assert store.get_tail(key, 320) == (whole[-320:], len(whole))
    with pytest.raises(FileNotFoundError):
        store.get("tensors/nope")
    with pytest.raises(PermissionError):
        store.put("x", b"")


def _zip(path: Path, entries: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_unpack_refuses_what_it_must_not_write(packed, bcl_rec, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    assert "not empty" in one_error_line(acc("unpack", str(packed), str(busy), check=False))
    assert files_of(busy) == {"mine.txt": b"keep me"}

    recording_files = files_of(bcl_rec)
    cases = {
        "escape": ({**recording_files, "../outside.txt": b"x"}, None, "outside the target directory"),
        "absolute": ({**recording_files, "/tmp/abs.txt": b"x"}, None, "outside the target directory"),
        "link": (recording_files, "tensors/link", "not a plain file"),
        "not a recording": ({"hello.txt": b"hi"}, None, "not a packed recording"),
    }
    for name, (entries, link, message) in cases.items():
        archive = _zip(tmp_path / f"{name}.zip", entries, link)
        dest = tmp_path / f"out-{name.replace(' ', '-')}"
        assert message in one_error_line(acc("unpack", str(archive), str(dest), check=False)), name
        assert not dest.exists(), name
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "plain.zip").write_text("not a zip")
    assert "not a zip file" in one_error_line(acc("unpack", str(tmp_path / "plain.zip"), str(tmp_path / "o"), check=False))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left behind


def test_pack_refuses_bad_input(bcl_rec, packed, tmp_path):
    assert "exists" in one_error_line(acc("pack", str(bcl_rec), str(packed), check=False))
    assert "inside the recording" in one_error_line(acc("pack", str(bcl_rec), str(bcl_rec / "x.zip"), check=False))
    assert not (bcl_rec / "x.zip").exists()
    assert "not a recording" in one_error_line(acc("pack", str(tmp_path), str(tmp_path / "y.zip"), check=False))
    assert "zip file already" in one_error_line(acc("pack", str(packed), str(tmp_path / "z.zip"), check=False))
    assert not list(tmp_path.iterdir())


def test_view_serves_the_zip_with_range_reads(packed, bcl_rec):
    """`view` on a zip: the page from memory, the data from the zip with ranged reads; nothing written."""
    import http.client

    from viewer import make_server
    from viewer.build import viewer_files

    before = packed.read_bytes()
    rec = Recording.open(packed)
    server = make_server(None)
    server.source = Overlay(rec.store, viewer_files(rec))
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]

        def get(path: str, headers: dict | None = None):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return r.status, dict(r.getheaders()), body

        status, _, page = get("/")
        assert status == 200 and b"<html" in page.lower()
        key = "tensors/rank_score/c.1.0.0"
        whole = (bcl_rec / key).read_bytes()
        status, headers, body = get("/" + key, {"Range": "bytes=100-199"})
        assert status == 206 and body == whole[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
        assert get("/" + key)[2] == whole
        assert get("/nope")[0] == 404
        assert get("/../zarr.json")[0] in (400, 403, 404)
    finally:
        server.shutdown()
        server.server_close()
    assert packed.read_bytes() == before


def test_open_store_picks_the_kind(tmp_path, packed):
    assert isinstance(open_store(tmp_path), DirStore)
    assert isinstance(open_store(str(packed)), ZipStore)
    assert isinstance(open_store(f"file://{tmp_path}"), DirStore)


STORE_ROW = "async ([array, step]) => Array.from(await window.accViewer.store.row(array, step))"
SHOWN_KEYS = ("strength", "batch_images", "encoder_weights", "loss")


def serve_source(rec: Recording):
    """`view`'s server for a recording that is not a directory: the page from memory, the data from its store."""
    import threading

    from viewer import make_server
    from viewer.build import viewer_files

    server = make_server(None)
    server.source = Overlay(rec.store, viewer_files(rec))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def page_shows_the_store(page, server, rec: Recording, step: int) -> None:
    """The page served by `server` reaches `step` and decodes exactly the values `rec` holds there."""
    from browser import Served, open_at

    open_at(page, Served(Path("."), server.url), step)
    data = rec.step(step)
    for key in SHOWN_KEYS:
        shown = np.array(page.evaluate(STORE_ROW, [f"tensors/{key}", step]), dtype=data[key].dtype)
        assert np.array_equal(shown, data[key].ravel()), key
    assert page.watch.fetches and all(s in (200, 206) for _, _, s in page.watch.fetches)


def test_the_viewer_in_chromium_over_a_zip_shows_the_store(page, packed):
    rec = Recording.open(packed)
    server = serve_source(rec)
    try:
        page_shows_the_store(page, server, rec, 23)
        ranged = [(u, r, s) for u, r, s in page.watch.fetches if "/tensors/" in u and r]
        assert ranged and all(s == 206 for _, _, s in ranged), page.watch.fetches
    finally:
        server.shutdown()
        server.server_close()


# -- analysis at scale: Recording.to_xarray --------------------------------------------------------

def assert_xarray_equals_steps(rec: Recording, steps) -> None:
    ds = rec.to_xarray()
    assert list(ds["step"].values) == list(range(rec.steps))
    for n in steps:
        for key, values in rec.step(n).items():
            got = ds[key].isel(step=n).values
            assert got.dtype == values.dtype and got.tobytes() == values.tobytes(), (key, n)
    for name in rec.summaries:
        got = ds[f"summary_{name}"].values
        assert got.tobytes() == rec.summary(name).tobytes(), name


def test_to_xarray_is_lazy_labelled_and_bit_equal_to_step(bcl_rec, packed):
    rec = Recording.open(bcl_rec)
    ds = rec.to_xarray()
    assert dict(ds.sizes)["step"] == 30
    assert ds["rank_score"].dims == ("step", "image", "feature")
    assert ds["weight_cosine_matrix"].dims == ("step", "feature", "other_feature")
    assert ds["batch_images"].dims == ("step", "image", "channel", "height", "width")
    assert ds["summary_win_rate"].dims == ("step", "feature")
    assert ds.attrs["condition"] == "bcl-slow" and ds.attrs["seed"] == 0 and ds.attrs["status"] == "complete"
    assert ds["rank_score"].attrs["render"] == rec.key_table[[e["key"] for e in rec.key_table].index("rank_score")]["render"]
    # dask chunks follow the files: 20-step shards, 64-step chunks of small tensors, 1024-step summaries
    assert ds["rank_score"].chunks == ((20, 10), (128,), (64,))
    assert ds["encoder_weights"].data.numblocks == (2, 1, 1)
    assert ds["loss"].chunks == ((30,),) and ds["neighbors"].chunks[0] == (30,)
    assert ds["summary_loss"].chunks == ((30,),)
    assert all(v.chunks is not None for v in ds.data_vars.values()), "every variable is lazy"
    assert len({v.data.name for v in ds.data_vars.values()}) == len(ds.data_vars), "two variables share a dask name"
    together = ds[["strength", "rank_score", "local_novelty"]].isel(step=21).compute()  # one graph, three arrays
    step = rec.step(21)
    assert all(together[k].values.tobytes() == step[k].tobytes() for k in ("strength", "rank_score", "local_novelty"))
    assert_xarray_equals_steps(rec, [0, 7, 19, 20, 29])
    assert_xarray_equals_steps(Recording.open(packed), [3, 26])  # from the zip


KILLED_RUN = """
import os, signal, sys, torch
from capture import TensorKey, record

class K(TensorKey):
    LOSS = "loss", (), "scalar"
    W = "w", ("row", "col"), "weights", True
    LABELS = "labels", ("row",), "labels"

g = torch.Generator().manual_seed(0)
with record(sys.argv[1], K, chunk_steps=10, expect_steps=400) as rec:
    for step in range(45):
        rec.inspector.capture(K.LOSS, torch.rand((), generator=g))
        rec.inspector.capture(K.W, torch.randn(40, 50, generator=g))
        rec.inspector.capture(K.LABELS, torch.randint(0, 9, (40,), generator=g, dtype=torch.int32))
        rec.commit()
    rec.sync()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_to_xarray_of_a_killed_recording_holds_only_its_completed_steps(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    rec = Recording.open(path)
    assert rec.status == "interrupted" and rec.steps == 45
    assert rec.tensors["w"].shape[0] > 45  # allocated ahead: the reader must cut
    ds = rec.to_xarray()
    assert dict(ds.sizes) == {"step": 45, "row": 40, "col": 50} and ds.attrs["status"] == "interrupted"
    assert ds["w"].chunks[0] == (20, 20, 5) and ds["labels"].dtype == np.int32
    assert_xarray_equals_steps(rec, [0, 19, 44])


def test_to_xarray_computes_on_a_distributed_cluster(bcl_rec, packed, bucket_rec):
    """The graph pickles: worker processes read the files themselves, from a directory, a zip or a
    bucket (the workers take the AWS variables from their environment)."""
    from dask.distributed import Client, LocalCluster

    rec = Recording.open(bcl_rec)
    weights = np.stack([rec.step(n)["encoder_weights"] for n in range(rec.steps)])
    expected = np.sqrt(((weights - weights[0]) ** 2).sum(-1))
    assert_xarray_equals_steps(Recording.open(bucket_rec), [0, 19, 29])  # from the bucket, in this process
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for where in (bcl_rec, packed, bucket_rec):
            w = Recording.open(where).to_xarray()["encoder_weights"]
            got = client.compute(np.sqrt(((w - w.isel(step=0)) ** 2).sum("pixel"))).result()
            assert np.allclose(got.values, expected, rtol=1e-5), where
            assert got.dims == ("step", "feature") and list(got["step"].values) == list(range(30))


# -- recordings in an object store: a real S3 API (moto's server on 127.0.0.1) --------------------

BUCKET = "acc-test"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 (port 0), one bucket, and the AWS variables pointing at it
    (for this process and the CLI processes it starts). Yields the endpoint URL."""
    pytest.importorskip("obstore")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def plain_zarr(endpoint: str, prefix: str) -> zarr.Group:
    """The recording opened by zarr-python alone, through fsspec/s3fs (no code of ours)."""
    store = zarr.storage.FsspecStore.from_url(
        f"s3://{BUCKET}/{prefix}", read_only=True,
        storage_options={"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                         "client_kwargs": {"region_name": "us-east-1"}})
    return zarr.open_group(store, mode="r", zarr_format=3)


@pytest.fixture(scope="module")
def bucket_rec(s3) -> str:
    """bcl_rec's command (30 steps of bcl-slow, seed 0) recorded into the bucket, chunked otherwise."""
    url = f"s3://{BUCKET}/runs/same"
    proc = acc("run", "--steps", "30", "--chunk-steps", "10", "--out", url, "--note", "fixture")
    assert f"recorded 30 steps of bcl-slow to {url}" in proc.stdout
    return url


def test_a_run_to_the_bucket_is_the_local_run_byte_for_byte(s3, bucket_rec, bcl_rec):
    stored = objects(s3, "runs/same")
    local = files_of(bcl_rec)
    data = [k for k in local if k.startswith(("tensors/", "summary/"))]
    assert data and sorted(k for k in stored if k.startswith(("tensors/", "summary/"))) == sorted(data)
    differ = [key for key in data if stored[key] != local[key]]  # (not `==` in an assert: a diff of MBs takes minutes)
    assert not differ, differ  # the same layout, codecs and shards: the same bytes
    assert "state/writer-lock.json" not in stored  # released

    z, d = plain_zarr(s3, "runs/same"), zarr.open_group(str(bcl_rec), mode="r")
    assert z.attrs["acc_capture"]["steps_completed"] == 30 and z.attrs["acc_capture"]["status"] == "complete"
    for group in ("tensors", "summary"):
        for name, arr in d[group].arrays():
            got = z[f"{group}/{name}"][:]
            assert got.dtype == arr.dtype and np.array_equal(got, arr[:], equal_nan=True), name

    info = acc("info", bucket_rec, "--json")
    import json

    d = json.loads(info.stdout)
    assert d["status"] == "complete" and d["steps_completed"] == 30 and d["path"] == bucket_rec
    assert d["size_bytes"] == sum(map(len, stored.values()))
    same = acc("diff", bucket_rec, str(bcl_rec), check=False)
    assert same.returncode == 0, same.stdout


def test_a_crash_during_an_upload_reads_as_interrupted_and_resumes_bit_exactly(s3, bcl_rec):
    """The process ends (capture/crash.py's `upload` point) while the fourth chunk's files are half
    uploaded: three chunks are counted, bit-equal to the uninterrupted run, and `resume` finishes it."""
    from capture.crash import EXIT_CODE, VARIABLE

    url, prefix = f"s3://{BUCKET}/runs/killed", "runs/killed"
    proc = acc("run", "--steps", "30", "--chunk-steps", "2", "--out", url, env={**os.environ, VARIABLE: "upload:4"},
               check=False)
    assert proc.returncode == EXIT_CODE, proc.stderr

    rec = Recording.open(url)
    done = rec.steps
    assert done == 6 and rec.status == "interrupted"
    assert "interrupted" in acc("info", url).stdout
    ref = Recording.open(bcl_rec)
    same_steps(rec, ref, sorted({0, done // 2, done - 1}))
    assert np.array_equal(rec.summary("loss"), ref.summary("loss")[:done])

    acc("resume", url, "--steps", str(30 - done), "--chunk-steps", "4")
    rec = Recording.open(url)
    assert rec.steps == 30 and rec.status == "complete"
    same = acc("diff", url, str(bcl_rec), check=False)
    assert same.returncode == 0 and same.stdout.rstrip().endswith("identical"), same.stdout
    z = plain_zarr(s3, prefix)
    assert np.array_equal(z["tensors/grad_masked"][:], zarr.open_group(str(bcl_rec), mode="r")["tensors/grad_masked"][:])
    assert "state/writer-lock.json" not in objects(s3, prefix)


def test_the_viewer_over_a_bucket_shows_the_store(page, s3, bucket_rec):
    """`view s3://...`: our server serves the page and reads the data from the bucket."""
    rec = Recording.open(bucket_rec)
    server = serve_source(rec)
    try:
        page_shows_the_store(page, server, rec, 13)
    finally:
        server.shutdown()
        server.server_close()


def test_build_only_writes_the_viewer_into_the_bucket_which_serves_it(page, s3, bcl_rec):
    """`view s3://... --build-only`: index.html and viewer/ in the prefix; the bucket itself then serves
    the page (moto answers plain GETs and Range requests), with no server of ours."""
    from browser import Served, open_at

    url = f"s3://{BUCKET}/runs/site"
    src, dst = open_store(bcl_rec), open_store(url)
    dst.put_many((k, src.get(k)) for k, _ in src.list() if not k.startswith("viewer/") and k != "index.html")
    proc = acc("view", url, "--build-only")
    assert f"viewer written to {url}/index.html" in proc.stdout
    stored = objects(s3, "runs/site")
    assert "index.html" in stored and "viewer/app.js" in stored and "viewer/shard-index.bin" in stored

    import json

    import boto3

    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                       "Resource": f"arn:aws:s3:::{BUCKET}/runs/site/*"}]}
    boto3.client("s3", endpoint_url=s3).put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public))  # a public site
    step = 22
    open_at(page, Served(Path("."), f"{s3}/{BUCKET}/runs/site/index.html"), step)
    rec = Recording.open(url)
    data = rec.step(step)
    for key in SHOWN_KEYS:
        shown = np.array(page.evaluate(STORE_ROW, [f"tensors/{key}", step]), dtype=data[key].dtype)
        assert np.array_equal(shown, data[key].ravel()), key
    suffix = [r for _, r, _ in page.watch.fetches if r and r.startswith("bytes=-")]
    assert not suffix, f"suffix ranges force CORS preflights on a bucket: {suffix}"


def bad_run(tmp_path: Path, out: str, env: dict[str, str | None]) -> str:
    """`run --out OUT` under these AWS variables: one error line, exit 1, nothing written locally."""
    full = {**os.environ, "COLUMNS": "120"}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    proc = acc("run", "--steps", "3", "--out", out, cwd=tmp_path, env=full, timeout=300, check=False)
    line = one_error_line(proc)
    assert not list(tmp_path.iterdir()), "wrote something locally"
    return line


def test_bad_object_store_input_is_one_line_and_writes_nothing(s3, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    assert "cannot reach" in bad_run(tmp_path, f"s3://{BUCKET}/runs/x", {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}"})
    assert "no such bucket: nobucket" in bad_run(tmp_path, "s3://nobucket/runs/x", {})
    line = bad_run(tmp_path, f"s3://{BUCKET}/runs/x", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    assert "no credentials" in line and "AWS_ACCESS_KEY_ID" in line
    assert "missing a slash" in bad_run(tmp_path, f"s3:/{BUCKET}/runs/x", {})
    assert "unknown storage scheme" in bad_run(tmp_path, "s4://bucket/x", {})
    assert not objects(s3, "runs/x")
    assert "no credentials" in one_error_line(_info_without_credentials(tmp_path))
    with _web_server() as web:  # an endpoint that answers HTTP, but not as S3 does
        line = one_error_line(_cli(tmp_path, ["info", f"s3://{BUCKET}/runs/same"], {"AWS_ENDPOINT_URL": web}))
        assert "no S3 error: is it an S3 API endpoint?" in line, line
    assert not list(tmp_path.iterdir())


def test_record_refuses_a_url_missing_a_slash_and_writes_nothing(s3, tmp_path, monkeypatch):
    """record() itself, not only the CLI: never a local folder named `s3:`."""
    import torch

    from capture import TensorKey, record
    from capture.store import StoreError

    class K(TensorKey):
        LOSS = "loss", (), "scalar"

    monkeypatch.chdir(tmp_path)
    for typo in (f"s3:/{BUCKET}/x", Path(f"s3://{BUCKET}/x")):  # (a Path of a URL is s3:/bucket/x)
        with pytest.raises(StoreError, match="missing a slash"):
            with record(typo, K) as rec:
                rec.inspector.capture(K.LOSS, torch.tensor(1.0))
                rec.commit()
    assert not list(tmp_path.iterdir())


def test_credentials_come_from_the_aws_variables(s3, monkeypatch):
    from capture.store import ObjectStore

    monkeypatch.setenv("AWS_SESSION_TOKEN", "temporary")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    config = ObjectStore(f"s3://{BUCKET}/x")._store.config
    assert config["session_token"] == "temporary" and config["region"] == "eu-west-3"
    assert config["access_key_id"] == "testing" and config["endpoint"] == s3


def test_the_readme_cors_rules_are_what_the_viewer_needs(s3):
    """The README's bucket CORS rules: a valid S3 CORS configuration that allows GET, HEAD and the
    Range header and exposes the headers the page reads."""
    import json
    import re

    import boto3

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```json\n(.*?)```", readme, re.S) if "CORSRules" in b)
    rules = json.loads(block)
    rule = rules["CORSRules"][0]
    assert {"GET", "HEAD"} <= set(rule["AllowedMethods"]) and "Range" in rule["AllowedHeaders"]
    assert {"Content-Range", "Content-Length", "Accept-Ranges", "ETag"} <= set(rule["ExposeHeaders"])
    client = boto3.client("s3", endpoint_url=s3)
    client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=rules)  # (the S3 API accepts it as it is)
    assert client.get_bucket_cors(Bucket=BUCKET)["CORSRules"][0]["AllowedHeaders"] == rule["AllowedHeaders"]
    client.delete_bucket_cors(Bucket=BUCKET)


def _web_server():
    """A plain web server on 127.0.0.1 that answers every request 404 (not an S3 API); its URL."""
    import contextlib
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        do_HEAD = do_PUT = do_GET

        def log_message(self, *args):
            pass

    @contextlib.contextmanager
    def serving():
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    return serving()


def _cli(tmp_path: Path, args: list[str], env: dict[str, str]):
    return acc(*args, cwd=tmp_path, env={**os.environ, **env}, timeout=300, check=False)


def _info_without_credentials(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return acc("info", f"s3://{BUCKET}/runs/same", cwd=tmp_path, env=env, check=False)


def test_no_permission_is_one_line_and_writes_nothing(s3, tmp_path):
    """A user whose policy allows reading only: moto enforces IAM once told to."""
    import json
    import urllib.request

    import boto3

    iam = boto3.client("iam", endpoint_url=s3, region_name="us-east-1")
    iam.create_user(UserName="reader")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                        "Resource": "*"}]}
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]

    def enforce(count: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{s3}/moto-api/reset-auth", data=count.encode(), method="POST",
                                                      headers={"Content-Type": "text/plain"}))

    enforce("0")
    try:
        line = bad_run(tmp_path, f"s3://{BUCKET}/runs/denied",
                       {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
        assert "no permission" in line, line
        line = bad_run(tmp_path, f"s3://{BUCKET}/runs/denied", {})  # credentials the store does not know
        assert "refused the credentials" in line, line
    finally:
        enforce("inf")
    assert not objects(s3, "runs/denied")


def test_record_api_and_recording_open_take_urls(s3):
    import torch

    from capture import TensorKey, record
    from capture.store import ObjectStore

    class K(TensorKey):
        LOSS = "loss", (), "scalar"
        W = "w", ("row", "col"), "weights", True

    def run(path: str) -> Recording:
        g = torch.Generator().manual_seed(1)
        with record(path, K, chunk_steps=4, config={"lr": 0.1}) as rec:
            for _ in range(9):
                rec.inspector.capture(K.LOSS, torch.rand((), generator=g))
                rec.inspector.capture(K.W, torch.randn(30, 40, generator=g))
                rec.commit()
        return Recording.open(path)

    a, b = run(f"s3://{BUCKET}/api/one"), run("memory://api/one")
    assert isinstance(a.store, ObjectStore) and a.steps == b.steps == 9 and a.status == b.status == "complete"
    same_steps(a, b, range(9))
    with pytest.raises(FileExistsError, match="already exists"):
        record(f"s3://{BUCKET}/api/one", K)
    assert Recording.open(f"s3://{BUCKET}/api/one").steps == 9


def test_the_object_lock_keeps_a_second_writer_out_and_a_dead_one_does_not(s3):
    import json
    import subprocess
    import sys

    from capture.store import LOCK_KEY, ObjectLock

    store = open_store(f"s3://{BUCKET}/locks/a")
    lock = ObjectLock(store)
    assert store.writer_alive()
    with pytest.raises(BlockingIOError):
        ObjectLock(store)
    lock.release()
    assert not store.writer_alive() and not store.exists(LOCK_KEY)

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    import time

    store.put(LOCK_KEY, json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "time": time.time()}).encode())
    assert not store.writer_alive()  # its process is gone: a dead writer's lock, taken over
    ObjectLock(store).release()
    store.put(LOCK_KEY, json.dumps({"host": "elsewhere", "pid": 1, "time": time.time() - 3600}).encode())
    assert not store.writer_alive()  # silent for an hour
    store.put(LOCK_KEY, json.dumps({"host": "elsewhere", "pid": 1, "time": time.time()}).encode())
    assert store.writer_alive()  # another host, beating now: assumed alive
    store.delete(LOCK_KEY)
