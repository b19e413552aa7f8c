// A Zarr v3 chunk reader for what the recording formats write: regular chunk grids, the `bytes`
// codec then `gzip` or `blosc` (or neither) then `crc32c` (or not), every data type of DTYPES,
// either as one file per chunk or inside shards (`sharding_indexed`: one file of several inner
// chunks, each of whole steps, and an index).
// Array metadata comes inlined in the page (the builder copies it from each zarr.json): reading a
// plain chunk is one fetch; reading an inner chunk is one Range request for its bytes and those of
// the chunks beside it (kept for the next reads), where the shard index the page builder wrote
// (one file for every shard, fetched once) says they lie; for steps it does not cover, one Range
// request for the shard's own index first (once per shard, then cached). `meta.chunks` is always
// the shape of the unit decoded (the inner chunk of a sharded array); `meta.shard` the shard shape
// or null. No DOM: usable in a worker, on the page and under node; the only state is the
// ShardCache a caller hands in.

import { decompress } from "./codecs.js";

// data type -> the typed array a chunk decodes to: float16 is widened to float32 as it is decoded,
// int64 to float64 (exact up to 2^53; JS numbers are doubles), bool to one byte per value
export const DTYPES = {
  float32: Float32Array,
  float16: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: Float64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
};

// the typed array a chunk's stored bytes are read as, where it is not the decoded one
const STORED = { float16: Uint16Array, int64: BigInt64Array };

/** int64 values as numbers (a BigInt64Array -> a Float64Array of the same values, rounded beyond 2^53). */
export function int64ToNumbers(values) {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Number(values[i]);
  return out;
}

/** An IEEE 754 half-precision number (its 16 bits) as a JS number. */
export function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;            // zero and subnormals
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let HALF_TABLE = null;  // all 65536 halves as float32, made on first use (256 KB)

/** float16 bits -> a Float32Array of the same values (exact: every half is a float32). */
export function widenHalves(bits) {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) HALF_TABLE[h] = halfToNumber(h);
  }
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = HALF_TABLE[bits[i]];
  return out;
}

