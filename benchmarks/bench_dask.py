"""Analysis benchmark: a statistic over every step of a long recording with dask.distributed.

    python benchmarks/bench_dask.py [--steps 2000] [--workers 1,2,4] [--repeats 3] [--path REC] [--no-bucket]

Records `--steps` steps of bcl-slow keeping `encoder_weights` (or uses --path), then computes
examples/dask_analysis.py's statistics (each feature's weight drift and the mean off-diagonal
cosine recomputed from the weights, over every step) through `Recording.to_xarray()` on a
LocalCluster of 1, 2 and 4 single-threaded worker processes: from disk, and from a bucket (the
recording uploaded to moto's S3 server on 127.0.0.1, a process of its own, which the workers then
read; its CPU time is part of the bucket figures).
For reference, the same statistics in one process without dask, reading each step with
`Recording.step`. Each figure: the median and the best of --repeats computations after one warm-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of `repeats` calls after one warm-up (imports and connections on the workers)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def on_cluster(location: str, workers: int, repeats: int) -> float:
    from dask.distributed import Client, LocalCluster
    from dask_analysis import statistics as stats

    from capture import Recording
    from capture.codecs import use_fast_gzip

    ds = Recording.open(location).to_xarray()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        client.run(use_fast_gzip)
        return timed(lambda: client.compute(stats(ds)).result(), repeats)


def one_process(location: str, repeats: int) -> float:
    """The same statistics without dask: every step read with Recording.step, then numpy."""
    from capture import Recording

    rec = Recording.open(location)
    rec.tensors = {"encoder_weights": rec.tensors["encoder_weights"]}

    def run():
        w = np.stack([rec.step(n)["encoder_weights"] for n in range(rec.steps)])
        drift = np.sqrt(((w - w[0]) ** 2).sum(-1))
        unit = w / np.linalg.norm(w, axis=-1, keepdims=True)
        d = w.shape[1]
        return drift, ((unit.sum(1) ** 2).sum(-1) - (unit ** 2).sum((1, 2))) / (d * (d - 1))
    return timed(run, repeats)


def upload_to_moto(path: Path):
    """Start moto's S3 server on 127.0.0.1 (a process of its own), point the AWS variables at it,
    upload the recording."""
    from bench_storage import start_moto

    from capture.store import ObjectStore, open_store

    server, _ = start_moto("bench")
    src, url = open_store(path), "s3://bench/recording"
    t = time.perf_counter()
    ObjectStore(url).put_many((key, src.get(key)) for key, _ in src.list())
    return server, url, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--path", type=Path, help="an existing recording with encoder_weights (skips recording one)")
    ap.add_argument("--no-bucket", action="store_true", help="disk only")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="acc-bench-dask-"))
    server = None
    try:
        path = args.path
        if path is None:
            path = tmp / "long"
            subprocess.run(CLI + ["run", "--steps", str(args.steps), "--keys", "encoder_weights", "--out", str(path)],
                           check=True, stdout=subprocess.DEVNULL)
        from capture import Recording

        rec = Recording.open(path)
        size = sum(n for _, n in rec.store.list("tensors/encoder_weights"))
        sources = {"disk": str(path)}
        if not args.no_bucket:
            server, url, upload = upload_to_moto(path)
            sources["bucket (moto, 127.0.0.1)"] = url
        rows = [("one process, Recording.step + numpy", "disk", one_process(str(path), args.repeats))]
        for name, location in sources.items():
            for n in workers:
                rows.append((f"LocalCluster, {n} worker{'s' if n > 1 else ''}", name, on_cluster(location, n, args.repeats)))
    finally:
        if server is not None:
            from bench_storage import stop_moto

            stop_moto(server)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
          f"{rec.steps} steps of encoder_weights [64, 784] float32 ({size / 1e6:.0f} MB compressed in "
          f"{-(-rec.steps // 20)} shards); median of {args.repeats}")
    if not args.no_bucket:
        print(f"upload of the recording to the bucket: {upload:.1f} s")
    print("| how | from | seconds (median) | best | steps per second (median) |")
    print("| --- | --- | --- | --- | --- |")
    for how, where, (median, best) in rows:
        print(f"| {how} | {where} | {median:.2f} | {best:.2f} | {rec.steps / median:.0f} |")


if __name__ == "__main__":
    main()
