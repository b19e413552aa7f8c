// Colour maps as 256-entry lookup tables of packed RGBA pixels (for a Uint32Array view of
// ImageData), the value range a map spans, and value -> colour. Pure: no DOM.

const STOPS = {
  // sequential, perceptually uniform (dark violet -> yellow)
  viridis: ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725"],
  // diverging around the middle: blue (negative), white (zero), red (positive)
  diverging: ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"],
  // images: black -> white
  gray: ["#000000", "#ffffff"],
};

export const NONFINITE_CSS = "#ff00ff"; // NaN and +-Inf, in every map

export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** One opaque pixel as the Uint32 that writes bytes r, g, b, 255 into ImageData. */
export function pack(r, g, b) {
  return HOST_LITTLE_ENDIAN
    ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0
    : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
}

export function unpack(p) {
  return HOST_LITTLE_ENDIAN ? [p & 255, (p >>> 8) & 255, (p >>> 16) & 255] : [p >>> 24, (p >>> 16) & 255, (p >>> 8) & 255];
}

/** [r, g, b] of the map at t in [0, 1] (linear between its stops). */
export function sample(name, t) {
  const stops = STOPS[name];
  if (!stops) throw new Error(`unknown colour map ${name}`);
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const a = hexToRgb(stops[i]), b = hexToRgb(stops[i + 1]);
  return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
}

const luts = new Map();

/** 256 packed colours of a map (cached). */
export function lut(name) {
  if (!luts.has(name)) {
    const out = new Uint32Array(256);
    for (let i = 0; i < 256; i++) out[i] = pack(...sample(name, i / 255));
    luts.set(name, out);
  }
  return luts.get(name);
}

export const NONFINITE = pack(...hexToRgb(NONFINITE_CSS));

/** The map for a key: signed data diverges around 0; images and weights are grey, others viridis. */
export function mapFor({ signed, image }) {
  if (signed) return "diverging";
  return image ? "gray" : "viridis";
}

/**
 * The range [lo, hi] a colour map spans for data[offset .. offset+length): the finite min and max,
 * symmetric around 0 for signed data. Never empty (lo < hi). Also counts non-finite values.
 */
export function valueRange(data, signed = false, offset = 0, length = data.length - offset) {
  let lo = Infinity, hi = -Infinity, nonfinite = 0;
  for (let i = offset, end = offset + length; i < end; i++) {
    const v = data[i];
    if (v !== v || v === Infinity || v === -Infinity) { nonfinite++; continue; }
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > hi) { lo = 0; hi = 1; }
  if (signed) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return { lo: -m, hi: m, nonfinite };
  }
  if (lo === hi) {
    if (lo === 0) hi = 1;
    else if (lo > 0) lo = 0;
    else hi = 0;
  }
  return { lo, hi, nonfinite };
}

/** Index 0..255 into a lookup table, or -1 for a non-finite value. */
export function colorIndex(v, lo, hi) {
  if (v !== v || v === Infinity || v === -Infinity) return -1;
  const t = (v - lo) / (hi - lo);
  return t <= 0 ? 0 : t >= 1 ? 255 : Math.floor(t * 255.999);
}

/**
 * Paint values into packed pixels: out[outOffset + r*outStride + c] = colour of
 * data[offset + r*rowStride + c*colStride], for a rows x cols block.
 */
export function paint(out, outOffset, outStride, data, offset, rowStride, colStride, rows, cols, lo, hi, table) {
  const scale = 255.999 / (hi - lo);
  for (let r = 0; r < rows; r++) {
    let o = outOffset + r * outStride;
    let i = offset + r * rowStride;
    for (let c = 0; c < cols; c++, o++, i += colStride) {
      const v = data[i];
      if (v !== v || v === Infinity || v === -Infinity) { out[o] = NONFINITE; continue; }
      const t = (v - lo) * scale;
      out[o] = table[t <= 0 ? 0 : t >= 255 ? 255 : t | 0];
    }
  }
}

/**
 * Paint RGB pixels: the pixel at (r, c) of a rows x cols block takes its red, green and blue from
 * data[i], data[i + chanStride], data[i + 2*chanStride] (i = offset + r*rowStride + c*colStride),
 * each mapped linearly from [lo, hi] to 0..255; a pixel with a non-finite channel is NONFINITE.
 */
export function paintRGB(out, outOffset, outStride, data, offset, rowStride, colStride, chanStride, rows, cols, lo, hi) {
  const scale = 255.999 / (hi - lo);
  const byte = (v) => { const t = (v - lo) * scale; return t <= 0 ? 0 : t >= 255 ? 255 : t | 0; };
  for (let r = 0; r < rows; r++) {
    let o = outOffset + r * outStride;
    let i = offset + r * rowStride;
    for (let c = 0; c < cols; c++, o++, i += colStride) {
      const R = data[i], G = data[i + chanStride], B = data[i + 2 * chanStride];
      const finite = R - R === 0 && G - G === 0 && B - B === 0;
      out[o] = finite ? pack(byte(R), byte(G), byte(B)) : NONFINITE;
    }
  }
}
