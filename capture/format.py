"""Recording format v1: array names, dimension names and the per-step summaries (docs/FORMAT.md)."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from acc.conditions import RunConfig
from acc.step_inspector import StepTensorKey as K

FORMAT_VERSION = 1
ATTRS_KEY = "acc_capture"
SUMMARY_CHUNK = 1024  # steps per chunk of a summary array
SMALL_BYTES, SMALL_CHUNK = 4096, 64  # a tensor of at most SMALL_BYTES per step is chunked SMALL_CHUNK steps a chunk
SHARD_STEPS = 20  # a larger tensor: one chunk per step, SHARD_STEPS chunks per file (a zarr shard)
STATE_GROUP = "state"  # training state at the last completed step, for resume
DEAD_WIN_RATE = 0.01  # a feature whose win_rate is below this is dead

INT_KEYS = {K.NEIGHBORS, K.BATCH_LABELS}


def dim_sizes(config: RunConfig) -> dict[str, int]:
    side = int(round(config.input_dim ** 0.5))
    return {
        "image": config.batch_size, "channel": 1, "height": side, "width": side,
        "feature": config.hidden_dim, "other_feature": config.hidden_dim,
        "pixel": config.input_dim, "neighbor": config.bcl.neighborhood_k if config.bcl else 0,
    }


def condition_keys(config: RunConfig) -> list[K]:
    """The keys a run of this configuration captures (the control condition has no BCL keys)."""
    return [k for k in K if config.bcl is not None or not k.bcl]


def key_dtype(key: K) -> np.dtype:
    return np.dtype(np.int32 if key in INT_KEYS else np.float32)


def fill_value(dtype: np.dtype):
    """What an unwritten step reads as: NaN for floats, -1 for integers, False for booleans."""
    return {"f": float("nan"), "i": -1, "b": False}[dtype.kind]


def _offdiag_mean(m: np.ndarray) -> np.ndarray:
    """[n,D,D] -> [n]: the mean off-diagonal entry of each matrix."""
    d = m.shape[-1]
    return (m.sum(axis=(-2, -1), dtype=np.float64) - np.trace(m, axis1=-2, axis2=-1, dtype=np.float64)) / (d * d - d)


def _norm(a: np.ndarray) -> np.ndarray:
    """[n,...] -> [n]: the Frobenius norm of each step's tensor (accumulated in float64)."""
    flat = a.reshape(len(a), -1).astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", flat, flat))


def _nonfinite(blocks: dict) -> np.ndarray:
    """[n]: NaN/Inf count per step over every float tensor (a cheap check first, an exact count if it fails)."""
    n = len(next(iter(blocks.values())))
    counts = np.zeros(n, dtype=np.int64)
    for b in blocks.values():
        if b.dtype.kind == "f" and not np.isfinite(b.sum()):
            counts += (~np.isfinite(b)).reshape(n, -1).sum(axis=1)
    return counts


# name -> (dims after "step", dtype, the keys it needs, how to compute it for n steps from their stacked
# captures {key: array [n, ...]})
Summary = tuple[tuple[str, ...], str, tuple[K, ...], Callable[[dict], np.ndarray]]
SUMMARIES: dict[str, Summary] = {
    "loss": ((), "float32", (K.LOSS,), lambda b: b[K.LOSS]),
    **{
        k.value: (k.dims, "float32", (k,), (lambda b, k=k: b[k]))
        for k in (K.WIN_RATE, K.FEATURE_NOVELTY, K.GRADIENT_WEIGHT, K.CONTENDER_WEIGHT, K.ATTRACTION_WEIGHT, K.IMAGE_COVERAGE)
    },
    "dead_features": ((), "int32", (K.WIN_RATE,), lambda b: (b[K.WIN_RATE] < DEAD_WIN_RATE).sum(axis=1)),
    "weight_cosine_offdiag": ((), "float32", (K.WEIGHT_COSINE_MATRIX,), lambda b: _offdiag_mean(b[K.WEIGHT_COSINE_MATRIX])),
    "som_target_cosine_offdiag": ((), "float32", (K.SOM_TARGET_COSINE_MATRIX,),
                                  lambda b: _offdiag_mean(b[K.SOM_TARGET_COSINE_MATRIX])),
    "grad_cosine_offdiag": ((), "float32", (K.GRAD_COSINE_MATRIX,), lambda b: _offdiag_mean(b[K.GRAD_COSINE_MATRIX])),
    "grad_raw_norm": ((), "float32", (K.GRAD_RAW,), lambda b: _norm(b[K.GRAD_RAW])),
    "grad_masked_norm": ((), "float32", (K.GRAD_MASKED,), lambda b: _norm(b[K.GRAD_MASKED])),
    "som_delta_norm": ((), "float32", (K.SOM_DELTA,), lambda b: _norm(b[K.SOM_DELTA])),
    "update_norm": ((), "float32", (K.ENCODER_WEIGHTS, K.ENCODER_WEIGHTS_POST),
                    lambda b: _norm(b[K.ENCODER_WEIGHTS_POST] - b[K.ENCODER_WEIGHTS])),
    "nonfinite": ((), "int32", (), _nonfinite),
}
# written by the recorder from its policy, not computed from the captures
FULL_CAPTURE = "full_capture"


