// The chunk reader against bytes made the way zarr-python writes them (gzip of little-endian values).
import assert from "node:assert/strict";
import test from "node:test";
import { gzipSync } from "node:zlib";

import { crc32c } from "../../viewer/static/codecs.js";
import {
  chunkCount, chunkIndex, chunkKey, chunkLength, chunkPath, decodeChunk, fillChunk, fromBytes, halfToNumber, parseFill,
  rowLength, swapBytes,
} from "../../viewer/static/zarr.js";

const meta = (over = {}) => ({
  path: "tensors/strength", shape: [30, 4, 3], chunks: [1, 4, 3], dtype: "float32", dims: ["step", "image", "feature"],
  fill: "NaN", codecs: ["bytes", "gzip"], endian: "little", encoding: "default", sep: "/", ...over,
});

function littleEndian(Type, values) {
  const buf = Buffer.alloc(values.length * Type.BYTES_PER_ELEMENT);
  values.forEach((v, i) => {
    if (Type === Float32Array) buf.writeFloatLE(v, i * 4);
    else if (Type === Int32Array) buf.writeInt32LE(v, i * 4);
    else buf.writeUInt8(v, i);
  });
  return buf;
}

test("chunk keys follow the default encoding: c/<step>/0/...", () => {
  assert.equal(chunkKey(meta(), 17), "c/17/0/0");
  assert.equal(chunkPath(meta(), 17), "tensors/strength/c/17/0/0");
  assert.equal(chunkKey(meta({ shape: [30], chunks: [1], dims: ["step"] }), 5), "c/5");
  assert.equal(chunkKey(meta({ shape: [30, 1, 1, 28, 28].slice(0, 5), chunks: [1, 128, 1, 28, 28] }), 2), "c/2/0/0/0/0");
  assert.equal(chunkKey(meta({ encoding: "v2", sep: "." }), 3), "3.0.0");
});

test("summaries: many steps per chunk, rows within a chunk", () => {
  const m = meta({ path: "summary/win_rate", shape: [2500, 64], chunks: [1024, 64], dims: ["step", "feature"] });
  assert.equal(chunkIndex(m, 0), 0);
  assert.equal(chunkIndex(m, 1023), 0);
  assert.equal(chunkIndex(m, 1024), 1);
  assert.equal(chunkCount(m, 2500), 3);
  assert.equal(chunkCount(m, 1024), 1);
  assert.equal(rowLength(m), 64);
  assert.equal(chunkLength(m), 1024 * 64);
  assert.equal(chunkPath(m, 2), "summary/win_rate/c/2/0");
});

test("fill values as zarr.json writes them", () => {
  assert.ok(Number.isNaN(parseFill("NaN", "float32")));
  assert.equal(parseFill("Infinity", "float32"), Infinity);
  assert.equal(parseFill("-Infinity", "float32"), -Infinity);
  assert.equal(parseFill(-1, "int32"), -1);
  assert.equal(parseFill(0.5, "float32"), 0.5);
  assert.equal(parseFill(false, "bool"), 0);
  assert.equal(parseFill(true, "bool"), 1);
  assert.ok(Number.isNaN(parseFill("0x7fc00000", "float32")));
  assert.equal(parseFill("0x3f800000", "float32"), 1);
  assert.throws(() => parseFill("bogus", "float32"));
});

test("a missing chunk reads as the fill value: NaN, -1, false", () => {
  const f = fillChunk(meta());
  assert.ok(f instanceof Float32Array);
  assert.equal(f.length, 12);
  assert.ok(f.every(Number.isNaN));
  const i = fillChunk(meta({ dtype: "int32", fill: -1, shape: [30, 64, 8], chunks: [1, 64, 8] }));
  assert.ok(i instanceof Int32Array);
  assert.ok(i.every((v) => v === -1));
  const b = fillChunk(meta({ dtype: "bool", fill: false, shape: [30], chunks: [1024] }));
  assert.ok(b instanceof Uint8Array);
  assert.equal(b.length, 1024);
  assert.ok(b.every((v) => v === 0));
});

test("decode float32: gzip then little-endian bytes", async () => {
  const values = [0, 1.5, -2.25, NaN, Infinity, -Infinity, 3.4028234663852886e38, 1e-40, 7, 8, 9, 10];
  const out = await decodeChunk(gzipSync(littleEndian(Float32Array, values), { level: 1 }), meta());
  assert.ok(out instanceof Float32Array);
  assert.deepEqual(Array.from(out), values.map((v) => Math.fround(v)));
});

