"""Recording benchmark: prints each figure of the speed targets as a table (medians).

    python benchmarks/bench_record.py [--steps 300] [--repeats 3] [--rounds 6] [--dir recordings]
    python benchmarks/bench_record.py --steady-only [--threads N] [--chunk-steps 20]

Wall-time ratios are taken in one run with the sides interleaved (A B C, A B C, ...), each side a
fresh process, so start-up (imports, MNIST) is counted on every side alike. The steady-state figures
time the training loop alone, the sides taking turns within one process (`--rounds`). Run it on a
quiet machine: other processes on the two cores distort it. Recordings go to a temporary folder in
`--dir` (`recordings/`, where `run` records): a file system's costs differ from folder to folder.
"""

from __future__ import annotations

import argparse
import gc
import itertools
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


def steady(steps: int, rounds: int, tmp: Path, threads: int | None = None,
           chunk: int = 20) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """ms per step of the loop alone, in steady state, for each side in each of `rounds` rounds: plain
    training, training with every capture copied into a ring's rows as a recording copies them (the
    loop's side of any policy, nothing written), and recording every key, with
    `--full-every 1000`, and with `--keys loss`; and plain training on the threads a recording
    leaves it while its writer works (capture.runner.thread_counts). Every side is built and warmed
    up first (two chunks), then the sides take turns, `steps` steps each per round, so a slow spell
    of the machine falls on every side alike; each round begins one side later, so a drift within
    rounds does too. A recording side's time counts the writing of what is still queued at the end
    of its turn. `threads`: torch threads of the recording sides (None: what `run` uses).
    Returns each side's ms per step in each round, and the CPU ms per step of the training process
    and of the writer process (0 for none) in each round."""
    import torch

    from acc.conditions import make_config
    from acc.recipe import InspectorHooks, build_run
    from acc.step_inspector import StepInspector, StepTensorKey
    from capture import record
    from capture.runner import thread_counts, train_and_record

    cfg = make_config("bcl-slow")
    threads_plain = torch.get_num_threads()
    sides = {}

    plain = build_run(cfg, seed=0)
    plain.trainer.train(2 * chunk)
    sides["plain"] = lambda: plain.trainer.train(steps)

    fewer = build_run(cfg, seed=0)  # what recording leaves training while its writer works
    fewer.trainer.train(2 * chunk)

    def plain_fewer() -> None:
        torch.set_num_threads(threads or thread_counts(threads_plain)[0])
        fewer.trainer.train(steps)

    sides["plain, one thread fewer"] = plain_fewer

    captured = build_run(cfg, seed=0)  # the loop's side of recording alone: each capture copied into a ring's row
    ins = StepInspector()
    hooks = InspectorHooks(captured, ins)
    captured.trainer.train(1, hooks.metrics_fn)  # (one step's captures give the rows' shapes)
    [(_, first)] = ins.drain()
    rows = itertools.cycle([{k: torch.empty_like(v) for k, v in first.items()} for _ in range(3 * chunk)])  # (a ring of 3 blocks)

    def into_next_row() -> None:
        ins.take()
        ins.into(next(rows))

    hooks.commit = into_next_row
    ins.into(next(rows))

    def captures() -> None:
        captured.trainer.train(steps, hooks.metrics_fn)

    captures()
    sides["captures"] = captures

    sessions, writers = [], {}
    for name, policy in (("every key", {}), ("full every 1000", {"full_every": 1000}),
                         ("keys loss", {"only": ["loss"]})):
        run = build_run(cfg, seed=0)
        session = record(tmp / name.replace(" ", "-"), StepTensorKey, config=cfg.to_dict(), seed=0,
                         expect_steps=(rounds * steps + 2 * chunk), force=True, chunk_steps=chunk, **policy)
        sessions.append(session)
        writers[name] = getattr(session._writer, "process", None)  # (None: a writer thread)

        def recording(run=run, session=session) -> None:
            train_and_record(run, session, steps, chunk, threads=threads)
            session.sync()

        train_and_record(run, session, 2 * chunk, chunk, threads=threads)
        session.sync()
        sides[name] = recording

    gc.freeze()  # (as `run` does: start-up's objects out of the garbage collector's full passes)
    out: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}  # (training process, writer process)
    try:
        names = list(sides)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # (each round begins one side later)
                side = sides[name]
                torch.set_num_threads(threads_plain)
                writer = writers.get(name)
                c, w, t = time.process_time(), cpu_seconds(writer), time.perf_counter()
                side()
                out[name].append((time.perf_counter() - t) / steps * 1e3)
                cpu[name].append(((time.process_time() - c) / steps * 1e3, (cpu_seconds(writer) - w) / steps * 1e3))
    finally:
        torch.set_num_threads(threads_plain)
        hooks.remove()
        for session in sessions:
            session.close()
    return out, cpu