def summary_names(captured: list[K]) -> list[str]:
    have = set(captured)
    return [name for name, (_, _, needs, _) in SUMMARIES.items() if set(needs) <= have]


def summarize(blocks: dict, names: list[str]) -> dict[str, np.ndarray]:
    """Each named summary for n steps, from their stacked captures {key: array [n, ...]}."""
    return {name: np.asarray(SUMMARIES[name][3](blocks), dtype=SUMMARIES[name][1]) for name in names}


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """'0-50,1000-1050,7' -> [(0, 50), (1000, 1050), (7, 7)], inclusive at both ends."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise ValueError(f"--full-steps: {part!r} is not a step or a range like 0-50") from None
        if a < 0 or b < a:
            raise ValueError(f"--full-steps: {part!r} is not a range of steps (need 0 <= start <= end)")
        ranges.append((a, b))
    return ranges


class Files(NamedTuple):
    """How the files of an array this tool writes are laid out (see `file_layout`)."""

    steps: int  # steps per file
    sharded: bool  # True: one gzip chunk per step, then the shard index; False: one gzip chunk of them all


EMPTY = 2**64 - 1  # a shard index entry (offset, nbytes) of an empty chunk: both this
_LITTLE_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


def file_layout(arr) -> Files | None:
    """The layout of `arr`'s files if it is one this tool writes and reads directly, else None
    (readers then go through zarr). Two layouts, both along the step dimension only:

    - codecs `bytes` (little-endian) then `gzip`: a file is one chunk of `chunks[0]` steps;
    - `sharding_indexed` of one-step chunks, each `bytes` (little) then `gzip`, with a `bytes`
      index at the end: a file is a shard of `shards[0]` steps (recorder._Chunker, recording._read_row).
    """
    codecs = [c.to_dict() for c in arr.metadata.codecs]

    def plain(cs: list[dict]) -> bool:
        return [c["name"] for c in cs] == ["bytes", "gzip"] and cs[0].get("configuration", {}).get("endian", "little") == "little"

    if plain(codecs):
        return Files(arr.chunks[0], False)
    if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
        conf = codecs[0]["configuration"]
        if (plain(list(conf["codecs"])) and list(conf["index_codecs"]) == [_LITTLE_BYTES] and conf.get("index_location", "end") == "end"
                and tuple(conf["chunk_shape"]) == (1, *arr.shape[1:])):
            return Files(arr.shards[0], True)
    return None


def chunk_key(arr, index: int) -> str:
    """The store key of file `index` along the step dimension of `arr` (its chunk, or its shard), e.g. `tensors/loss/c.3`."""
    return f"{arr.path}/{arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1))}"


def encode_shard(chunks: list[bytes | None]) -> bytes:
    """A shard file: the encoded chunks (None: not written) one after the other, then the index of
    (offset, nbytes) pairs, uint64 little-endian, EMPTY for a chunk not written."""
    index, offset = [], 0
    for c in chunks:
        index += [EMPTY, EMPTY] if c is None else [offset, len(c)]
        offset += len(c or b"")
    return b"".join(c for c in chunks if c) + struct.pack(f"<{len(index)}Q", *index)


def shard_chunks(data: bytes, n: int) -> list[bytes | None]:
    """The n encoded chunks of a whole shard file (None where the index says empty)."""
    entries = struct.unpack(f"<{2 * n}Q", data[len(data) - 16 * n:])
    return [None if off == EMPTY else data[off:off + size] for off, size in zip(entries[::2], entries[1::2])]


def read_shard_chunk(file: Path, n: int, i: int) -> bytes | None:
    """Chunk `i` of the n-chunk shard `file` (None if empty), reading only its index entry and its bytes."""
    with open(file, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < 16 * n:
            raise ValueError(f"corrupt shard {file}: {size} bytes is less than its index")
        off, nbytes = struct.unpack("<QQ", os.pread(fd, 16, size - 16 * (n - i)))
        if off == EMPTY:
            return None
        if off + nbytes > size - 16 * n:
            raise ValueError(f"corrupt shard {file}: chunk {i} lies outside the data")
        return os.pread(fd, nbytes, off)


def lock_writer(path: Path) -> int:
    """Take the recording's writer lock: an flock on the directory itself, released when the process ends.

    Raises BlockingIOError if another process holds it. A status of `recording` with the lock free
    means the writer died: the recording is `interrupted`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def writer_alive(path: Path) -> bool:
    """True while a process holds the recording's writer lock."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
