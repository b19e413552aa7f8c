// Numbers for the page: summaries of arrays, the mean off-diagonal of a matrix, binning a
// [steps, features] series to screen width, sort orders, and how a value is printed. Pure: no DOM.

export function isFiniteNumber(v) {
  return v === v && v !== Infinity && v !== -Infinity;
}

/** mean / min / max of the finite values of data[offset + i*stride], i < count; NaN when none. */
export function finiteStats(data, offset = 0, count = data.length, stride = 1) {
  let sum = 0, n = 0, min = Infinity, max = -Infinity, nonfinite = 0;
  for (let i = 0, j = offset; i < count; i++, j += stride) {
    const v = data[j];
    if (!isFiniteNumber(v)) { nonfinite++; continue; }
    sum += v; n++;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return n ? { mean: sum / n, min, max, count: n, nonfinite } : { mean: NaN, min: NaN, max: NaN, count: 0, nonfinite };
}

/** Mean of the off-diagonal entries of an n x n row-major matrix (NaN if any entry is not finite). */
export function offdiagMean(m, n, offset = 0) {
  if (n < 2) return NaN;
  let sum = 0;
  for (let r = 0; r < n; r++) {
    const row = offset + r * n;
    for (let c = 0; c < n; c++) if (c !== r) sum += m[row + c];
  }
  return sum / (n * n - n);
}

/**
 * A [steps, width] series (row-major, `width` values per step) as a [width, bins] matrix: row =
 * the series' column (a feature), column = a bin of consecutive steps, value = the mean over the
 * bin's finite values. Returns { data, bins, start } where start[b] is the first step of bin b.
 */
export function binSteps(series, steps, width, maxBins) {
  const bins = Math.max(1, Math.min(steps, maxBins));
  const start = new Int32Array(bins + 1);
  for (let b = 0; b <= bins; b++) start[b] = Math.floor((b * steps) / bins);
  const data = new Float32Array(width * bins);
  for (let b = 0; b < bins; b++) {
    for (let f = 0; f < width; f++) {
      let sum = 0, n = 0;
      for (let s = start[b]; s < start[b + 1]; s++) {
        const v = series[s * width + f];
        if (isFiniteNumber(v)) { sum += v; n++; }
      }
      data[f * bins + b] = n ? sum / n : NaN;
    }
  }
  return { data, bins, start };
}

/** Indices 0..n-1 ordered by value(i), ascending or not; non-finite values last; ties by index. */
export function sortOrder(n, value, ascending = true) {
  const idx = Array.from({ length: n }, (_, i) => i);
  const sign = ascending ? 1 : -1;
  idx.sort((a, b) => {
    const va = value(a), vb = value(b);
    const fa = isFiniteNumber(va), fb = isFiniteNumber(vb);
    if (fa !== fb) return fa ? -1 : 1;
    if (fa && va !== vb) return sign * (va - vb);
    return a - b;
  });
  return idx;
}

/** A value as the page prints it: 4 significant digits, exponent notation for tiny or huge values. */
export function formatValue(v) {
  if (v === undefined || v === null) return "–";
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
  return v.toPrecision(4);
}
