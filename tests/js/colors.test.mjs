import assert from "node:assert/strict";
import test from "node:test";

import { NONFINITE, colorIndex, lut, mapFor, pack, paint, sample, unpack, valueRange } from "../../viewer/static/colors.js";

test("maps run from their first to their last stop", () => {
  assert.deepEqual(sample("viridis", 0), [0x44, 0x01, 0x54]);
  assert.deepEqual(sample("viridis", 1), [0xfd, 0xe7, 0x25]);
  assert.deepEqual(sample("gray", 0), [0, 0, 0]);
  assert.deepEqual(sample("gray", 1), [255, 255, 255]);
  assert.deepEqual(sample("gray", 0.5), [128, 128, 128]);
  assert.deepEqual(sample("viridis", -3), sample("viridis", 0));
  assert.throws(() => sample("rainbow", 0.5));
});

test("the diverging map is white at its middle, blue below, red above", () => {
  assert.deepEqual(sample("diverging", 0.5), [0xf7, 0xf7, 0xf7]);
  const [r0, , b0] = sample("diverging", 0.1);
  const [r1, , b1] = sample("diverging", 0.9);
  assert.ok(b0 > r0, "negative side is blue");
  assert.ok(r1 > b1, "positive side is red");
});

test("lookup tables hold 256 opaque packed colours", () => {
  const t = lut("viridis");
  assert.equal(t.length, 256);
  assert.deepEqual(unpack(t[0]), [0x44, 0x01, 0x54]);
  assert.deepEqual(unpack(t[255]), [0xfd, 0xe7, 0x25]);
  const bytes = new Uint8Array(new Uint32Array([pack(1, 2, 3)]).buffer);
  assert.deepEqual(Array.from(bytes), [1, 2, 3, 255], "ImageData byte order r, g, b, a");
  assert.equal(lut("viridis"), t, "cached");
});

test("signed data gets a range symmetric around zero", () => {
  assert.deepEqual(valueRange(new Float32Array([-0.5, 2, 1]), true), { lo: -2, hi: 2, nonfinite: 0 });
  assert.deepEqual(valueRange(new Float32Array([-3, 1]), true), { lo: -3, hi: 3, nonfinite: 0 });
  assert.deepEqual(valueRange(new Float32Array([0, 0]), true), { lo: -1, hi: 1, nonfinite: 0 });
});

test("ranges skip and count non-finite values, and are never empty", () => {
  assert.deepEqual(valueRange(new Float32Array([NaN, 2, Infinity, 5, -Infinity])), { lo: 2, hi: 5, nonfinite: 3 });
  assert.deepEqual(valueRange(new Float32Array([NaN, NaN])), { lo: 0, hi: 1, nonfinite: 2 });
  assert.deepEqual(valueRange(new Float32Array([0, 0, 0])), { lo: 0, hi: 1, nonfinite: 0 });
  assert.deepEqual(valueRange(new Float32Array([3, 3])), { lo: 0, hi: 3, nonfinite: 0 });
  assert.deepEqual(valueRange(new Float32Array([-3, -3])), { lo: -3, hi: 0, nonfinite: 0 });
  assert.deepEqual(valueRange(new Float32Array([9, 1, 2, 3, 9]), false, 1, 3), { lo: 1, hi: 3, nonfinite: 0 });
});

test("values map to table indices, clamped; non-finite to -1", () => {
  assert.equal(colorIndex(0, 0, 1), 0);
  assert.equal(colorIndex(1, 0, 1), 255);
  assert.equal(colorIndex(0.5, 0, 1), 127);
  assert.equal(colorIndex(-7, 0, 1), 0);
  assert.equal(colorIndex(7, 0, 1), 255);
  assert.equal(colorIndex(0, -1, 1), 127);
  assert.equal(colorIndex(NaN, 0, 1), -1);
  assert.equal(colorIndex(Infinity, 0, 1), -1);
});

test("paint writes a strided block and marks non-finite cells", () => {
  const table = lut("gray");
  const data = new Float32Array([0, 1, NaN, 0.5, 0, 1]);  // 2 x 3, row-major
  const out = new Uint32Array(6);
  paint(out, 0, 2, data, 0, 1, 3, 3, 2, 0, 1, table);  // transposed: 3 rows x 2 cols
  assert.deepEqual(Array.from(out), [table[0], table[127], table[255], table[0], NONFINITE, table[255]]);
  assert.equal(out.filter((p) => p === NONFINITE).length, 1);
});

test("signed keys diverge; images and weights are grey; the rest viridis", () => {
  assert.equal(mapFor({ signed: true }), "diverging");
  assert.equal(mapFor({ signed: true, image: true }), "diverging");
  assert.equal(mapFor({ signed: false, image: true }), "gray");
  assert.equal(mapFor({ signed: false }), "viridis");
});
