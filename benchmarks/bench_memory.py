"""Memory over a long recording: resident set size every N steps (it must not grow with the step count).

    python benchmarks/bench_memory.py [--steps 25000] [--full-every 1000]

Full tensors every `--full-every` steps keep the disk use of a 25,000-step run reasonable; the
per-step path (captures, summaries, queue, writer) is the same for every step.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25000)
    ap.add_argument("--full-every", type=int, default=1000)
    ap.add_argument("--every", type=int, default=2500, help="report every this many steps")
    args = ap.parse_args()

    from acc.conditions import make_config
    from acc.recipe import build_run
    from acc.step_inspector import StepTensorKey
    from capture import record
    from capture.runner import train_and_record

    tmp = Path(tempfile.mkdtemp(prefix="acc-mem-"))
    try:
        cfg = make_config("bcl-slow")
        run = build_run(cfg, seed=0)
        session = record(tmp / "rec", StepTensorKey, config=cfg.to_dict(), seed=0, full_every=args.full_every,
                         expect_steps=args.steps)
        writer = getattr(session._writer, "process", None)  # the writer process, if it is one
        print("| steps | RSS MB, training | RSS MB, writer | s |")
        print("| --- | --- | --- | --- |")
        t0 = time.perf_counter()
        done = 0
        while done < args.steps:
            n = min(args.every, args.steps - done)
            train_and_record(run, session, n, 20)
            done += n
            theirs = f"{rss_mb(writer.pid):.0f}" if writer else "-"
            print(f"| {done} | {rss_mb():.0f} | {theirs} | {time.perf_counter() - t0:.0f} |", flush=True)
        session.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