test("decode int32 and bool", async () => {
  const ints = Array.from({ length: 64 * 8 }, (_, i) => (i % 3 === 0 ? -i - 1 : i));
  const m = meta({ dtype: "int32", fill: -1, shape: [30, 64, 8], chunks: [1, 64, 8] });
  assert.deepEqual(Array.from(await decodeChunk(gzipSync(littleEndian(Int32Array, ints)), m)), ints);
  const bools = [1, 0, 0, 1, 1];
  const mb = meta({ dtype: "bool", fill: false, shape: [5], chunks: [5], endian: undefined });
  assert.deepEqual(Array.from(await decodeChunk(gzipSync(Buffer.from(bools)), mb)), bools);
});

test("decode from a stream, as a fetch body arrives", async () => {
  const bytes = gzipSync(littleEndian(Float32Array, Array.from({ length: 12 }, (_, i) => i / 4)));
  const stream = new Blob([bytes]).stream();
  assert.deepEqual(Array.from(await decodeChunk(stream, meta())), Array.from({ length: 12 }, (_, i) => i / 4));
});

test("decode a view of held bytes: the chunk it covers, the bytes around it left as they were", async () => {
  const values = Array.from({ length: 12 }, (_, i) => i / 4);
  const chunk = gzipSync(littleEndian(Float32Array, values));
  const held = new Uint8Array(chunk.length + 8);
  held.fill(7);
  held.set(chunk, 5);
  const copy = held.slice();
  assert.deepEqual(Array.from(await decodeChunk(held.subarray(5, 5 + chunk.length), meta())), values);
  assert.deepEqual(held, copy);
  assert.deepEqual(Array.from(await decodeChunk(held.subarray(5, 5 + chunk.length), meta())), values, "and again");
  await assert.rejects(decodeChunk(held.subarray(4, 5 + chunk.length), meta()));
});

test("a chunk of the wrong size or corrupt bytes is an error, not wrong numbers", async () => {
  await assert.rejects(decodeChunk(gzipSync(littleEndian(Float32Array, [1, 2, 3])), meta()), /expected 12/);
  await assert.rejects(decodeChunk(Buffer.from("not gzip at all"), meta()));
  await assert.rejects(decodeChunk(gzipSync(littleEndian(Float32Array, [1])), meta({ codecs: ["bytes", "zstd"] })), /zstd/);
});

test("big-endian chunks are swapped to the host order", () => {
  const be = Buffer.alloc(8);
  be.writeFloatBE(1.5, 0);
  be.writeFloatBE(-3, 4);
  const buf = be.buffer.slice(be.byteOffset, be.byteOffset + 8);
  assert.deepEqual(Array.from(fromBytes(buf, { dtype: "float32", endian: "big" })), [1.5, -3]);
  const b = new Uint8Array([1, 2, 3, 4, 5, 6]);
  swapBytes(b.buffer, 2);
  assert.deepEqual(Array.from(b), [2, 1, 4, 3, 6, 5]);
});

test("float16: every kind of half widens to the float32 it stands for", () => {
  const cases = [[0x0000, 0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14], [0x7c00, Infinity], [0xfc00, -Infinity]];
  for (const [bits, value] of cases) assert.equal(halfToNumber(bits), value, bits.toString(16));
  assert.ok(Number.isNaN(halfToNumber(0x7e00)));
  assert.ok(Object.is(halfToNumber(0x8000), -0));
});

