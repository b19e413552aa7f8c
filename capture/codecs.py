"""The chunk codecs this tool writes, and how it chooses among them for each large tensor.

A large tensor's chunks (one step each, in shards) are written with one of three Zarr v3 core codecs
after `bytes` (little endian), chosen per array from its first step by `choose`:

- `gzip` (ISA-L, level 1): the best for images, masks and other values with many repeats; browsers
  decode it natively (`DecompressionStream`).
- `blosc` (LZ4, byte shuffle): about twice as fast as gzip, and smaller than it for smooth float data
  (the shuffle gathers the exponent bytes); the viewer decodes it with a vendored WebAssembly build
  (viewer/static/vendor/numcodecs).
- none (`bytes` alone): for values that neither shrinks by more than a few percent.

Each is charged for its encoding time in bytes of disk (`HANDICAP`, a fraction of the raw size),
so a codec is taken only where what it saves pays for its time. The choice looks at the first step
alone, so it does not depend on how many steps the first write holds (`--chunk-steps`): one run
gives the same files however it is chunked. Every Zarr reader decodes all three. A gzip chunk
carries its own CRC-32; a Blosc or uncompressed one is followed by the `crc32c` codec (four bytes
of CRC-32C), so a damaged chunk is an error, never wrong values. `IsalGzipCodec` and
`use_fast_gzip()` make zarr-python encode and decode gzip with ISA-L too.
"""

from __future__ import annotations

import asyncio
import struct

import google_crc32c
import numpy as np
import zarr
from isal import igzip
from numcodecs import blosc
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec

CODECS = ("gzip", "blosc", "bytes")  # "bytes": stored as they are
GZIP_LEVEL, LZ4_LEVEL = 1, 5
# what encoding costs, counted as disk: a codec is chosen for the least `stored bytes + HANDICAP *
# raw bytes` on an array's first step (measured here: gzip 1.7 ms a MB, blosc 0.8, none 0)
HANDICAP = {"gzip": 0.15, "blosc": 0.05, "bytes": 0.0}


class IsalGzipCodec(GzipCodec):
    """Zarr v3 `gzip` codec backed by ISA-L (levels above 3 are ISA-L's 3)."""

    def _encode_sync(self, chunk_bytes, chunk_spec):
        data = igzip.compress(chunk_bytes.as_numpy_array(), min(self.level, 3), mtime=0)
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_sync(self, chunk_bytes, chunk_spec):
        return chunk_spec.prototype.buffer.from_bytes(igzip.decompress(chunk_bytes.as_numpy_array()))

    async def _encode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._encode_sync, chunk_bytes, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)


def use_fast_gzip() -> None:
    zarr.registry.register_codec("gzip", IsalGzipCodec)
    zarr.config.set({"codecs.gzip": f"{IsalGzipCodec.__module__}.{IsalGzipCodec.__qualname__}"})


def zarr_codecs(codec: str, itemsize: int) -> list:
    """The zarr codecs that follow `bytes` in a large tensor's chunk stored as `codec` (a checksum
    after all but gzip, which has its own)."""
    if codec == "gzip":
        return [IsalGzipCodec(level=GZIP_LEVEL)]
    if codec == "blosc":
        return [BloscCodec(cname="lz4", clevel=LZ4_LEVEL, shuffle="shuffle", typesize=itemsize), Crc32cCodec()]
    return [Crc32cCodec()]


def parse(codecs: list[dict]) -> tuple[str, bool, str] | None:
    """A chunk's codec list (metadata dicts) as (which of CODECS, whether `crc32c` ends it, the byte
    order) if it is `bytes`, then nothing, `gzip` or `blosc` (any configuration: a Blosc frame
    describes itself), then `crc32c` or not; else None. The readers here and the viewer's page
    builder both go by it."""
    names = [c.get("name") for c in codecs]
    if names[:1] != ["bytes"]:
        return None
    crc = len(names) > 1 and names[-1] == "crc32c"
    middle = names[1:len(names) - crc]
    if len(middle) > 1 or any(n not in ("gzip", "blosc") for n in middle):
        return None
    return middle[0] if middle else "bytes", crc, (codecs[0].get("configuration") or {}).get("endian") or "little"


def codec_of(codecs: list[dict]) -> tuple[str, bool] | None:
    """`parse`'s (codec, crc) for a little-endian chunk (what this tool's fast readers decode), else None."""
    parsed = parse(codecs)
    return parsed[:2] if parsed is not None and parsed[2] == "little" else None


def encode(codec: str, values: np.ndarray, crc: bool = False) -> bytes:
    """`values` as `codec` stores them after the `bytes` codec (little endian, C order); `crc`: then
    the `crc32c` codec (the CRC-32C of those bytes, four bytes little endian)."""
    values = np.ascontiguousarray(values, values.dtype.newbyteorder("<"))
    if codec == "gzip":
        data = igzip.compress(values, GZIP_LEVEL, mtime=0)
    elif codec == "blosc":
        data = blosc.compress(values, b"lz4", LZ4_LEVEL, blosc.SHUFFLE, 0)
    else:
        data = values.tobytes()
    return data + google_crc32c.value(data).to_bytes(4, "little") if crc else data


def decode(codec: str, data: bytes, nbytes: int, crc: bool = False) -> bytes:
    """The `nbytes` bytes `codec` stored as `data`, `crc`: with its CRC-32C after them (raises
    ValueError for data that is damaged or of another size: its CRC, a Blosc header's sizes)."""
    if crc:
        if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
            raise ValueError(f"crc32c: the chunk's {len(data)} bytes do not match their checksum")
        data = data[:-4]
    try:
        if codec == "gzip":
            out = igzip.decompress(data)
        elif codec == "blosc":
            if len(data) < 16 or struct.unpack_from("<I", data, 12)[0] != len(data):
                raise ValueError(f"a chunk of {len(data)} bytes whose header does not say so")
            if struct.unpack_from("<I", data, 4)[0] != nbytes:
                raise ValueError(f"its header gives {struct.unpack_from('<I', data, 4)[0]} bytes, not {nbytes}")
            out = blosc.decompress(data)
        else:
            out = data
    except (ValueError, EOFError, OSError, RuntimeError, SystemError, MemoryError, igzip.igzip_lib.IsalError) as e:
        raise ValueError(f"{codec}: {e}") from None
    if len(out) != nbytes:
        raise ValueError(f"{codec}: {len(out)} bytes, not {nbytes}")
    return out


def choose(step: np.ndarray) -> str:
    """The codec for an array whose first step is `step`: the least stored bytes plus HANDICAP."""
    raw = step.nbytes
    cost = {c: HANDICAP[c] * raw + (raw if c == "bytes" else len(encode(c, step))) for c in CODECS}
    return min(CODECS, key=cost.__getitem__)
