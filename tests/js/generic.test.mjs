// What a recording of any vocabulary brings: every data type a key may have, decoded from the bytes
// zarr-python writes (gzip of little-endian values); RGB painting; how panels lay out images,
// thumbnails and the entries of a block of any rank.
import assert from "node:assert/strict";
import test from "node:test";
import { gzipSync } from "node:zlib";

import { NONFINITE, pack, paintRGB } from "../../viewer/static/colors.js";
import { imageLayout, indexWords, thumbLayout } from "../../viewer/static/panels.js";
import { DTYPES, decodeChunk, fillChunk, fromBytes, parseFill } from "../../viewer/static/zarr.js";

const meta = (dtype, n, over = {}) => ({
  path: `tensors/${dtype}`, shape: [5, n], chunks: [1, n], dtype, dims: ["step", "entry"], fill: null,
  codecs: ["bytes", "gzip"], endian: "little", encoding: "default", sep: ".", ...over,
});

/** Little-endian bytes of `values` as the typed array `Type` holds them. */
function bytesOf(Type, values) {
  const typed = new Type(values);
  return Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
}

test("every data type a recording stores decodes to its values", async () => {
  const cases = [
    ["float64", Float64Array, [1.5, -2.25, 1e300, NaN]],
    ["int8", Int8Array, [-128, -1, 0, 127]],
    ["int16", Int16Array, [-32768, -7, 300, 32767]],
    ["int32", Int32Array, [-2147483648, -1, 5, 2147483647]],
    ["uint8", Uint8Array, [0, 1, 200, 255]],
    ["uint16", Uint16Array, [0, 1, 40000, 65535]],
    ["uint32", Uint32Array, [0, 1, 3000000000, 4294967295]],
    ["bool", Uint8Array, [1, 0, 0, 1]],
  ];
  for (const [dtype, Type, values] of cases) {
    const out = await decodeChunk(gzipSync(bytesOf(Type, values)), meta(dtype, values.length));
    assert.ok(out instanceof DTYPES[dtype], dtype);
    assert.deepEqual([...out].map((v) => (Number.isNaN(v) ? "NaN" : v)), values.map((v) => (Number.isNaN(v) ? "NaN" : v)), dtype);
  }
});

test("int64 decodes to numbers: exact up to 2^53, big-endian too", async () => {
  const values = [-1n, 0n, 7n, 2n ** 53n, -(2n ** 40n), 9n];
  const out = await decodeChunk(gzipSync(bytesOf(BigInt64Array, values)), meta("int64", 6));
  assert.ok(out instanceof Float64Array);
  assert.deepEqual([...out], [-1, 0, 7, 2 ** 53, -(2 ** 40), 9]);
  const big = Buffer.alloc(16);
  big.writeBigInt64BE(-5n, 0);
  big.writeBigInt64BE(123456789012n, 8);
  assert.deepEqual([...fromBytes(big.buffer.slice(big.byteOffset, big.byteOffset + 16), meta("int64", 2, { endian: "big" }))],
    [-5, 123456789012]);
  await assert.rejects(decodeChunk(gzipSync(Buffer.alloc(12)), meta("int64", 2)), /whole number of int64/);
});

test("unwritten steps read as the fill value of their type", () => {
  assert.deepEqual([...fillChunk(meta("int64", 3, { fill: -1 }))], [-1, -1, -1]);
  assert.deepEqual([...fillChunk(meta("uint8", 2, { fill: 0 }))], [0, 0]);
  assert.ok(Number.isNaN(fillChunk(meta("float64", 2, { fill: "NaN" }))[1]));
  assert.equal(parseFill(false, "bool"), 0);
  assert.throws(() => fromBytes(new ArrayBuffer(8), meta("complex64", 1)), /unsupported data type complex64/);
});

test("paintRGB maps each channel from [lo, hi]; a non-finite channel marks the pixel", () => {
  // a 2 x 2 image of 3 channels, channels first (channel stride 4)
  const data = new Float32Array([0, 1, 0.5, NaN, /* g */ 0, 0, 1, 0, /* b */ 1, 0, 0.25, 0]);
  const out = new Uint32Array(4);
  paintRGB(out, 0, 2, data, 0, 2, 1, 4, 2, 2, 0, 1);
  assert.deepEqual([...out], [pack(0, 0, 255), pack(255, 0, 0), pack(127, 255, 63), NONFINITE]);
  // channels last: [h, w, 3]
  const last = new Float32Array([0, 0, 1, 1, 0, 0]);
  const one = new Uint32Array(2);
  paintRGB(one, 0, 2, last, 0, 6, 3, 1, 1, 2, 0, 1);
  assert.deepEqual([...one], [pack(0, 0, 255), pack(255, 0, 0)]);
});

test("images: channels first or last, no channels, flat square rows; anything else is none", () => {
  assert.deepEqual(imageLayout(["image", "channel", "height", "width"], [128, 1, 28, 28]),
    { n: 128, c: 1, ht: 28, wd: 28, per: 784, cs: 784, ys: 28, xs: 1 });
  assert.deepEqual(imageLayout(["image", "rgb", "row", "col"], [4, 3, 20, 14]),
    { n: 4, c: 3, ht: 20, wd: 14, per: 840, cs: 280, ys: 14, xs: 1 });
  assert.deepEqual(imageLayout(["image", "height", "width", "channel"], [4, 32, 32, 3]),
    { n: 4, c: 3, ht: 32, wd: 32, per: 3072, cs: 1, ys: 96, xs: 3 });
  assert.deepEqual(imageLayout(["b", "h", "w", "c"], [2, 10, 12, 3]).xs, 3);  // channels last by their size
  assert.deepEqual(imageLayout(["image", "h", "w"], [8, 5, 7]), { n: 8, c: 1, ht: 5, wd: 7, per: 35, cs: 0, ys: 7, xs: 1 });
  assert.deepEqual(imageLayout(["image", "pixel"], [8, 49]), { n: 8, c: 1, ht: 7, wd: 7, per: 49, cs: 0, ys: 7, xs: 1 });
  assert.equal(imageLayout(["image", "pixel"], [8, 50]), null);
  assert.equal(imageLayout(["image"], [8]), null);
});

test("thumbnails: BCL's grids keep their size; big images get scale 1, tiny ones more", () => {
  assert.deepEqual(thumbLayout(64, 28, 8, 464), { cols: 8, scale: 2 });     // encoder weights
  assert.deepEqual(thumbLayout(128, 28, 16, 928), { cols: 16, scale: 2 });  // the batch
  assert.deepEqual(thumbLayout(3, 28, 16, 928), { cols: 3, scale: 8 });
  assert.deepEqual(thumbLayout(64, 224, 16, 928), { cols: 16, scale: 1 });
});

test("a flat index of a block is named by its dimensions", () => {
  assert.equal(indexWords(["in", "kh", "kw"], [2, 3, 3], 0), "in 0, kh 0, kw 0");
  assert.equal(indexWords(["in", "kh", "kw"], [2, 3, 3], 14), "in 1, kh 1, kw 2");
});
