"""Recording format v2: array names, dimension names, the key table and the per-step summaries (docs/FORMAT.md)."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from acc.step_inspector import StepTensorKey
from acc.summaries import DEAD_WIN_RATE, Summary, frobenius
from capture.codecs import codec_of

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before the key table; every v1 recording is a BCL run (StepTensorKey)
ATTRS_KEY = "acc_capture"
SUMMARY_CHUNK = 1024  # steps per chunk of a summary array
SMALL_BYTES, SMALL_CHUNK = 4096, 64  # a tensor of at most SMALL_BYTES per step is chunked SMALL_CHUNK steps a chunk
SHARD_STEPS = 20  # a larger tensor: one chunk per step, SHARD_STEPS chunks per file (a zarr shard)
STATE_GROUP = "state"  # training state at the last completed step, for resume
BCL_RECIPE = "bcl"  # the recipe of `acc-capture run`: a recording `acc-capture resume` can continue
__all__ = ["DEAD_WIN_RATE"]

# dtypes a tensor is stored as (what the viewer decodes); anything else is refused at the first step
DTYPES = ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")
# written by the recorder from its policy, not computed from the captures
FULL_CAPTURE = "full_capture"
NONFINITE = "nonfinite"


def v1_key_table() -> list[dict]:
    """The key table of a format 1 recording, which does not store one: BCL's vocabulary."""
    return StepTensorKey.table()


def check_first_step(values: dict[str, tuple[tuple[str, ...], tuple[int, ...], str]]) -> None:
    """Raise ValueError if the first step's values cannot be stored: `values` names each key (as
    the message should) with its dims, shape and dtype name; a dtype not in DTYPES, or a dimension
    with two sizes, is refused. (Captures are checked so in the loop, derived keys in the writer.)"""
    sizes: dict[str, tuple[int, str]] = {}  # dimension -> (its size, the key that gave it)
    for name, (dims, shape, dtype) in values.items():
        if dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {dtype} is not one a recording stores ({', '.join(DTYPES)})")
        for dim, size in zip(dims, shape):
            if sizes.setdefault(dim, (size, name))[0] != size:
                raise ValueError(f"dimension {dim!r} is {size} in {name} but {sizes[dim][0]} in {sizes[dim][1]}")


def fill_value(dtype: np.dtype):
    """What an unwritten step reads as: NaN for floats, -1 for signed integers, 0 for unsigned, False for booleans."""
    return {"f": float("nan"), "i": -1, "u": 0, "b": False}[dtype.kind]


def _nonfinite(blocks: dict, norms: dict[str, np.ndarray], n: int) -> np.ndarray:
    """[n]: NaN/Inf count per step over the float tensors of `blocks`. A step of a tensor whose norm (`norms`
    by key; summed in float64, where squares of float32 values cannot overflow) is finite has none;
    the others, and the float scalars, are counted exactly."""
    counts = np.zeros(n, dtype=np.int64)
    for key, b in blocks.items():
        check = b if b.ndim == 1 else norms.get(key)
        bad = ~np.isfinite(check) if check is not None else np.ones(n, dtype=bool)
        if bad.any():
            counts[bad] += (~np.isfinite(b[bad])).reshape(int(bad.sum()), -1).sum(axis=1)
    return counts


class _Norm:
    """The `<key>_norm` summary: the Frobenius norm of each step's `key`."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, blocks: dict) -> np.ndarray:
        return frobenius(blocks[self.key])


def summaries(captured: dict[str, tuple[tuple[int, ...], np.dtype]], own: dict[str, Summary],
              derived: Iterable[str] = ()) -> dict[str, Summary]:
    """The summaries of a recording whose steps capture `captured` ({key: (shape, dtype)}): every
    scalar key, the Frobenius norm (`<key>_norm`) of every float tensor but the `derived` ones (the
    writer derives those only at the steps it stores), the non-finite count, and those of the
    vocabulary's `own` summaries whose keys are all captured."""
    out: dict[str, Summary] = {}
    for key, (shape, dtype) in captured.items():
        if not shape:
            out[key] = ((), str(dtype), (key,), (lambda b, k=key: b[k]))
        elif dtype.kind == "f" and key not in derived:
            out[f"{key}_norm"] = ((), "float32", (key,), _Norm(key))
    out.update({name: s for name, s in own.items() if set(s[2]) <= set(captured)})
    floats = tuple(k for k, (_, dtype) in captured.items() if dtype.kind == "f" and k not in derived)
    out[NONFINITE] = ((), "int32", floats, None)  # (from the norms: see summarize)
    return out


def derive(blocks: dict[str, np.ndarray], derived: dict) -> dict[str, np.ndarray]:
    """The stacked captures {key: [n, ...]} with the vocabulary's derived keys added (`derived`, see
    TensorKey.derived), each from the keys it needs; one the loop captured, or whose keys were not
    all captured, is left out. Raises ValueError if a derivation does not give n steps."""
    out = dict(blocks)
    n = len(next(iter(blocks.values())))
    pending = {key: d for key, d in derived.items() if key not in out}
    while ready := [key for key, (needs, _) in pending.items() if all(k in out for k in needs)]:
        for key in ready:  # (in passes: a derived key may need another, listed after it)
            out[key] = np.asarray(pending.pop(key)[1](out))
            if out[key].shape[:1] != (n,):
                raise ValueError(f"derived key {key}: its function gave shape {out[key].shape} for {n} steps")
    return out


