"""Storage benchmark: recording to a bucket against recording to local disk, and the upload libraries.

    python benchmarks/bench_storage.py [--steps 200] [--repeats 3]

The bucket is moto's S3 server on 127.0.0.1, in a process of its own (a real S3 API, but a Python
one: its own CPU time is part of every bucket figure, and on a small machine it takes a core from
training). Three tables:

- wall time of `acc-capture run --steps N` to a local directory and to `s3://...`, sides interleaved,
  each a fresh process, with the CPU time of that process and of moto's server meanwhile;
- the training loop alone (ms per step, in a fresh process each time, everything written when it
  ends), recording to each: uploads run on the background writer, behind training;
- uploading one recording's files with obstore (what capture.store uses) and with s3fs (fsspec),
  16 at a time (seconds, and the CPU time of this process, the client), and one small PUT and one
  ranged GET at a time (latency).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


MOTO = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # (it logs every request otherwise)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%d" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the parent closes it (or exits)
server.stop()
"""


def start_moto(bucket: str = "bench") -> tuple[subprocess.Popen, str]:
    """moto's S3 server on 127.0.0.1 in a child process, one bucket, and the AWS variables pointing at it."""
    server = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    endpoint = server.stdout.readline().strip()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return server, endpoint


def stop_moto(server: subprocess.Popen) -> None:
    server.stdin.close()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wall(cmd: list[str], server: subprocess.Popen) -> tuple[float, float, float]:
    """Seconds of the command, its CPU seconds, and the CPU seconds moto's server used meanwhile."""
    r, m, t = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_seconds(server.pid), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, after.ru_utime + after.ru_stime - r.ru_utime - r.ru_stime, cpu_seconds(server.pid) - m


def loop_ms(out: str | Path, steps: int) -> float:
    """ms per step of the training loop recording to `out`, in a fresh process (see loop_here)."""
    proc = subprocess.run([sys.executable, __file__, "--loop", str(out), "--steps", str(steps)], check=True,
                          capture_output=True, text=True)
    return float(proc.stdout.split()[-1])


def loop_here(out: str | Path, steps: int) -> float:
    """ms per step of the training loop recording to `out`, everything written when it returns."""
    from acc.conditions import make_config
    from acc.recipe import build_run
    from acc.step_inspector import StepTensorKey
    from capture import record
    from capture.runner import train_and_record

    cfg = make_config("bcl-slow")
    run = build_run(cfg, seed=0)
    session = record(out, StepTensorKey, config=cfg.to_dict(), seed=0, expect_steps=steps, force=True)
    t = time.perf_counter()
    train_and_record(run, session, steps, 20)
    session.sync()
    took = (time.perf_counter() - t) / steps * 1e3
    session.close()
    return took


def uploads(path: Path, endpoint: str, repeats: int) -> list[tuple[str, str]]:
    import obstore
    import s3fs
    from obstore.store import S3Store

    files = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    total = sum(map(len, files.values())) / 1e6
    fs = s3fs.S3FileSystem(key="bench", secret="bench", endpoint_url=endpoint, client_kwargs={"region_name": "us-east-1"})
    store = S3Store("bench", config={"access_key_id": "bench", "secret_access_key": "bench", "region": "us-east-1",
                                     "endpoint": endpoint}, client_options={"allow_http": True})

    def obstore_16(i):
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda kv: obstore.put(store, f"obs{i}/{kv[0]}", kv[1]), files.items()))

    def obstore_async(i):
        async def go():
            await asyncio.gather(*(obstore.put_async(store, f"obsa{i}/{k}", v) for k, v in files.items()))
        asyncio.run(go())

    def s3fs_batch(i):
        fs.pipe({f"bench/s3fs{i}/{k}": v for k, v in files.items()})

    def s3fs_16(i):
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda kv: fs.pipe_file(f"bench/s3fst{i}/{kv[0]}", kv[1]), files.items()))

    def median(fn) -> tuple[float, float]:
        """Median seconds and median CPU seconds of this process (the client: moto is another process)."""
        runs = [timeit(fn, i) for i in range(repeats)]
        return statistics.median(t for t, _ in runs), statistics.median(c for _, c in runs)

    def timeit(fn, i) -> tuple[float, float]:
        c, t = time.process_time(), time.perf_counter()
        fn(i)
        return time.perf_counter() - t, time.process_time() - c

    def one_at_a_time(fn, n: int = 100) -> float:
        t = time.perf_counter()
        for j in range(n):
            fn(j)
        return (time.perf_counter() - t) / n * 1e3

    rows = [(f"upload {len(files)} files, {total:.0f} MB: {name}",
             f"{(s := median(fn))[0]:.2f} s ({total / s[0]:.0f} MB/s), client CPU {s[1]:.2f} s")
            for name, fn in (("obstore, 16 threads", obstore_16), ("obstore, asyncio", obstore_async),
                             ("s3fs pipe(dict)", s3fs_batch), ("s3fs, 16 threads", s3fs_16))]
    rows += [
        ("one 100-byte PUT: obstore", f"{one_at_a_time(lambda j: obstore.put(store, f'small/{j}', b'x' * 100)):.1f} ms"),
        ("one 100-byte PUT: s3fs", f"{one_at_a_time(lambda j: fs.pipe_file(f'bench/small2/{j}', b'x' * 100)):.1f} ms"),
        ("one ranged GET: obstore", f"{one_at_a_time(lambda j: obstore.get_range(store, 'small/1', start=10, end=20)):.1f} ms"),
        ("one ranged GET: s3fs", f"{one_at_a_time(lambda j: fs.cat_file('bench/small2/1', start=10, end=20)):.1f} ms"),
    ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop", help=argparse.SUPPRESS)  # (the child process of loop_ms)
    args = ap.parse_args()
    if args.loop:
        print(loop_here(args.loop, args.steps))
        return
    tmp = Path(tempfile.mkdtemp(prefix="acc-bench-storage-"))
    server, endpoint = start_moto()
    try:
        sides = {"disk": lambda i: str(tmp / f"disk{i}"), "bucket": lambda i: f"s3://bench/run{i}"}
        times = {k: [] for k in sides}
        for i in range(args.repeats):
            for name, out in sides.items():
                times[name].append(wall(CLI + ["run", "--steps", str(args.steps), "--out", out(i)], server))
        loop = {name: statistics.median(loop_ms(out(f"loop{i}"), args.steps) for i in range(args.repeats))
                for name, out in sides.items()}
        upload_rows = uploads(tmp / "disk0", endpoint, args.repeats)
    finally:
        stop_moto(server)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(t for t, _, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c, _ in v) for k, v in times.items()}
    moto = {k: statistics.median(m for _, _, m in v) for k, v in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}; {args.steps} steps of bcl-slow, every key; median of {args.repeats}")
    print("| figure | disk | bucket (moto, 127.0.0.1) | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| wall: acc-capture run | {med['disk']:.2f} s | {med['bucket']:.2f} s | {med['bucket'] / med['disk']:.2f} |")
    print(f"| CPU: the run's process | {cpu['disk']:.2f} s | {cpu['bucket']:.2f} s | {cpu['bucket'] / cpu['disk']:.2f} |")
    print(f"| CPU: moto's server meanwhile | {moto['disk']:.2f} s | {moto['bucket']:.2f} s | - |")
    print(f"| loop: recording (ms per step) | {loop['disk']:.1f} | {loop['bucket']:.1f} | {loop['bucket'] / loop['disk']:.2f} |")
    print()
    print("| upload library | measured |")
    print("| --- | --- |")
    for name, value in upload_rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
