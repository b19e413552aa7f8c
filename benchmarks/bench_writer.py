"""Writer benchmark: where the writer's CPU goes, per step, on a real recording's steps.

    python benchmarks/bench_writer.py [RECORDING] [--chunks 15] [--keys loss,...] [--dir recordings]

RECORDING defaults to a fresh 60-step bcl-slow run (made here). Its steps 0-59, three chunks of 20,
are written again and again by `Recorder.write` in this process, as the writer process writes them
(its two encoding threads included), into a new recording in a temporary folder of `--dir`; each phase's CPU
time (every thread's) is summed and given per step.
"""

from __future__ import annotations

import argparse
import collections
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zarr

from acc.step_inspector import StepTensorKey
from capture import codecs
from capture import format as fmt
from capture import recorder as rec
from capture.store import DirStore

PHASES = {  # (module, function): what it does
    (codecs, "encode"): "chunks encoded (each large tensor's codec: gzip, blosc or none)",
    (DirStore, "put"): "whole files written (a new file each, renamed into place)",
    (DirStore, "write_at"): "rows written in place (small tensors, summaries)",
    (fmt, "summarize"): "summaries (norms summed in float64, the vocabulary's own)",
    (fmt, "shard_parts"): "shard files assembled from their chunks and index",
}


def timed(cpu: dict[str, float]) -> None:
    """Wrap each phase so that its CPU time on whichever thread runs it adds up in `cpu`."""
    for (owner, name), label in PHASES.items():
        def wrapper(*args, _f=getattr(owner, name), _label=label, **kwargs):
            t = time.thread_time()
            try:
                return _f(*args, **kwargs)
            finally:
                cpu[_label] += time.thread_time() - t
        setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", nargs="?")
    ap.add_argument("--chunks", type=int, default=15, help="chunks of 20 steps written and timed")
    ap.add_argument("--keys", help="store only these keys (as `run --keys`); summaries of every key either way")
    ap.add_argument("--dir", type=Path, default=Path("recordings"),
                    help="where the temporary recordings go [default: recordings/, where `run` records]")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="acc-writer-", dir=args.dir))
    try:
        source = Path(args.recording) if args.recording else tmp / "source"
        if not args.recording:
            subprocess.run([sys.executable, "-c", "from capture.cli import main; main()", "run", "--steps", "60",
                            "--out", str(source)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tensors = zarr.open_group(str(source), mode="r")["tensors"]
        chunks = [{k: tensors[k][20 * c:20 * c + 20] for k in tensors.array_keys()} for c in range(3)]
        state = next((source / fmt.STATE_GROUP).glob("*.pt")).read_bytes()  # (its training state, with each chunk)
        policy = rec.Policy(args.keys.split(",") if args.keys else None)
        recorder = rec.Recorder.create(tmp / "out", StepTensorKey, policy, 20 * (args.chunks + 1))
        recorder.write(0, chunks[0], state)  # (the arrays are made at the first write)
        cpu: dict[str, float] = collections.defaultdict(float)
        timed(cpu)
        steps = 20 * args.chunks
        wall, total, faults = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(1, args.chunks + 1):
            recorder.write(20 * i, chunks[i % 3], state)
        wall, total = time.perf_counter() - wall, time.process_time() - total
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        recorder.finish("complete")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{steps} steps written ({args.keys or 'every key'}): {wall / steps * 1e3:.2f} ms a step, "
          f"{total / steps * 1e3:.2f} ms of CPU a step in all, {faults / steps:.0f} page faults a step (fresh pages of memory)")
    print("| phase | CPU ms a step |\n| --- | --- |")
    for label, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(f"| {label} | {seconds / steps * 1e3:.2f} |")
    print(f"| the rest (Python, chunking) | {(total - sum(cpu.values())) / steps * 1e3:.2f} |")


if __name__ == "__main__":
    main()
