"""Recording benchmark: prints each figure of the speed targets as a table (median of repeats).

    python benchmarks/bench_record.py [--steps 300] [--repeats 3]

Wall-time ratios are taken in one run with the sides interleaved (A B C, A B C, ...), each side a
fresh process, so start-up (imports, MNIST) is counted on every side alike. The in-process figures
time the training loop alone. Run it on a quiet machine: other processes on the two cores distort it.
"""

from __future__ import annotations

import argparse
import json
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

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def steady(steps: int, tmp: Path, threads: int | None = None, chunk: int = 20) -> dict[str, float]:
    """ms per step of the loop alone, in steady state (after a warm-up of two chunks; the time to
    write what is still queued at the end counted in): plain training, training with captures
    (nothing written), and recording every key, with `--full-every 1000`, and with `--keys loss`.
    `threads`: torch threads of the recording sides (None: what `run` uses)."""
    from acc.conditions import make_config
    from acc.recipe import InspectorHooks, build_run
    from acc.step_inspector import StepInspector, StepTensorKey
    from capture import record
    from capture.runner import train_and_record

    cfg = make_config("bcl-slow")
    out = {}
    run = build_run(cfg, seed=0)
    run.trainer.train(40)
    t = time.perf_counter()
    run.trainer.train(steps)
    out["plain"] = (time.perf_counter() - t) / steps * 1e3

    run = build_run(cfg, seed=0)
    ins = StepInspector()
    hooks = InspectorHooks(run, ins)
    run.trainer.train(40, hooks.metrics_fn)
    ins.drain()
    t = time.perf_counter()
    for _ in range(steps // 20):
        run.trainer.train(20, hooks.metrics_fn)
        ins.drain()
    out["captures"] = (time.perf_counter() - t) / (steps // 20 * 20) * 1e3
    hooks.remove()

    for name, policy in (("every key", {}), ("full every 1000", {"full_every": 1000}),
                         ("keys loss", {"only": ["loss"]})):
        run = build_run(cfg, seed=0)
        session = record(tmp / name.replace(" ", "-"), StepTensorKey, config=cfg.to_dict(), seed=0,
                         expect_steps=steps + 2 * chunk, force=True, chunk_steps=chunk, **policy)
        train_and_record(run, session, 2 * chunk, chunk, threads=threads)
        session.sync()
        t = time.perf_counter()
        train_and_record(run, session, steps, chunk, threads=threads)
        session.sync()
        out[name] = (time.perf_counter() - t) / steps * 1e3
        session.close()
    return out


def steady_median(args, tmp: Path) -> dict[str, float]:
    """steady() `--repeats` times (each one every side in turn); the median of each side."""
    runs = [steady(args.steady_steps, tmp, args.threads, args.chunk_steps) for _ in range(args.repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def read_step(path: Path, repeats: int = 30) -> float:
    from capture import Recording

    rec = Recording.open(path)
    rec.step(0)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        rec.step((i * 7) % rec.steps)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def seed_json(path: Path) -> tuple[float, float]:
    """The original plan's transport: one step serialised to JSON nested lists (MB, ms)."""
    from capture import Recording

    step = Recording.open(path).step(1)
    t = time.perf_counter()
    text = json.dumps({k: v.tolist() for k, v in step.items()})
    return len(text) / 1e6, (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steady-steps", type=int, default=400, help="steps timed in steady state")
    ap.add_argument("--steady-only", action="store_true",
                    help="only the steady-state table (e.g. under `taskset -c 0` for one core)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while recording [default: as `run`]")
    ap.add_argument("--chunk-steps", type=int, default=20, help="steps a chunk, as `run --chunk-steps`")
    args = ap.parse_args()
    if args.steady_only:
        tmp = Path(tempfile.mkdtemp(prefix="acc-bench-"))
        try:
            print_steady(steady(args.steady_steps, tmp, args.threads, args.chunk_steps), args)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp = Path(tempfile.mkdtemp(prefix="acc-bench-"))
    try:
        sides = {
            "full": lambda i: CLI + ["run", "--steps", str(args.steps), "--out", str(tmp / f"full{i}")],
            "loss": lambda i: CLI + ["run", "--steps", str(args.steps), "--out", str(tmp / f"loss{i}"), "--keys", "loss"],
            "half": lambda i: CLI + ["run", "--steps", str(args.steps), "--out", str(tmp / f"half{i}"), "--dtype", "float16"],
            "plain": lambda i: [sys.executable, str(HERE / "plain_train.py"), str(args.steps)],
        }
        times = {k: [] for k in sides}
        for i in range(args.repeats):
            for name, cmd in sides.items():
                times[name].append(wall(cmd(i)))
        med = {k: statistics.median(v) for k, v in times.items()}

        from capture import Recording

        rec = Recording.open(tmp / "full0")
        def tensor_bytes(path: Path) -> int:
            return sum(f.stat().st_size for f in (path / "tensors").rglob("*") if f.is_file())

        on_disk, on_disk_half = tensor_bytes(tmp / "full0"), tensor_bytes(tmp / "half0")
        raw = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in rec.tensors.values())
        loop = steady_median(args, tmp)
        step_ms = read_step(tmp / "full0")
        json_mb, json_ms = seed_json(tmp / "full0")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}; {args.steps} steps, median of {args.repeats}")
    rows = [
        ("wall: run, every key / run --keys loss", f"{med['full']:.2f} s / {med['loss']:.2f} s",
         f"{med['full'] / med['loss']:.2f}", "<= 1.5"),
        ("wall: run, every key / plain training", f"{med['full']:.2f} s / {med['plain']:.2f} s",
         f"{med['full'] / med['plain']:.2f}", "<= 1.4"),
        ("bytes on disk per step / raw float32 bytes per step (tensors/)",
         f"{on_disk / args.steps / 1e6:.3f} MB / {raw / 1e6:.3f} MB", f"{on_disk / args.steps / raw:.2f}", "<= 0.6"),
        ("the same with --dtype float16 (lossy, optional)",
         f"{on_disk_half / args.steps / 1e6:.3f} MB / {raw / 1e6:.3f} MB", f"{on_disk_half / args.steps / raw:.2f}", "-"),
        ("wall: run --dtype float16 / plain training", f"{med['half']:.2f} s / {med['plain']:.2f} s",
         f"{med['half'] / med['plain']:.2f}", "-"),
        ("Recording.step(n), all keys", f"{step_ms:.1f} ms", "-", "<= 10 ms"),
        ("original plan: one step as JSON nested lists", f"{json_mb:.1f} MB in {json_ms:.0f} ms", "-", "-"),
    ]
    table(rows)
    print_steady(loop, args)


def table(rows: list[tuple[str, str, str, str]]) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"| {'figure':<{w}} | measured | ratio | target |")
    print(f"| {'-' * w} | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]:<{w}} | {r[1]} | {r[2]} | {r[3]} |")


def print_steady(loop: dict[str, float], args) -> None:
    import torch

    from capture.writer import VARIABLE

    writer = os.environ.get(VARIABLE) or "process"
    print(f"\nsteady state, {args.steady_steps} steps after a warm-up, ms per step, median of {args.repeats}; {len(os.sched_getaffinity(0))} "
          f"cores usable, {torch.get_num_threads()} torch threads plain, {args.threads or 'as run'} recording; "
          f"chunks of {args.chunk_steps} steps; writer: {writer}")
    plain = loop["plain"]
    table([
        ("recording every key, lossless / plain", f"{loop['every key']:.2f} / {plain:.2f}", f"{loop['every key'] / plain:.2f}", "<= 2.0"),
        ("--full-every 1000 / plain", f"{loop['full every 1000']:.2f} / {plain:.2f}", f"{loop['full every 1000'] / plain:.2f}", "<= 1.3"),
        ("--keys loss / plain", f"{loop['keys loss']:.2f} / {plain:.2f}", f"{loop['keys loss'] / plain:.2f}", "<= 1.2"),
        ("training + captures, nothing written / plain", f"{loop['captures']:.2f} / {plain:.2f}", f"{loop['captures'] / plain:.2f}", "-"),
    ])


if __name__ == "__main__":
    main()