def cpu_seconds(process) -> float:
    """CPU seconds a child process has used so far (0 for none)."""
    if process is None:
        return 0.0
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steady_median(args, tmp: Path) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Each side's median ms per step over the rounds and the median over rounds of its ratio to
    plain training in the same round; and its median CPU ms per step, training and writer process."""
    runs, cpu = steady(args.steady_steps, args.rounds, tmp, args.threads, args.chunk_steps)
    plain = runs["plain"]
    ms = {k: (statistics.median(v), statistics.median(x / p for x, p in zip(v, plain))) for k, v in runs.items()}
    return ms, {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in cpu.items()}


def file_writes(folder: Path, mb: int = 4, times: int = 25, small: int = 200) -> dict[str, float]:
    """This machine's file system, as the writer uses it, in `folder` (left full): new files written
    through the page cache and as the writer writes them (`DirStore.put`: past the page cache, for
    large ones), a file rewritten in place (MB/s each), and the CPU microseconds of one new small file
    put (6 KB, as a summary file was written whole each chunk before they were written in place)."""
    from capture.store import DirStore

    store, data = DirStore(folder), os.urandom(mb << 20)
    (folder / "probe").write_bytes(data)
    out = {}
    t = time.perf_counter()
    for _ in range(times):
        fd = os.open(folder / "probe", os.O_WRONLY)
        os.pwrite(fd, data, 0)
        os.close(fd)
    out["in place"] = mb * times / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(times):
        (folder / f"cached{i}").write_bytes(data)
    out["new, page cache"] = mb * times / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(times):
        store.put(f"direct{i}", data)
    out["new, O_DIRECT"] = mb * times / (time.perf_counter() - t)
    little = os.urandom(6000)
    t = time.process_time()
    for i in range(small):
        store.put(f"small{i}", little)
    out["small file, us of CPU"] = (time.process_time() - t) / small * 1e6
    return out


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
    ap.add_argument("--steady-steps", type=int, default=1000,
                    help="steps of each side's turn in steady state (long enough that what is left to write at a turn's end, a chunk or two, is about 1%% of it)")
    ap.add_argument("--rounds", type=int, default=6, help="turns of each side in steady state")
    ap.add_argument("--steady-only", action="store_true",
                    help="only the steady-state table (e.g. under `taskset -c 0` for one core)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while recording, throughout [default: as `run`]")
    ap.add_argument("--chunk-steps", type=int, default=20, help="steps a chunk, as `run --chunk-steps`")
    ap.add_argument("--dir", type=Path, default=Path("recordings"),
                    help="where the temporary recordings go [default: recordings/, where `run` records]")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.steady_only:
        tmp = Path(tempfile.mkdtemp(prefix="acc-bench-", dir=args.dir))
        try:
            print_steady(*steady_median(args, tmp), args)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp = Path(tempfile.mkdtemp(prefix="acc-bench-", dir=args.dir))
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
        loop, cpu = steady_median(args, tmp)
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
    print_steady(loop, cpu, args)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...] = ("figure", "measured", "ratio", "target")) -> None:
    w = max(len(r[0]) for r in [*rows, header])
    print(f"| {header[0]:<{w}} | " + " | ".join(header[1:]) + " |")
    print(f"| {'-' * w} | " + " | ".join("---" for _ in header[1:]) + " |")
    for r in rows:
        print(f"| {r[0]:<{w}} | " + " | ".join(r[1:]) + " |")


def print_steady(loop: dict[str, tuple[float, float]], cpu: dict[str, tuple[float, float]], args) -> None:
    import torch

    from capture.writer import VARIABLE

    writer = os.environ.get(VARIABLE) or "process"
    print(f"\nsteady state, turns of {args.steady_steps} steps after a warm-up, ms per step, median of {args.rounds} rounds (ratios: the median of each round's); {len(os.sched_getaffinity(0))} "
          f"cores usable, {torch.get_num_threads()} torch threads plain, {args.threads or 'as run'} recording; "
          f"chunks of {args.chunk_steps} steps; writer: {writer}")
    plain = loop["plain"][0]

    def row(figure: str, side: str, target: str) -> tuple[str, str, str, str]:
        ms, ratio = loop[side]
        return figure, f"{ms:.2f} / {plain:.2f}", f"{ratio:.2f}", target

    table([
        row("recording every key, lossless / plain", "every key", "<= 2.0"),
        row("--full-every 1000 / plain", "full every 1000", "<= 1.3"),
        row("--keys loss / plain", "keys loss", "<= 1.2"),
        row("training + captures copied into a ring, nothing written / plain", "captures", "-"),
        row("plain training on the threads recording leaves it / plain", "plain, one thread fewer", "-"),
    ])
    print("\nCPU ms per step, median over the rounds (the training process counts every thread of it)")
    table([(name, f"{a:.2f}", f"{b:.2f}" if b else "-") for name, (a, b) in cpu.items()],
          ("side", "training process", "writer process"))
    probe = Path(tempfile.mkdtemp(prefix="acc-probe-", dir=args.dir))
    try:
        fs = file_writes(probe)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    print(f"\nfile system ({args.dir}): new files written at {fs['new, page cache']:.0f} MB/s through the page cache, "
          f"{fs['new, O_DIRECT']:.0f} MB/s past it (the writer's large files); a file rewritten in place at "
          f"{fs['in place']:.0f} MB/s; a new 6 KB file {fs['small file, us of CPU']:.0f} us of CPU")

if __name__ == "__main__":
    main()