export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The fill value of zarr.json ("NaN", "Infinity", a number, a boolean, "0x7fc00000") as a number. */
export function parseFill(fill, dtype) {
  if (dtype === "bool") return fill ? 1 : 0;
  if (fill === null || fill === undefined) return dtype.startsWith("float") ? NaN : 0;
  if (typeof fill === "boolean") return fill ? 1 : 0;
  if (typeof fill === "number") return fill;
  if (fill === "NaN") return NaN;
  if (fill === "Infinity") return Infinity;
  if (fill === "-Infinity") return -Infinity;
  if (typeof fill === "string" && /^0x[0-9a-f]+$/i.test(fill) && dtype === "float16") return halfToNumber(parseInt(fill, 16));
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

/** Inner chunks per shard (1 for a plain array: a chunk is its own file). */
export function chunksPerShard(meta) {
  return meta.shard ? meta.shard[0] / meta.chunks[0] : 1;
}

/** The file holding chunk `index` (a shard, or the chunk itself) and the chunk's slot in the shard's index. */
export function shardOf(meta, index) {
  const per = chunksPerShard(meta);
  return { file: Math.floor(index / per), slot: index % per };
}

/**
 * The key of file `file` of the chunk grid (a shard of a sharded array), relative to the array:
 * `c/17/0/0` or `c.17.0.0` (default encoding), `17.0.0` (v2).
 */
export function chunkKey(meta, file) {
  const coords = [file, ...meta.chunks.slice(1).map(() => 0)];
  const sep = meta.sep || "/";
  if (meta.encoding === "v2") return coords.join(sep);
  return ["c", ...coords].join(sep);
}

/** The path of the file that holds chunk `index` (its shard for a sharded array). */
export function chunkPath(meta, index) {
  return `${meta.path}/${chunkKey(meta, shardOf(meta, index).file)}`;
}

/** A chunk that was never written: every element the fill value. */
export function fillChunk(meta) {
  const out = new DTYPES[meta.dtype](chunkLength(meta));
  const fill = parseFill(meta.fill, meta.dtype);
  if (fill !== 0) out.fill(fill);
  return out;
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

/** The `bytes` codec: raw bytes -> typed array of the array's dtype and endianness (see DTYPES). */
export function fromBytes(buffer, meta) {
  if (!DTYPES[meta.dtype]) throw new Error(`unsupported data type ${meta.dtype}`);
  const Type = STORED[meta.dtype] || DTYPES[meta.dtype];
  if (buffer.byteLength % Type.BYTES_PER_ELEMENT) throw new Error(`${buffer.byteLength} bytes is not a whole number of ${meta.dtype}`);
  const little = (meta.endian || "little") === "little";
  if (Type.BYTES_PER_ELEMENT > 1 && little !== HOST_LITTLE_ENDIAN) swapBytes(buffer, Type.BYTES_PER_ELEMENT);
  const values = new Type(buffer);
  if (meta.dtype === "float16") return widenHalves(values);
  if (meta.dtype === "int64") return int64ToNumbers(values);
  return values;
}

/** Decode one stored chunk (its codecs applied in reverse) and check it has the chunk's size. */
export async function decodeChunk(input, meta) {
  let buffer = input;
  const codecs = meta.codecs || ["bytes", "gzip"];
  for (let i = codecs.length - 1; i >= 1; i--) buffer = await decompress(codecs[i], buffer);
  if (buffer instanceof ReadableStream) buffer = await new Response(buffer).arrayBuffer();
  if (ArrayBuffer.isView(buffer)) buffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const out = fromBytes(buffer, meta);
  if (out.length !== chunkLength(meta)) {
    throw new Error(`${meta.path}: chunk has ${out.length} elements, expected ${chunkLength(meta)}`);
  }
  return out;
}

// -- shards ---------------------------------------------------------------------------------------

const ENTRY_BYTES = 16;  // one index entry: offset, nbytes (uint64 little-endian each)
const EMPTY = 0xffffffffffffffffn;

/** Bytes of a shard's index: 16 per inner chunk, and 4 of crc32c when the index codecs end with one. */
export function indexSize(meta) {
  return chunksPerShard(meta) * ENTRY_BYTES + (meta.index && meta.index.crc32c ? 4 : 0);
}

/**
 * The Range header value that asks for a shard's index, in a shard of `size` bytes (needed when the
 * index is at the end). Never a suffix range (`bytes=-N`): on a bucket that forces a CORS preflight.
 */
export function indexRange(meta, size) {
  const n = indexSize(meta);
  return meta.index && meta.index.location === "start" ? `bytes=0-${n - 1}` : `bytes=${size - n}-${size - 1}`;
}

/** Whether a shard's index is at its end (the default): reading it needs the shard's size first. */
export function indexAtEnd(meta) {
  return !(meta.index && meta.index.location === "start");
}

/** The index bytes within a whole shard file (a server that ignored the Range sent it all). */
export function indexBytes(body, meta) {
  const n = indexSize(meta);
  if (body.length < n) throw new Error(`${meta.path}: a shard of ${body.length} bytes is shorter than its index (${n})`);
  return meta.index && meta.index.location === "start" ? body.subarray(0, n) : body.subarray(body.length - n);
}

/**
 * A shard index (its crc32c, if any, is not checked: a gzip chunk carries its own CRC, a blosc one
 * its sizes, a crc32c one its checksum) as a Float64Array of [offset, nbytes] per inner chunk in C
 * order; an empty inner chunk is [-1, -1].
 */
export function parseIndex(bytes, meta) {
  const n = chunksPerShard(meta);
  if (bytes.length !== indexSize(meta)) throw new Error(`${meta.path}: shard index of ${bytes.length} bytes, expected ${indexSize(meta)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    const offset = view.getBigUint64(i * ENTRY_BYTES, true);
    const nbytes = view.getBigUint64(i * ENTRY_BYTES + 8, true);
    if (offset === EMPTY && nbytes === EMPTY) {
      out[2 * i] = out[2 * i + 1] = -1;
    } else if (offset + nbytes > BigInt(Number.MAX_SAFE_INTEGER) || nbytes === 0n) {
      throw new Error(`${meta.path}: shard index entry ${i} (offset ${offset}, ${nbytes} bytes) is not a chunk`);
    } else {
      out[2 * i] = Number(offset);
      out[2 * i + 1] = Number(nbytes);
    }
  }
  return out;
}

/** Inner chunk `slot`'s bytes within a whole shard file (null: the chunk is empty). */
export function chunkBytes(body, entries, slot, meta) {
  const offset = entries[2 * slot], nbytes = entries[2 * slot + 1];
  if (offset < 0) return null;
  if (offset + nbytes > body.length) throw new Error(`${meta.path}: a shard of ${body.length} bytes is shorter than its index says`);
  return body.subarray(offset, offset + nbytes);
}

/**
 * The bytes [from, to) of a shard to ask for to read inner chunk `slot` (written): the chunk, with
 * the chunks just before and after it where they lie right beside it in the file (the recorder
 * writes a shard's steps one after another) and `want(neighbour's slot)` says so (no: its bytes
 * are held already). One request then also brings the steps a viewer shows next.
 */
export function chunkSpan(entries, slot, want = () => true) {
  let from = entries[2 * slot], to = from + entries[2 * slot + 1];
  const before = slot - 1, after = slot + 1;
  if (before >= 0 && entries[2 * before] >= 0 && entries[2 * before] + entries[2 * before + 1] === from && want(before)) {
    from = entries[2 * before];
  }
  if (2 * after < entries.length && entries[2 * after] === to && want(after)) to += entries[2 * after + 1];
  return [from, to];
}

// -- the built shard index ------------------------------------------------------------------------

/**
 * The shard index file the page builder writes (viewer/build.py `shard_index`): per sharded array,
 * the (offset, nbytes) of its first `chunks` inner chunks, `width`-byte little-endian numbers, all
 * ones for a chunk not written. `spec`: { bytes, width, arrays: { path: { at, chunks } } } from the
 * page. Returns a Map from array path to its pairs (Uint32Array or BigUint64Array); throws if the
 * file is not the one `spec` describes.
 */
export function parseBuiltIndex(buffer, spec) {
  if (buffer.byteLength !== spec.bytes) throw new Error(`shard index file of ${buffer.byteLength} bytes, expected ${spec.bytes}`);
  if (spec.width !== 4 && spec.width !== 8) throw new Error(`shard index entries of ${spec.width} bytes`);
  if (!HOST_LITTLE_ENDIAN) buffer = swapBytes(buffer.slice(0), spec.width);
  const Type = spec.width === 4 ? Uint32Array : BigUint64Array;
  const parts = new Map();
  for (const [path, { at, chunks }] of Object.entries(spec.arrays)) parts.set(path, new Type(buffer, at, 2 * chunks));
  return parts;
}

/**
 * Shard `file`'s index as `parseIndex` gives it, from a built index (null: the array is not in it).
 * Slots past the chunks it covers (steps recorded since the build) are NaN: not known.
 */
export function builtEntries(built, meta, file) {
  const part = built && built.get(meta.path);
  if (!part) return null;
  const per = chunksPerShard(meta);
  const empty = part instanceof Uint32Array ? 0xffffffff : EMPTY;
  const out = new Float64Array(2 * per).fill(NaN);
  for (let slot = 0, c = file * per; slot < per && 2 * c < part.length; slot++, c++) {
    const written = part[2 * c] !== empty;
    out[2 * slot] = written ? Number(part[2 * c]) : -1;
    out[2 * slot + 1] = written ? Number(part[2 * c + 1]) : -1;
  }
  return out;
}

/** The built shard index's bytes (see parseBuiltIndex), fetched once for a page. */
export async function fetchBuiltIndex(spec, base, fetchFn = fetch) {
  const response = await fetchFn(new URL(spec.path, base).href, { cache: "no-store" });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${spec.path}`);
  return response.arrayBuffer();
}

/**
 * What reading inner chunks keeps between reads, keyed by the shard's absolute URL: each shard's
 * index read from the shard (small; a promise, so that two reads of one shard share one request),
 * the built index of the page (once it arrives: reads wait for it), and the known bytes of shards:
 * spans of chunks read with their neighbours, or whole shards from a server that ignored a Range
 * request, least recently used shard out first within `budgetBytes`.
 */
export class ShardCache {
  constructor(budgetBytes = 64e6, maxIndexes = 4096) {
    this.budget = budgetBytes;
    this.maxIndexes = maxIndexes;
    this.indexes = new Map();   // url -> Promise<Float64Array | null (no such shard)>
    this.spans = new Map();     // url -> [{ start, bytes }], in order of use (the first: the least recent)
    this.bytes = 0;
    this.versions = new Map();  // url -> times dropped: an answer to a request sent before a drop is not kept
    this.built = null;          // parseBuiltIndex's Map, once it arrived
    this.ready = Promise.resolve();
    this.unbuilt = new Set();   // shards dropped since: the built index no longer speaks for them
  }

  version(url) {
    return this.versions.get(url) || 0;
  }

  index(url) {
    return this.indexes.get(url);
  }

  keepIndex(url, promise) {
    this.indexes.set(url, promise);
    if (this.indexes.size > this.maxIndexes) this.indexes.delete(this.indexes.keys().next().value);
    promise.then((entries) => { promise.entries = entries; },
      () => { if (this.indexes.get(url) === promise) this.indexes.delete(url); });
  }

  /** Use the built shard index whose bytes `buffer` (a promise of them, or null) brings; reads wait for it. */
  useBuilt(buffer, spec) {
    this.ready = Promise.resolve(buffer).then((b) => { this.built = b ? parseBuiltIndex(b, spec) : null; })
      .catch((err) => { console.warn(`reading shard indexes from the shards: ${err.message}`); });
  }

  /** Shard `file`'s index from the built index, if that knows inner chunk `slot` and the shard did not change since. */
  builtIndex(meta, file, slot, url) {
    if (this.unbuilt.has(url)) return null;
    const entries = builtEntries(this.built, meta, file);
    return entries && !Number.isNaN(entries[2 * slot]) ? entries : null;
  }

  /** `nbytes` bytes at `offset` of the shard at `url` if they are held (a view, not a copy), else null. */
  held(url, offset, nbytes) {
    const spans = this.spans.get(url);
    const span = spans && spans.find((s) => s.start <= offset && offset + nbytes <= s.start + s.bytes.length);
    if (!span) return null;
    this.spans.delete(url);
    this.spans.set(url, spans);
    return span.bytes.subarray(offset - span.start, offset - span.start + nbytes);
  }

  /**
   * Keep `bytes`, the shard at `url` from byte `start` on (all of it from a server that ignored a
   * Range), asked for at `version` (see version()); spans it covers go. Least recently used shards
   * go while over budget.
   */
  keep(url, start, bytes, version) {
    if (version !== this.version(url) || bytes.byteLength > this.budget) return;
    const end = start + bytes.length;
    const spans = (this.spans.get(url) || []).filter((s) => {
      const covered = start <= s.start && s.start + s.bytes.length <= end;
      if (covered) this.bytes -= s.bytes.byteLength;
      return !covered;
    });
    spans.push({ start, bytes });
    this.bytes += bytes.byteLength;
    this.spans.delete(url);
    this.spans.set(url, spans);
    for (const [old, list] of this.spans) {
      if (this.bytes <= this.budget) break;
      this.dropSpans(old, list);
    }
  }

  dropSpans(url, list = this.spans.get(url)) {
    if (!list) return;
    this.spans.delete(url);
    for (const s of list) this.bytes -= s.bytes.byteLength;
  }

  /** What is kept, as plain data for another thread's cache (see `take`). */
  contents() {
    const indexes = [...this.indexes].filter(([, p]) => p.entries !== undefined).map(([url, p]) => [url, p.entries]);
    return { indexes, spans: [...this.spans], unbuilt: [...this.unbuilt] };
  }

  /** Keep what another cache's `contents()` held. */
  take({ indexes, spans, unbuilt }) {
    for (const url of unbuilt) this.unbuilt.add(url);
    for (const [url, entries] of indexes) {
      if (!this.indexes.has(url)) this.keepIndex(url, Promise.resolve(entries));
    }
    for (const [url, list] of spans) {
      for (const s of list) this.keep(url, s.start, s.bytes, this.version(url));
    }
  }

  /** Forget what is known of the shard at `url`: the file changed on disk. */
  drop(url) {
    this.indexes.delete(url);
    this.dropSpans(url);
    this.unbuilt.add(url);
    this.versions.set(url, this.version(url) + 1);
  }

  /** Forget the shard that holds chunk `index` of an array. */
  dropChunk(meta, index, base) {
    if (meta.shard) this.drop(new URL(chunkPath(meta, index), base).href);
  }
}

function httpError(response, meta, index) {
  return new Error(`${response.status} ${response.statusText} for ${chunkPath(meta, index)}`);
}

async function responseBytes(response) {
  return new Uint8Array(await response.arrayBuffer());
}

/** The index of the shard at `url` read from the shard, null if there is no such file; once per shard. */
function readIndex(meta, index, url, cache, fetchFn) {
  let promise = cache.index(url);
  if (!promise) {
    const version = cache.version(url);
    promise = (async () => {
      let size;
      if (indexAtEnd(meta)) {  // its size by a HEAD, then a plain range (no suffix range)
        const head = await fetchFn(url, { method: "HEAD", cache: "no-store" });
        await head.arrayBuffer();  // (empty; read so that the request ends, not aborted when dropped)
        if (head.status === 404) return null;
        if (!head.ok) throw httpError(head, meta, index);
        size = Number(head.headers.get("Content-Length"));
        if (!Number.isSafeInteger(size)) throw new Error(`${meta.path}: no Content-Length for ${url}`);
        if (size < indexSize(meta)) throw new Error(`${meta.path}: a shard of ${size} bytes is shorter than its index (${indexSize(meta)})`);
      }
      const response = await fetchFn(url, { cache: "no-store", headers: { Range: indexRange(meta, size) } });
      if (response.status === 404) return null;
      if (response.status === 206) return parseIndex(await responseBytes(response), meta);
      if (response.status === 200) {  // the server ignored the Range: the whole shard
        const body = await responseBytes(response);
        cache.keep(url, 0, body, version);
        return parseIndex(indexBytes(body, meta), meta);
      }
      throw httpError(response, meta, index);
    })();
    cache.keepIndex(url, promise);
  }
  return promise;
}

/**
 * Inner chunk `slot`'s stored bytes: held already, or by one Range request that brings its
 * neighbours too (see chunkSpan), kept for the next reads; null if the shard is gone.
 */
async function innerBytes(meta, index, url, entries, slot, cache, fetchFn) {
  const offset = entries[2 * slot], nbytes = entries[2 * slot + 1];
  const held = cache.held(url, offset, nbytes);
  if (held) return held;
  const [from, to] = chunkSpan(entries, slot, (s) => !cache.held(url, entries[2 * s], entries[2 * s + 1]));
  const version = cache.version(url);
  const response = await fetchFn(url, { cache: "no-store", headers: { Range: `bytes=${from}-${to - 1}` } });
  if (response.status === 404) return null;
  if (response.status === 206) {
    const bytes = await responseBytes(response);
    if (bytes.length !== to - from) throw new Error(`${chunkPath(meta, index)}: got ${bytes.length} bytes of the ${to - from} asked for`);
    cache.keep(url, from, bytes, version);
    return bytes.subarray(offset - from, offset - from + nbytes);
  }
  if (response.status === 200) {
    const body = await responseBytes(response);
    cache.keep(url, 0, body, version);
    return chunkBytes(body, entries, slot, meta);
  }
  throw httpError(response, meta, index);
}

/**
 * Load chunk `index` of an array (its inner chunk `index` if sharded), as { status, data }: status
 * "ok", or "missing" when it was never written (no file, or an empty slot of its shard: every
 * element the fill value). `base`: the URL the array paths are relative to; `cache`: a ShardCache.
 * Where an inner chunk lies comes from the built index, or else the shard's own (read once).
 * Every request bypasses the HTTP cache: a live session rewrites files.
 */
export async function loadChunk(meta, index, base, cache, fetchFn = fetch) {
  const url = new URL(chunkPath(meta, index), base).href;
  const missing = () => ({ status: "missing", data: fillChunk(meta) });
  if (!meta.shard) {
    const response = await fetchFn(url, { cache: "no-store" });
    if (response.status === 404) return missing();
    if (!response.ok) throw httpError(response, meta, index);
    return { status: "ok", data: await decodeChunk(response.body, meta) };
  }
  const { file, slot } = shardOf(meta, index);
  await cache.ready;
  for (let attempt = 0; ; attempt++) {
    // an index known before this read (kept, or built) may describe a shard since rewritten
    const known = cache.index(url) || cache.builtIndex(meta, file, slot, url);
    try {
      const entries = await (known || readIndex(meta, index, url, cache, fetchFn));
      if (!entries || entries[2 * slot] < 0) return missing();
      const bytes = await innerBytes(meta, index, url, entries, slot, cache, fetchFn);
      if (!bytes) return missing();
      return { status: "ok", data: await decodeChunk(bytes, meta) };
    } catch (err) {
      // once more, with what the shard's own index says now
      if (!known || attempt > 0) throw err;
      cache.drop(url);
    }
  }
}
