// A Zarr v3 chunk reader for what recording format v1 writes: regular chunk grids, the `bytes`
// codec then `gzip`, float32 / int32 / bool, either as one file per chunk or inside shards
// (`sharding_indexed`: one file of several inner chunks, each of whole steps, and an index).
// Array metadata comes inlined in the page (the builder copies it from each zarr.json): reading a
// plain chunk is one fetch; reading an inner chunk is one Range request for the shard's index
// (once per shard, then cached) and one for the chunk's bytes. `meta.chunks` is always the shape
// of the unit decoded (the inner chunk of a sharded array); `meta.shard` the shard shape or null.
// No DOM: usable in a worker, on the page and under node; the only state is the ShardCache a
// caller hands in.

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

// -- shards ---------------------------------------------------------------------------------------

const ENTRY_BYTES = 16;  // one index entry: offset, nbytes (uint64 little-endian each)
const EMPTY = 0xffffffffffffffffn;

/** Bytes of a shard's index: 16 per inner chunk, and 4 of crc32c when the index codecs end with one. */
export function indexSize(meta) {
  return chunksPerShard(meta) * ENTRY_BYTES + (meta.index && meta.index.crc32c ? 4 : 0);
}

/** The Range header value that asks for a shard's index. */
export function indexRange(meta) {
  const n = indexSize(meta);
  return meta.index && meta.index.location === "start" ? `bytes=0-${n - 1}` : `bytes=-${n}`;
}

/** The index bytes within a whole shard file (a server that ignored the Range sent it all). */
export function indexBytes(body, meta) {
  const n = indexSize(meta);
  if (body.length < n) throw new Error(`${meta.path}: a shard of ${body.length} bytes is shorter than its index (${n})`);
  return meta.index && meta.index.location === "start" ? body.subarray(0, n) : body.subarray(body.length - n);
}

/**
 * A shard index (its crc32c, if any, is not checked: every gzip chunk carries its own CRC) as a
 * Float64Array of [offset, nbytes] per inner chunk in C order; an empty inner chunk is [-1, -1].
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

/** The Range header value for inner chunk `slot` of a parsed index (null: the chunk is empty). */
export function chunkRange(entries, slot) {
  const offset = entries[2 * slot], nbytes = entries[2 * slot + 1];
  return offset < 0 ? null : `bytes=${offset}-${offset + nbytes - 1}`;
}

/** Inner chunk `slot`'s bytes within a whole shard file (null: the chunk is empty). */
export function chunkBytes(body, entries, slot, meta) {
  const offset = entries[2 * slot], nbytes = entries[2 * slot + 1];
  if (offset < 0) return null;
  if (offset + nbytes > body.length) throw new Error(`${meta.path}: a shard of ${body.length} bytes is shorter than its index says`);
  return body.subarray(offset, offset + nbytes);
}

/**
 * What reading inner chunks keeps between reads: each shard's parsed index (small; a promise, so
 * that two reads of one shard share one request) and, where a server ignored a Range request and
 * sent a whole shard, the whole shard, least recently used out first within `budgetBytes`.
 * Keyed by the shard's absolute URL.
 */