def summarize(blocks: dict, specs: dict[str, Summary]) -> dict[str, np.ndarray]:
    """Each summary for n steps, from their stacked captures {key: array [n, ...]}."""
    out = {name: np.asarray(fn(blocks), dtype=dtype) for name, (_, dtype, _, fn) in specs.items() if name != NONFINITE}
    if NONFINITE in specs:
        norms = {s[3].key: out[name] for name, s in specs.items() if isinstance(s[3], _Norm)}
        floats = {k: blocks[k] for k in specs[NONFINITE][2]}
        out[NONFINITE] = _nonfinite(floats, norms, len(next(iter(blocks.values())))).astype(specs[NONFINITE][1])
    return out


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """'0-50,1000-1050,7' -> [(0, 50), (1000, 1050), (7, 7)], inclusive at both ends."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ValueError(f"--full-steps: {part!r} is not a step or a range like 0-50") from None
        if a < 0 or b < a:
            raise ValueError(f"--full-steps: {part!r} is not a range of steps (need 0 <= start <= end)")
        ranges.append((a, b))
    if not ranges:
        raise ValueError(f"--full-steps {text!r} names no step")
    return ranges


class Files(NamedTuple):
    """How the files of an array this tool writes are laid out (see `file_layout`)."""

    steps: int  # steps per file
    sharded: bool  # True: one chunk per step, then the shard index; False: one chunk of them all
    codec: str  # how each chunk is stored after `bytes`: one of capture.codecs.CODECS
    crc: bool = False  # then a `crc32c` checksum (large tensors' Blosc or uncompressed chunks)


EMPTY = 2**64 - 1  # a shard index entry (offset, nbytes) of an empty chunk: both this
_LITTLE_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


def file_layout(arr) -> Files | None:
    """The layout of `arr`'s files if it is one this tool writes and reads directly, else None
    (readers then go through zarr). Two layouts, both along the step dimension only:

    - `bytes` (little-endian), alone or then `gzip` or `blosc`, then `crc32c` or not
      (capture.codecs.parse): a file is one chunk of `chunks[0]` steps (small tensors and summaries,
      uncompressed and written in place as steps come, see recorder._Chunker; gzip in earlier
      recordings of this format);
    - `sharding_indexed` of one-step chunks, each coded as above, with a `bytes` index at the end: a
      file is a shard of `shards[0]` steps (large tensors: `[bytes, gzip]`, `[bytes, blosc, crc32c]`
      or `[bytes, crc32c]`; recorder._Chunker, recording._read_row).
    """
    codecs = [c.to_dict() for c in arr.metadata.codecs]
    codec = codec_of(codecs)
    if codec is not None:
        return Files(arr.chunks[0], False, *codec)
    if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
        conf = codecs[0]["configuration"]
        codec = codec_of(list(conf["codecs"]))
        if (codec is not None and list(conf["index_codecs"]) == [_LITTLE_BYTES] and conf.get("index_location", "end") == "end"
                and tuple(conf["chunk_shape"]) == (1, *arr.shape[1:])):
            return Files(arr.shards[0], True, *codec)
    return None


def chunk_key(arr, index: int) -> str:
    """The store key of file `index` along the step dimension of `arr` (its chunk, or its shard), e.g. `tensors/loss/c.3`."""
    return f"{arr.path}/{arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1))}"


def shard_parts(chunks: list[bytes | None]) -> list[bytes]:
    """A shard file as its parts, in order: the encoded chunks (None: not written, so absent), then
    the index of (offset, nbytes) pairs, uint64 little-endian, EMPTY for a chunk not written. (A
    local store copies the parts straight into its write buffer: joining them first would make a
    new megabytes-long object a shard, whose fresh pages cost more than the copy.)"""
    index, offset = [], 0
    for c in chunks:
        index += [EMPTY, EMPTY] if c is None else [offset, len(c)]
        offset += len(c or b"")
    return [c for c in chunks if c] + [struct.pack(f"<{len(index)}Q", *index)]


def shard_chunks(data: bytes, n: int) -> list[bytes | None]:
    """The n encoded chunks of a whole shard file (None where the index says empty)."""
    entries = struct.unpack(f"<{2 * n}Q", data[len(data) - 16 * n:])
    return [None if off == EMPTY else data[off:off + size] for off, size in zip(entries[::2], entries[1::2])]


def read_shard_chunk(store, key: str, n: int, i: int) -> bytes | None:
    """Chunk `i` of the n-chunk shard `key` of `store` (a capture.store.Store; None if empty), reading
    only the shard's index (one read from its end, which also gives its size) and the chunk's bytes.

    Raises ValueError, naming the file in one line, for a shard shorter than its index or an index
    entry pointing outside the shard's data (a reader turns it into a RecordingError)."""
    index, size = store.get_tail(key, 16 * n)
    if size < 16 * n:
        raise ValueError(f"corrupt shard {store.describe(key)}: {size} bytes is less than its {16 * n}-byte index (truncated?)")
    off, nbytes = struct.unpack_from("<QQ", index, 16 * i)
    if off == EMPTY and nbytes == EMPTY:
        return None
    if off + nbytes > size - 16 * n:
        raise ValueError(f"corrupt shard {store.describe(key)}: the index puts chunk {i} at bytes {off}..{off + nbytes} "
                         f"of {size - 16 * n} bytes of data")
    data = store.get_range(key, off, nbytes)
    if len(data) != nbytes:
        raise ValueError(f"corrupt shard {store.describe(key)}: chunk {i} ended after {len(data)} of {nbytes} bytes")
    return data


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
