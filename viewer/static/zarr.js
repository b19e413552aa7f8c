// A Zarr v3 chunk reader for what recording format v1 writes: regular chunk grids, the `bytes`
// codec then `gzip`, float32 / int32 / bool. Array metadata comes inlined in the page (the
// builder copies it from each zarr.json), so reading a chunk is one fetch and this decode.
// Pure functions: no DOM, usable in a worker and under node.

export const DTYPES = {
  float32: Float32Array,
  int32: Int32Array,
  bool: Uint8Array,
};

export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The fill value of zarr.json ("NaN", "Infinity", a number, a boolean, "0x7fc00000") as a number. */
export function parseFill(fill, dtype) {
  if (dtype === "bool") return fill ? 1 : 0;
  if (fill === null || fill === undefined) return dtype === "float32" ? NaN : 0;
  if (typeof fill === "boolean") return fill ? 1 : 0;
  if (typeof fill === "number") return fill;
  if (fill === "NaN") return NaN;
  if (fill === "Infinity") return Infinity;
  if (fill === "-Infinity") return -Infinity;
  if (typeof fill === "string" && /^0x[0-9a-f]+$/i.test(fill) && dtype === "float32") {
    const view = new DataView(new ArrayBuffer(4));
    view.setUint32(0, parseInt(fill, 16));
    return view.getFloat32(0);
  }
  throw new Error(`unsupported fill value ${JSON.stringify(fill)} for ${dtype}`);
}

/** Elements in one chunk. */
export function chunkLength(meta) {
  return meta.chunks.reduce((a, b) => a * b, 1);
}

/** Elements per step inside a chunk (the product of the chunk shape after the step dimension). */
export function rowLength(meta) {
  return meta.chunks.slice(1).reduce((a, b) => a * b, 1);
}

/** Which chunk along the step dimension holds `step`. */
export function chunkIndex(meta, step) {
  return Math.floor(step / meta.chunks[0]);
}

/** Number of chunks along the step dimension covering steps [0, steps). */
export function chunkCount(meta, steps) {
  return Math.ceil(steps / meta.chunks[0]);
}

/** The chunk's key relative to the array: `c/17/0/0` (default encoding) or `17.0.0` (v2). */
export function chunkKey(meta, index) {
  const coords = [index, ...meta.chunks.slice(1).map(() => 0)];
  const sep = meta.sep || "/";
  if (meta.encoding === "v2") return coords.join(sep);
  return ["c", ...coords].join(sep);
}

export function chunkPath(meta, index) {
  return `${meta.path}/${chunkKey(meta, index)}`;
}

/** A chunk that was never written: every element the fill value. */
export function fillChunk(meta) {
  const out = new DTYPES[meta.dtype](chunkLength(meta));
  const fill = parseFill(meta.fill, meta.dtype);
  if (fill !== 0) out.fill(fill);
  return out;
}

/** gzip bytes (ArrayBuffer, typed array or ReadableStream) -> ArrayBuffer, by the platform's decoder. */
export async function gunzip(input) {
  const stream = input instanceof ReadableStream ? input : new Blob([input]).stream();
  return new Response(stream.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
}

/** Reverse the byte order of each element in place (a big-endian chunk on a little-endian host, or back). */
export function swapBytes(buffer, size) {
  const b = new Uint8Array(buffer);
  for (let i = 0; i < b.length; i += size) {
    for (let lo = i, hi = i + size - 1; lo < hi; lo++, hi--) {
      const t = b[lo]; b[lo] = b[hi]; b[hi] = t;
    }
  }
  return buffer;
}

/** The `bytes` codec: raw bytes -> typed array of the array's dtype and endianness. */
export function fromBytes(buffer, meta) {
  const Type = DTYPES[meta.dtype];
  if (!Type) throw new Error(`unsupported data type ${meta.dtype}`);
  if (buffer.byteLength % Type.BYTES_PER_ELEMENT) throw new Error(`${buffer.byteLength} bytes is not a whole number of ${meta.dtype}`);
  const little = (meta.endian || "little") === "little";
  if (Type.BYTES_PER_ELEMENT > 1 && little !== HOST_LITTLE_ENDIAN) swapBytes(buffer, Type.BYTES_PER_ELEMENT);
  return new Type(buffer);
}

/** Decode one stored chunk (its codecs applied in reverse) and check it has the chunk's size. */
export async function decodeChunk(input, meta) {
  let buffer = input;
  const codecs = meta.codecs || ["bytes", "gzip"];
  for (let i = codecs.length - 1; i >= 1; i--) {
    if (codecs[i] !== "gzip") throw new Error(`unsupported codec ${codecs[i]}`);
    buffer = await gunzip(buffer);
  }
  if (buffer instanceof ReadableStream) buffer = await new Response(buffer).arrayBuffer();
  if (ArrayBuffer.isView(buffer)) buffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const out = fromBytes(buffer, meta);
  if (out.length !== chunkLength(meta)) {
    throw new Error(`${meta.path}: chunk has ${out.length} elements, expected ${chunkLength(meta)}`);
  }
  return out;
}