export class ShardCache {
  constructor(budgetBytes = 64e6, maxIndexes = 4096) {
    this.budget = budgetBytes;
    this.maxIndexes = maxIndexes;
    this.indexes = new Map();   // url -> Promise<Float64Array | null (no such shard)>
    this.bodies = new Map();    // url -> Uint8Array, in order of use (the first: the least recent)
    this.bytes = 0;
    this.versions = new Map();  // url -> times dropped: an answer to a request sent before a drop is not kept
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

  /** What is kept, as plain data for another thread's cache (see `take`): parsed indexes, whole shards. */
  contents() {
    const indexes = [...this.indexes].filter(([, p]) => p.entries !== undefined).map(([url, p]) => [url, p.entries]);
    return { indexes, bodies: [...this.bodies] };
  }

  /** Keep what another cache's `contents()` held. */
  take({ indexes, bodies }) {
    for (const [url, entries] of indexes) {
      if (!this.indexes.has(url)) this.keepIndex(url, Promise.resolve(entries));
    }
    for (const [url, body] of bodies) {
      if (!this.bodies.has(url)) this.keepBody(url, body, this.version(url));
    }
  }

  body(url) {
    const body = this.bodies.get(url);
    if (!body) return null;
    this.bodies.delete(url);
    this.bodies.set(url, body);
    return body;
  }

  keepBody(url, body, version) {
    if (version !== this.version(url) || body.byteLength > this.budget) return;
    this.dropBody(url);
    this.bodies.set(url, body);
    this.bytes += body.byteLength;
    for (const [old, b] of this.bodies) {
      if (this.bytes <= this.budget) break;
      this.bodies.delete(old);
      this.bytes -= b.byteLength;
    }
  }

  dropBody(url) {
    const body = this.bodies.get(url);
    if (!body) return;
    this.bodies.delete(url);
    this.bytes -= body.byteLength;
  }

  /** Forget what is kept of the shard at `url`: the file changed on disk. */
  drop(url) {
    this.indexes.delete(url);
    this.dropBody(url);
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

/** The parsed index of the shard at `url`, null if there is no such file; fetched once per shard. */
function shardIndex(meta, index, url, cache, fetchFn) {
  let promise = cache.index(url);
  if (!promise) {
    const version = cache.version(url);
    promise = (async () => {
      const response = await fetchFn(url, { cache: "no-store", headers: { Range: indexRange(meta) } });
      if (response.status === 404) return null;
      if (response.status === 206) return parseIndex(await responseBytes(response), meta);
      if (response.status === 200) {  // the server ignored the Range: the whole shard
        const body = await responseBytes(response);
        cache.keepBody(url, body, version);
        return parseIndex(indexBytes(body, meta), meta);
      }
      throw httpError(response, meta, index);
    })();
    cache.keepIndex(url, promise);
  }
  return promise;
}

/** Inner chunk `slot`'s stored bytes, from a kept whole shard or by a Range request; null if the shard is gone. */
async function innerBytes(meta, index, url, entries, slot, cache, fetchFn) {
  const whole = cache.body(url);
  if (whole) return chunkBytes(whole, entries, slot, meta);
  const version = cache.version(url);
  const response = await fetchFn(url, { cache: "no-store", headers: { Range: chunkRange(entries, slot) } });
  if (response.status === 404) return null;
  if (response.status === 206) {
    const bytes = await responseBytes(response);
    if (bytes.length !== entries[2 * slot + 1]) throw new Error(`${chunkPath(meta, index)}: got ${bytes.length} bytes of an inner chunk of ${entries[2 * slot + 1]}`);
    return bytes;
  }
  if (response.status === 200) {
    const body = await responseBytes(response);
    cache.keepBody(url, body, version);
    return chunkBytes(body, entries, slot, meta);
  }
  throw httpError(response, meta, index);
}

/**
 * Load chunk `index` of an array (its inner chunk `index` if sharded), as { status, data }: status
 * "ok", or "missing" when it was never written (no file, or an empty slot of its shard: every
 * element the fill value). `base`: the URL the array paths are relative to; `cache`: a ShardCache.
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
  const { slot } = shardOf(meta, index);
  for (let attempt = 0; ; attempt++) {
    const cached = Boolean(cache.index(url));
    try {
      const entries = await shardIndex(meta, index, url, cache, fetchFn);
      if (!entries || entries[2 * slot] < 0) return missing();
      const bytes = await innerBytes(meta, index, url, entries, slot, cache, fetchFn);
      if (!bytes) return missing();
      return { status: "ok", data: await decodeChunk(bytes, meta) };
    } catch (err) {
      // an index kept from before may describe a shard since rewritten: once more, afresh
      if (!cached || attempt > 0) throw err;
      cache.drop(url);
    }
  }
}