test("decode float16: gzip of little-endian halves, as float32 values", async () => {
  const bits = [0x3c00, 0xc000, 0x7e00, 0x0001, 0x7bff, 0x3555, 0x0000, 0xfc00, 0x4248, 0xbc00, 0x5640, 0x0400];
  const buf = Buffer.alloc(bits.length * 2);
  bits.forEach((b, i) => buf.writeUInt16LE(b, i * 2));
  const out = await decodeChunk(gzipSync(buf), meta({ dtype: "float16" }));
  assert.ok(out instanceof Float32Array && out.length === 12);
  assert.deepEqual([...out].map((v) => (Number.isNaN(v) ? "NaN" : v)),
    [1, -2, "NaN", 2 ** -24, 65504, Math.fround(0.333251953125), 0, -Infinity, 3.140625, -1, 100, 2 ** -14]);
  assert.ok(Number.isNaN(parseFill("NaN", "float16")) && Number.isNaN(parseFill(null, "float16")));
  assert.ok(Number.isNaN(parseFill("0x7e00", "float16")) && parseFill("0x3c00", "float16") === 1);
  assert.ok(Number.isNaN(fillChunk(meta({ dtype: "float16" }))[0]));
  const big = Buffer.from(buf);
  for (let i = 0; i < big.length; i += 2) [big[i], big[i + 1]] = [big[i + 1], big[i]];
  assert.equal(fromBytes(big.buffer.slice(big.byteOffset, big.byteOffset + big.length), meta({ dtype: "float16", endian: "big" }))[8], 3.140625);
});

/** CRC-32C one bit at a time (the definition: reflected polynomial 0x82F63B78), to check the table-driven one against. */
function crc32cBitwise(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** `bytes` followed by their CRC-32C, little-endian: what zarr's `crc32c` codec writes. */
function withCrc(bytes) {
  const out = Buffer.alloc(bytes.length + 4);
  out.set(bytes);
  out.writeUInt32LE(crc32cBitwise(bytes), bytes.length);
  return out;
}

test("crc32c: the check value of CRC-32C, and the bitwise definition at every length and offset", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);         // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);  // ... and of ones
  const bytes = new Uint8Array(300).map((_, i) => (i * 2654435761) >>> 24);
  for (let from = 0; from < 9; from++) {
    for (let n = 0; from + n <= bytes.length; n += n < 24 ? 1 : 37) {
      const part = bytes.subarray(from, from + n);
      assert.equal(crc32c(part), crc32cBitwise(part), `${n} bytes from ${from}`);
    }
  }
});

test("decode crc32c chunks: checked and stripped, after bytes or after gzip; from a stream or a view", async () => {
  const values = Array.from({ length: 12 }, (_, i) => i / 4 - 1);
  const raw = littleEndian(Float32Array, values);
  assert.deepEqual(Array.from(await decodeChunk(withCrc(raw), meta({ codecs: ["bytes", "crc32c"] }))), values);
  const gz = meta({ codecs: ["bytes", "gzip", "crc32c"] });
  assert.deepEqual(Array.from(await decodeChunk(withCrc(gzipSync(raw)), gz)), values);
  assert.deepEqual(Array.from(await decodeChunk(new Blob([withCrc(gzipSync(raw))]).stream(), gz)), values);
  const chunk = withCrc(raw);
  const held = new Uint8Array(chunk.length + 8).fill(7);
  held.set(chunk, 5);
  const copy = held.slice();
  const m = meta({ codecs: ["bytes", "crc32c"] });
  assert.deepEqual(Array.from(await decodeChunk(held.subarray(5, 5 + chunk.length), m)), values);
  assert.deepEqual(held, copy, "the held bytes are left as they were");
  assert.deepEqual(Array.from(await decodeChunk(new Uint8Array(chunk).buffer, m)), values, "an ArrayBuffer");
});

test("a crc32c chunk with one byte flipped, or too short for its checksum, is an error, never wrong values", async () => {
  const raw = littleEndian(Float32Array, Array.from({ length: 12 }, (_, i) => i));
  for (const [codecs, body] of [[["bytes", "crc32c"], raw], [["bytes", "gzip", "crc32c"], gzipSync(raw)]]) {
    const good = withCrc(body);
    for (const at of [0, body.length >> 1, body.length - 1, body.length, good.length - 1]) {  // the data, then the CRC
      const bad = Buffer.from(good);
      bad[at] ^= 0x10;
      await assert.rejects(decodeChunk(bad, meta({ codecs })), /crc32c mismatch/, `${codecs} byte ${at} flipped`);
    }
    await assert.rejects(decodeChunk(good.subarray(0, good.length - 1), meta({ codecs })), /crc32c/);
  }
  for (const n of [0, 3]) {
    await assert.rejects(decodeChunk(new Uint8Array(n), meta({ codecs: ["bytes", "crc32c"] })), /crc32c chunk of \d bytes is shorter than its checksum/);
  }
});
