"""`acc-capture diff` benchmark: two identical recordings (same condition, seed and settings), compared.

    python benchmarks/bench_diff.py [--steps 1000] [--repeats 3] [--dir DIR]

Records the two runs with `acc-capture run` (into DIR, reused when already there), then prints the
median time of `diff()` in process, bit for bit and with `whole`; the same with every file decoded
(as if no file of one were byte-equal to the other's); and the wall time of the command, start-up
included. Run it on a quiet machine: other processes on the two cores distort it.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


def record(path: Path, steps: int) -> None:
    from capture import Recording, RecordingError

    try:
        if Recording.open(path).steps == steps:
            return
    except RecordingError:
        pass
    subprocess.run([*CLI, "run", "--steps", str(steps), "--seed", "0", "--out", str(path), "--force"],
                   check=True, stdout=subprocess.DEVNULL)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the two recordings go [default: a temporary folder]")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="bench-diff-"))
    a, b = base / "a", base / "b"
    for path in (a, b):
        t = time.perf_counter()
        record(path, args.steps)
        print(f"recorded {path} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)

    from capture import Recording

    diff_module = importlib.import_module("capture.diff")  # the module (capture.diff is the function)
    ra, rb = Recording.open(a), Recording.open(b)
    size = ra.size_bytes() / 1e6
    assert diff_module.diff(ra, rb).identical, "the two recordings should be identical"
    rows = [
        ("diff, bit for bit", median_time(lambda: diff_module.diff(ra, rb), args.repeats)),
        ("diff --all", median_time(lambda: diff_module.diff(ra, rb, whole=True), args.repeats)),
    ]
    same_file = diff_module._Rows.same_file
    diff_module._Rows.same_file = lambda self, other, index: False  # no file equal to another: decode all
    try:
        rows.append(("diff, every file decoded", median_time(lambda: diff_module.diff(ra, rb), args.repeats)))
    finally:
        diff_module._Rows.same_file = same_file

    def command() -> None:
        proc = subprocess.run([*CLI, "diff", str(a), str(b)], stdout=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.returncode
    rows.append(("acc-capture diff (wall, start-up included)", median_time(command, args.repeats)))
    print(f"two identical {args.steps}-step bcl-slow recordings, {size:.0f} MB each; median of {args.repeats}")
    for name, seconds in rows:
        print(f"  {name:<44} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
