"""Analyse a long recording in parallel with xarray and dask.distributed.

    python examples/dask_analysis.py RECORDING [--workers 2] [--scheduler tcp://scheduler:8786]

RECORDING is a directory, a zip file from `acc-capture pack`, or a URL (`s3://bucket/prefix`, with
the AWS_* variables set). `Recording.to_xarray()` gives every completed step as one lazy Dataset whose
dask chunks are the recording's files (20 steps of a large tensor each), so each task reads one
file, wherever the workers run. Two statistics over every step, from the stored weights:

- each feature's drift: the distance of its weight row from where it started, ||W_t[f] - W_0[f]||;
- the mean off-diagonal cosine similarity of the weight rows, recomputed from the weights (the
  recorder's own `summary_weight_cosine_offdiag` is the same number, computed as it recorded).

Without --scheduler it starts a LocalCluster of --workers processes on this machine; with it, the
same code runs on that cluster (the workers then read the recording themselves: give them a URL).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr

from capture import Recording


def statistics(ds: xr.Dataset, key: str = "encoder_weights") -> xr.Dataset:
    """Lazy: each feature's weight drift [step, feature] and the mean off-diagonal cosine [step]."""
    w = ds[key].astype(np.float32)  # [step, feature, pixel]
    rows, inputs = w.dims[1], w.dims[2]
    drift = np.sqrt(((w - w.isel(step=0)) ** 2).sum(inputs))
    unit = w / np.sqrt((w ** 2).sum(inputs))  # each row scaled to length 1
    # the cosine matrix's entries sum to |sum of the unit rows|^2 and its diagonal to sum of |row|^2 (= d):
    # no d x d matrix is formed
    d = w.sizes[rows]
    every_pair = (unit.sum(rows) ** 2).sum(inputs)
    diagonal = (unit ** 2).sum((rows, inputs))
    offdiag = (every_pair - diagonal) / (d * (d - 1))
    return xr.Dataset({"drift": drift, "cosine_offdiag": offdiag})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording")
    ap.add_argument("--key", default="encoder_weights", help="a [step, feature, input] weight tensor")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    ap.add_argument("--scheduler", help="address of a running dask scheduler, e.g. tcp://scheduler:8786")
    args = ap.parse_args()

    from dask.distributed import Client, LocalCluster

    from capture.codecs import use_fast_gzip

    rec = Recording.open(args.recording)
    ds = rec.to_xarray()
    print(f"{rec.path}: {rec.steps} steps, {args.key} {dict(ds[args.key].sizes)} in {ds[args.key].data.npartitions} chunks")
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        client = Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
    with client:
        client.run(use_fast_gzip)  # the workers decode gzip with ISA-L, as the reader does
        t = time.perf_counter()
        result = client.compute(statistics(ds, args.key)).result()
        took = time.perf_counter() - t
    drift, cosine = result["drift"], result["cosine_offdiag"]
    last = drift.isel(step=-1)
    print(f"computed over {rec.steps} steps in {took:.2f} s")
    print(f"weight drift at the last step: mean {float(last.mean()):.4f}, max {float(last.max()):.4f} "
          f"(feature {int(last.values.argmax())}), min {float(last.min()):.4f} (feature {int(last.values.argmin())})")
    print(f"mean off-diagonal cosine: step 0 {float(cosine[0]):.4f} -> step {rec.steps - 1} {float(cosine[-1]):.4f}")
    if "summary_weight_cosine_offdiag" in ds and args.key == "encoder_weights":
        recorded = ds["summary_weight_cosine_offdiag"].values
        print(f"largest difference from the recorded summary: {float(np.abs(cosine.values - recorded).max()):.2e}")


if __name__ == "__main__":
    main()
