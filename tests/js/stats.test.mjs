import assert from "node:assert/strict";
import test from "node:test";

import { binSteps, finiteStats, formatValue, offdiagMean, sortOrder } from "../../viewer/static/stats.js";

test("mean off-diagonal of a cosine matrix", () => {
  // [[1, .2, .4], [.2, 1, .6], [.4, .6, 1]]: off-diagonal mean = (2 * (.2 + .4 + .6)) / 6 = 0.4
  const m = new Float32Array([1, 0.2, 0.4, 0.2, 1, 0.6, 0.4, 0.6, 1]);
  assert.ok(Math.abs(offdiagMean(m, 3) - 0.4) < 1e-7);
  const eye = new Float32Array(16);
  for (let i = 0; i < 4; i++) eye[i * 5] = 1;
  assert.equal(offdiagMean(eye, 4), 0);
  const ones = new Float32Array(64 * 64).fill(1);
  assert.equal(offdiagMean(ones, 64), 1);
  assert.ok(Number.isNaN(offdiagMean(new Float32Array([1]), 1)));
  assert.ok(Number.isNaN(offdiagMean(new Float32Array([1, NaN, 0, 1]), 2)));
});

test("finite stats skip NaN and Inf and honour offset and stride", () => {
  const s = finiteStats(new Float32Array([1, NaN, 3, Infinity, -2]));
  assert.deepEqual(s, { mean: 2 / 3, min: -2, max: 3, count: 3, nonfinite: 2 });
  const col = finiteStats(new Float32Array([1, 10, 2, 20, 3, 30]), 1, 3, 2);
  assert.deepEqual([col.mean, col.min, col.max], [20, 10, 30]);
  assert.ok(Number.isNaN(finiteStats(new Float32Array([NaN])).mean));
});

test("binning steps to screen width averages each bin, per feature", () => {
  // 4 steps x 2 features: feature 0 = step, feature 1 = 10 * step
  const series = new Float32Array([0, 0, 1, 10, 2, 20, 3, 30]);
  const full = binSteps(series, 4, 2, 100);
  assert.equal(full.bins, 4);
  assert.deepEqual(Array.from(full.data), [0, 1, 2, 3, 0, 10, 20, 30]);  // [feature, step]
  const half = binSteps(series, 4, 2, 2);
  assert.equal(half.bins, 2);
  assert.deepEqual(Array.from(half.start), [0, 2, 4]);
  assert.deepEqual(Array.from(half.data), [0.5, 2.5, 5, 25]);
  const odd = binSteps(new Float32Array([1, NaN, 3]), 3, 1, 1);
  assert.deepEqual(Array.from(odd.data), [2]);
});

test("sort order: ascending or descending, non-finite last, ties by index", () => {
  const v = [3, NaN, 1, 3, -Infinity, 2];
  assert.deepEqual(sortOrder(6, (i) => v[i], true), [2, 5, 0, 3, 1, 4]);
  assert.deepEqual(sortOrder(6, (i) => v[i], false), [0, 3, 5, 2, 1, 4]);
});

test("values print with 4 significant digits", () => {
  assert.equal(formatValue(0.123456), "0.1235");
  assert.equal(formatValue(12.3456), "12.35");
  assert.equal(formatValue(0.00123456), "0.001235");
  assert.equal(formatValue(0.000123456), "1.235e-4");
  assert.equal(formatValue(123456.7), "1.235e+5");
  assert.equal(formatValue(7), "7");
  assert.equal(formatValue(-1), "-1");
  assert.equal(formatValue(0), "0");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.equal(formatValue(undefined), "–");
});
