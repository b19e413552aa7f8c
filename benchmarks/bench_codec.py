"""Codec benchmark: what each candidate chunk codec costs and saves on a real recording's steps.

    python benchmarks/bench_codec.py [RECORDING] [--steps 20]

RECORDING defaults to a fresh 60-step bcl-slow run (made here). For the steps from its middle, every
stored tensor of the step is encoded as the recorder encodes a chunk (little-endian bytes, one chunk
per step), by each codec: its size against the raw bytes, and the encode and decode time of a
whole step, on one core; and by each array's own codec, as the recorder chose it from the run's
first steps (capture/codecs.py). The browser decodes gzip natively (DecompressionStream); the viewer
decodes Blosc with a vendored WebAssembly decoder.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numcodecs
import numpy as np
from isal import igzip

from capture import Recording
from capture import codecs as chosen
from capture import format as fmt


def codecs(rec: Recording) -> dict[str, tuple]:
    blosc = numcodecs.Blosc
    layout = {k: fmt.file_layout(rec.tensors[k]) for k in rec.keys}
    own = [(layout[k].codec, layout[k].crc) if layout[k] else ("bytes", False) for k in rec.keys]  # (in a step's order)
    sizes = [int(np.prod(rec.tensors[k].shape[1:])) * rec.tensors[k].dtype.itemsize for k in rec.keys]
    return {
        "each array's own: gzip, blosc lz4 5 byte shuffle, or none (what the recorder writes)": (
            lambda step: [chosen.encode(c, a, crc) for (c, crc), a in zip(own, step)],
            lambda out: [chosen.decode(c, b, n, crc) for (c, crc), b, n in zip(own, out, sizes)]),
        "gzip 1 (ISA-L; every array, as before)": (lambda b: igzip.compress(b, 1, mtime=0), igzip.decompress),
        "gzip 0 (ISA-L)": (lambda b: igzip.compress(b, 0, mtime=0), igzip.decompress),
        "gzip 2 (ISA-L)": (lambda b: igzip.compress(b, 2, mtime=0), igzip.decompress),
        "gzip 1 (zlib)": (lambda b: zlib.compress(b, 1), zlib.decompress),
        "blosc lz4 5, no shuffle": _numcodecs(blosc(cname="lz4", clevel=5, shuffle=blosc.NOSHUFFLE, blocksize=0)),
        "blosc lz4 5, byte shuffle": _numcodecs(blosc(cname="lz4", clevel=5, shuffle=blosc.SHUFFLE, blocksize=0)),
        "blosc lz4 5, bit shuffle": _numcodecs(blosc(cname="lz4", clevel=5, shuffle=blosc.BITSHUFFLE, blocksize=0)),
        "blosc zstd 1, byte shuffle": _numcodecs(blosc(cname="zstd", clevel=1, shuffle=blosc.SHUFFLE, blocksize=0)),
        "blosc zstd 3, byte shuffle": _numcodecs(blosc(cname="zstd", clevel=3, shuffle=blosc.SHUFFLE, blocksize=0)),
    }


def _numcodecs(codec) -> tuple:
    return (lambda b: codec.encode(b)), (lambda b: bytes(codec.decode(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", nargs="?")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    numcodecs.blosc.set_nthreads(1)
    tmp = None
    path = args.recording
    if path is None:
        tmp = Path(tempfile.mkdtemp(prefix="acc-codec-"))
        path = tmp / "run"
        subprocess.run([sys.executable, "-c", "from capture.cli import main; main()", "run", "--steps", "60",
                        "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    try:
        rec = Recording.open(path)
        first = max(0, rec.steps // 2 - args.steps // 2)
        steps = [rec.step(n) for n in range(first, min(rec.steps, first + args.steps))]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    # little-endian arrays: Blosc shuffles by the element size it is given (bytes would be size 1)
    chunks = [[np.ascontiguousarray(step[k], step[k].dtype.newbyteorder("<")) for k in rec.keys] for step in steps]
    raw = statistics.mean(sum(a.nbytes for a in c) for c in chunks)
    print(f"{path}: steps {first}..{first + len(steps) - 1}, {raw / 1e6:.2f} MB raw a step, one core")
    print("| codec | size / raw | encode ms a step | decode ms a step |")
    print("| --- | --- | --- | --- |")
    for i, (name, (encode, decode)) in enumerate(codecs(rec).items()):
        sizes, enc, dec = [], [], []
        for step in chunks:
            t = time.perf_counter()
            out = encode(step) if i == 0 else [encode(c) for c in step]
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            back = decode(out) if i == 0 else [decode(c) for c in out]
            dec.append(time.perf_counter() - t)
            assert back == [a.tobytes() for a in step]
            sizes.append(sum(map(len, out)))
        print(f"| {name} | {statistics.mean(sizes) / raw:.3f} | {statistics.median(enc) * 1e3:.2f} | "
              f"{statistics.median(dec) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
