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
import sys
import time

import numpy as np
import xarray as xr

from capture import Recording


def statistics(ds: xr.Dataset, key: str = "encoder_weights") -> xr.Dataset:
    """Lazy: each feature's weight drift [step, feature] and the mean off-diagonal cosine [step].

    One numpy function per dask chunk (`xr.apply_ufunc`), so a file of the recording costs two
    tasks (read it, compute on it) rather than one per elementary operation: on a small machine,
    dask.distributed's cost per task is what an analysis like this one is made of otherwise."""
    w = ds[key]  # [step, feature, input]
    rows, inputs = w.dims[1], w.dims[2]
    drift, offdiag = xr.apply_ufunc(
        _drift_and_cosine, w, w.isel(step=0),
        input_core_dims=[[rows, inputs], [rows, inputs]], output_core_dims=[[rows], []],
        dask="parallelized", output_dtypes=[np.float32, np.float32])
    return xr.Dataset({"drift": drift, "cosine_offdiag": offdiag})


def _drift_and_cosine(w: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For weights [steps, d, n] and the first step's [d, n]: ||W_t[f] - W_0[f]|| [steps, d], and the
    mean off-diagonal cosine similarity of the rows of each W_t [steps]."""
    w = w.astype(np.float32)
    drift = np.sqrt(((w - first) ** 2).sum(-1))
    unit = w / np.sqrt((w ** 2).sum(-1, keepdims=True))  # each row scaled to length 1
    # the cosine matrix's entries sum to |sum of the unit rows|^2 and its diagonal to sum of |row|^2:
    # no d x d matrix is formed
    d = w.shape[-2]
    offdiag = ((unit.sum(-2) ** 2).sum(-1) - (unit ** 2).sum((-2, -1))) / (d * (d - 1))
    return drift.astype(np.float32), offdiag.astype(np.float32)


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
    weights = [k for k in rec.keys if ds[k].ndim == 3]
    if args.key not in rec.keys or ds[args.key].ndim != 3:
        sys.exit(f"error: {args.recording} has no [step, row, column] tensor {args.key!r}; "
                 f"pass --key, one of: {', '.join(weights) or 'none'}")
    print(f"{rec.path}: {rec.steps} steps, {args.key} {dict(ds[args.key].sizes)} in {ds[args.key].data.npartitions} chunks")
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
    with Client(args.scheduler or cluster) as client:
        client.run(use_fast_gzip)  # the workers decode gzip with ISA-L, as the reader does
        t = time.perf_counter()
        result = client.compute(statistics(ds, args.key)).result()
        took = time.perf_counter() - t
    if cluster is not None:
        cluster.close()
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
