// The byte codecs of a Zarr v3 chunk that follow `bytes`, undone: `gzip` by the platform's decoder
// (DecompressionStream), `blosc` by numcodecs' WebAssembly build (vendored, imported on first use),
// and `crc32c`, checked and stripped. Each takes an ArrayBuffer, a typed array or a ReadableStream.

/** gzip bytes (ArrayBuffer, typed array or ReadableStream) -> ArrayBuffer, by the platform's decoder. */
export async function gunzip(input) {
  const decoder = new DecompressionStream("gzip");
  if (input instanceof ReadableStream) return new Response(input.pipeThrough(decoder)).arrayBuffer();
  // bytes are written in as they are (a Blob of them would be a round trip through the browser
  // process, the larger part of decoding a step); they are read, not taken
  const writer = decoder.writable.getWriter();
  writer.write(input).catch(() => {});  // (a failure shows in what is read)
  writer.close().catch(() => {});
  return new Response(decoder.readable).arrayBuffer();
}

let BLOSC = null;  // the vendored blosc decoder (a promise of it), imported when the first blosc chunk is met

/**
 * The vendored blosc codec (numcodecs.js: its wasm inlined), imported once, on first use. Its glue
 * makes functions from strings: a page whose CSP forbids eval decodes blosc in a worker (data.js).
 */
function bloscCodec() {
  if (!BLOSC) {
    BLOSC = import("./vendor/numcodecs/blosc.js").then((m) => new m.default())
      .catch((err) => { BLOSC = null; throw err; });  // (a later chunk tries again)
  }
  return BLOSC;
}

/** The sizes a blosc frame's 16-byte header gives: { nbytes (decoded), cbytes (the frame's own) }. */
export function bloscSizes(bytes) {
  if (bytes.length < 16) throw new Error(`a blosc chunk of ${bytes.length} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  return { nbytes: view.getUint32(4, true), cbytes: view.getUint32(12, true) };
}

/** An ArrayBuffer, typed array or ReadableStream as a Uint8Array (a view of the same bytes, not a copy). */
async function bytesOf(input) {
  if (input instanceof ReadableStream) input = await new Response(input).arrayBuffer();
  return input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
}

/** blosc bytes (ArrayBuffer, typed array or ReadableStream) -> ArrayBuffer, by the vendored decoder (self-describing frames). */
export async function unblosc(input) {
  const bytes = await bytesOf(input);
  const { nbytes, cbytes } = bloscSizes(bytes);
  if (cbytes !== bytes.length) throw new Error(`a blosc chunk of ${bytes.length} bytes, its header says ${cbytes}`);
  const out = await (await bloscCodec()).decode(bytes);
  if (out.length !== nbytes) throw new Error(`a blosc chunk decoded to ${out.length} bytes, its header says ${nbytes}`);
  return out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.slice().buffer;
}

let CRC32C_TABLES = null;  // slicing-by-8: table k (256 entries from k * 256) advances a byte followed by k zero bytes

/** The CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) lookup tables, made on first use (8 KB). */
function crc32cTables() {
  if (!CRC32C_TABLES) {
    const t = new Int32Array(8 * 256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      t[n] = c;
    }
    for (let n = 0; n < 256; n++) {
      for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
    }
    CRC32C_TABLES = t;
  }
  return CRC32C_TABLES;
}

/** The CRC-32C of a Uint8Array, as an unsigned number (what zarr's `crc32c` codec appends, little-endian). */
export function crc32c(bytes) {
  const t = crc32cTables();
  const n = bytes.length, whole = n - (n % 8);
  let crc = -1, i = 0;
  for (; i < whole; i += 8) {
    const a = crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    crc = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^ t[1280 + ((a >>> 16) & 0xff)] ^ t[1024 + (a >>> 24)]
      ^ t[768 + bytes[i + 4]] ^ t[512 + bytes[i + 5]] ^ t[256 + bytes[i + 6]] ^ t[bytes[i + 7]];
  }
  for (; i < n; i++) crc = (crc >>> 8) ^ t[(crc ^ bytes[i]) & 0xff];
  return (crc ^ -1) >>> 0;
}

/** Undo `crc32c`: check the 4 bytes it appended (little-endian) and strip them; a mismatch is an error, not wrong values. */
export async function uncrc32c(input) {
  const bytes = await bytesOf(input);
  if (bytes.length < 4) throw new Error(`a crc32c chunk of ${bytes.length} bytes is shorter than its checksum`);
  const data = bytes.subarray(0, bytes.length - 4);
  const stored = new DataView(bytes.buffer, bytes.byteOffset + data.length, 4).getUint32(0, true);
  const actual = crc32c(data);
  if (stored !== actual) {
    const hex = (v) => `0x${v.toString(16).padStart(8, "0")}`;
    throw new Error(`crc32c mismatch: a chunk of ${data.length} bytes has checksum ${hex(actual)}, stored ${hex(stored)} (corrupt)`);
  }
  return data;
}

/** Undo one codec after `bytes` in a chunk's codecs: its stored bytes -> what it was given. */
export function decompress(codec, input) {
  if (codec === "crc32c") return uncrc32c(input);
  if (codec === "gzip") return gunzip(input);
  if (codec === "blosc") return unblosc(input);
  throw new Error(`unsupported codec ${codec}`);
}
