// Reading inner chunks of sharded arrays (`sharding_indexed`): the index at the end or the start,
// with or without its crc32c, empty slots, and servers that do or do not answer Range requests.
import assert from "node:assert/strict";
import test from "node:test";
import { gzipSync } from "node:zlib";

import Blosc from "../../viewer/static/vendor/numcodecs/blosc.js";
import {
  ShardCache, builtEntries, chunkBytes, chunkKey, chunkPath, chunkSpan, chunksPerShard, decodeChunk, indexBytes,
  indexRange as rangeOfIndex, indexSize, loadChunk, parseBuiltIndex, parseIndex, shardOf,
} from "../../viewer/static/zarr.js";

/** How the logs below write a request for a shard's index: its last bytes as `bytes=-N` (the page
 * sends a HEAD and then their plain range, never a suffix range: the server below refuses one). */
const indexRange = (m) => (m.index && m.index.location === "start" ? rangeOfIndex(m) : `bytes=-${indexSize(m)}`);

const BASE = "http://127.0.0.1:9/";

const meta = (over = {}) => ({
  path: "tensors/strength", shape: [45, 2, 3], chunks: [1, 2, 3], shard: [20, 2, 3],
  index: { location: "end", crc32c: false }, dtype: "float32", dims: ["step", "image", "feature"],
  fill: "NaN", codecs: ["bytes", "gzip"], endian: "little", encoding: "default", sep: ".", ...over,
});

/** Step s's values: 6 floats that say which step they are. */
const stepValues = (s) => Array.from({ length: 6 }, (_, i) => s * 10 + i / 4);

/**
 * A shard file as zarr writes one: the gzip inner chunks one after another, then (or first) the
 * index of (offset, nbytes) uint64 little-endian pairs, all ones for an empty slot.
 */
function shardFile(m, file, { empty = [], pad = 0 } = {}) {
  const per = chunksPerShard(m);
  const start = m.index.location === "start";
  const size = indexSize(m);
  const parts = [];
  const index = Buffer.alloc(size);
  let at = (start ? size : 0) + pad;
  if (pad) parts.push(Buffer.alloc(pad));  // (zarr leaves no gaps, but a reader must not care)
  for (let slot = 0; slot < per; slot++) {
    const step = file * per + slot;
    if (step >= m.shape[0] || empty.includes(step)) {
      index.writeBigUInt64LE(0xffffffffffffffffn, slot * 16);
      index.writeBigUInt64LE(0xffffffffffffffffn, slot * 16 + 8);
      continue;
    }
    const raw = Buffer.alloc(24);
    stepValues(step).forEach((v, i) => raw.writeFloatLE(v, i * 4));
    const gz = gzipSync(raw, { level: 1 });
    index.writeBigUInt64LE(BigInt(at), slot * 16);
    index.writeBigUInt64LE(BigInt(gz.length), slot * 16 + 8);
    parts.push(gz);
    at += gz.length;
  }
  if (m.index.crc32c) index.writeUInt32LE(0xdeadbeef, per * 16);  // not checked by the reader
  const body = start ? [index, ...parts] : [...parts, index];
  return new Uint8Array(Buffer.concat(body));
}

/** A fetch over a dict of files: with or without Range support; records each request. */
function server(files, { ranges = true } = {}) {
  const log = [];
  const fetchFn = async (url, init = {}) => {
    const sent = init.headers && init.headers.Range;
    assert.equal(init.cache, "no-store");
    assert.ok(!sent || !sent.startsWith("bytes=-"), `a suffix range: ${sent}`);
    const body = files[String(url).slice(BASE.length)];
    if (init.method === "HEAD") {  // (logged only when it ends the read: a HEAD and its index read are one request)
      if (!body) {
        log.push({ url: String(url).slice(BASE.length), range: "HEAD" });
        return new Response(null, { status: 404, statusText: "Not Found" });
      }
      return new Response(null, { status: 200, headers: { "Content-Length": String(body.length) } });
    }
    const tail = body && sent && sent.endsWith(`-${body.length - 1}`) && /^bytes=(\d+)-/.exec(sent);
    const range = tail ? `bytes=-${body.length - Number(tail[1])}` : sent;
    log.push({ url: String(url).slice(BASE.length), range });
    if (!body) return new Response("no such file", { status: 404, statusText: "Not Found" });
    if (!range || !ranges) return new Response(body, { status: 200 });
    let m = /^bytes=(\d+)-(\d+)$/.exec(range), a, b;
    if (m) { a = Number(m[1]); b = Math.min(Number(m[2]), body.length - 1); }
    else if ((m = /^bytes=-(\d+)$/.exec(range))) { a = Math.max(0, body.length - Number(m[1])); b = body.length - 1; }
    else throw new Error(`unexpected range ${range}`);
    if (a >= body.length) return new Response("", { status: 416 });
    return new Response(body.slice(a, b + 1), { status: 206 });
  };
  return { fetchFn, log };
}

const files = (m, opts) => Object.fromEntries([0, 1, 2].map((f) => [`${m.path}/c.${f}.0.0`, shardFile(m, f, opts)]));

test("a sharded array: chunk index -> shard file and slot; keys name the shard", () => {
  const m = meta();
  assert.equal(chunksPerShard(m), 20);
  assert.deepEqual(shardOf(m, 0), { file: 0, slot: 0 });
  assert.deepEqual(shardOf(m, 19), { file: 0, slot: 19 });
  assert.deepEqual(shardOf(m, 27), { file: 1, slot: 7 });
  assert.equal(chunkPath(m, 27), "tensors/strength/c.1.0.0");
  assert.equal(chunkKey(m, 2), "c.2.0.0");
  // inner chunks of two steps each: ten per shard
  const m2 = meta({ chunks: [2, 2, 3] });
  assert.equal(chunksPerShard(m2), 10);
  assert.deepEqual(shardOf(m2, 13), { file: 1, slot: 3 });
  // a plain array is its own file
  const plain = meta({ shard: null, index: null, chunks: [7, 2, 3] });
  assert.equal(chunksPerShard(plain), 1);
  assert.equal(chunkPath(plain, 3), "tensors/strength/c.3.0.0");
});

test("index size and the Range that asks for it: end or start, with or without crc32c", () => {
  assert.equal(indexSize(meta()), 320);
  assert.equal(rangeOfIndex(meta(), 1000), "bytes=680-999");
  const crc = meta({ index: { location: "end", crc32c: true } });
  assert.equal(indexSize(crc), 324);
  assert.equal(rangeOfIndex(crc, 1000), "bytes=676-999");
  assert.equal(rangeOfIndex(meta({ index: { location: "start", crc32c: false } })), "bytes=0-319");
  assert.equal(rangeOfIndex(meta({ index: { location: "start", crc32c: true } })), "bytes=0-323");
});

for (const location of ["end", "start"]) {
  for (const crc32c of [false, true]) {
    test(`parse an index at the ${location}${crc32c ? " with crc32c" : ""}; slice chunks out of the whole shard`, async () => {
      const m = meta({ index: { location, crc32c } });
      const body = shardFile(m, 0, { empty: [3, 19] });
      const entries = parseIndex(indexBytes(body, m), m);
      assert.equal(entries.length, 40);
      assert.deepEqual([entries[6], entries[7]], [-1, -1]);    // step 3: empty
      assert.deepEqual([entries[38], entries[39]], [-1, -1]);  // step 19: empty
      assert.equal(chunkBytes(body, entries, 3, m), null);
      if (location === "start") assert.equal(entries[0], indexSize(m));
      else assert.equal(entries[0], 0);
      for (const slot of [0, 1, 2, 4, 18]) {
        const bytes = chunkBytes(body, entries, slot, m);
        assert.equal(bytes.length, entries[2 * slot + 1]);
        const values = new Float32Array(new Uint8Array(await new Response(new Blob([bytes]).stream()
          .pipeThrough(new DecompressionStream("gzip"))).arrayBuffer()).buffer);
        assert.deepEqual(Array.from(values), stepValues(slot));
      }
    });
  }
}

test("a damaged index is an error, not wrong numbers", () => {
  const m = meta();
  assert.throws(() => parseIndex(new Uint8Array(319), m), /expected 320/);
  assert.throws(() => indexBytes(new Uint8Array(100), m), /shorter than its index/);
  const bad = new Uint8Array(320);
  new DataView(bad.buffer).setBigUint64(0, 1n << 60n, true);
  new DataView(bad.buffer).setBigUint64(8, 5n, true);
  assert.throws(() => parseIndex(bad, m), /entry 0/);
  const body = shardFile(m, 0);
  const entries = parseIndex(indexBytes(body, m), m);
  assert.throws(() => chunkBytes(body.subarray(0, 10), entries, 5, m), /shorter than its index says/);
});

for (const location of ["end", "start"]) {
  for (const crc32c of [false, true]) {
    test(`loadChunk with Range requests (index at the ${location}${crc32c ? ", crc32c" : ""}): the index once per shard`, async () => {
      const m = meta({ index: { location, crc32c } });
      const { fetchFn, log } = server(files(m, { empty: [3] }));
      const cache = new ShardCache();
      const got = await loadChunk(m, 2, BASE, cache, fetchFn);
      assert.equal(got.status, "ok");
      assert.ok(got.data instanceof Float32Array);
      assert.deepEqual(Array.from(got.data), stepValues(2));
      // the index, then step 2's bytes with step 1's in front (step 3 is empty: nothing after)
      const entries = parseIndex(indexBytes(files(m, { empty: [3] })["tensors/strength/c.0.0.0"], m), m);
      assert.deepEqual(log.map((r) => r.range), [indexRange(m), `bytes=${entries[2]}-${entries[4] + entries[5] - 1}`]);
      assert.ok(log.every((r) => r.url === "tensors/strength/c.0.0.0"));
      // the neighbour: held already
      assert.deepEqual(Array.from((await loadChunk(m, 1, BASE, cache, fetchFn)).data), stepValues(1));
      assert.equal(log.length, 2);
      // an empty slot: the fill value, nothing fetched
      const empty = await loadChunk(m, 3, BASE, cache, fetchFn);
      assert.equal(empty.status, "missing");
      assert.ok(empty.data.every(Number.isNaN) && empty.data.length === 6);
      assert.equal(log.length, 2);
      // step 0: its bytes only (step 1's are held)
      assert.deepEqual(Array.from((await loadChunk(m, 0, BASE, cache, fetchFn)).data), stepValues(0));
      assert.deepEqual(log.slice(2).map((r) => r.range), [`bytes=${entries[0]}-${entries[0] + entries[1] - 1}`]);
      // the next shard: its own index; the last, partly filled shard
      assert.deepEqual(Array.from((await loadChunk(m, 27, BASE, cache, fetchFn)).data), stepValues(27));
      assert.deepEqual(Array.from((await loadChunk(m, 44, BASE, cache, fetchFn)).data), stepValues(44));
      assert.equal(log.length, 7);
      assert.equal((await loadChunk(m, 43, BASE, cache, fetchFn)).data[0], 430);
      assert.equal(log.length, 7);
      const sizes = (f) => { const e = parseIndex(indexBytes(files(m)[`tensors/strength/c.${f}.0.0`], m), m); return (a, b) => e[2 * b] + e[2 * b + 1] - e[2 * a]; };
      assert.equal(cache.bytes, sizes(0)(1, 2) + sizes(0)(0, 0) + sizes(1)(6, 8) + sizes(2)(3, 4), "the spans read, no whole shard");
    });
  }
}

test("two reads of one shard at once share its index request", async () => {
  const m = meta();
  const { fetchFn, log } = server(files(m));
  const cache = new ShardCache();
  const got = await Promise.all([5, 6, 7].map((i) => loadChunk(m, i, BASE, cache, fetchFn)));
  assert.deepEqual(got.map((g) => g.data[0]), [50, 60, 70]);
  assert.equal(log.filter((r) => r.range === indexRange(m)).length, 1);
  assert.equal(log.length, 4, "(each read asks for its neighbours too: none is held yet)");
});

for (const location of ["end", "start"]) {
  test(`a server that ignores Range (index at the ${location}): one whole shard, kept for its neighbours`, async () => {
    const m = meta({ index: { location, crc32c: true } });
    const { fetchFn, log } = server(files(m, { empty: [8] }), { ranges: false });
    const cache = new ShardCache();
    assert.deepEqual(Array.from((await loadChunk(m, 4, BASE, cache, fetchFn)).data), stepValues(4));
    assert.equal(log.length, 1);
    for (const i of [5, 3, 0, 19]) assert.deepEqual(Array.from((await loadChunk(m, i, BASE, cache, fetchFn)).data), stepValues(i));
    assert.equal((await loadChunk(m, 8, BASE, cache, fetchFn)).status, "missing");
    assert.equal(log.length, 1, "the neighbours came from the kept shard");
    await Promise.all([21, 22, 23].map((i) => loadChunk(m, i, BASE, cache, fetchFn)));
    assert.equal(log.length, 2, "three reads of a new shard at once: one whole-shard request");
    assert.equal(cache.bytes, files(m, { empty: [8] })["tensors/strength/c.0.0.0"].length + files(m)["tensors/strength/c.1.0.0"].length);
  });
}

test("whole shards are kept within a byte budget, least recently used out first", async () => {
  const m = meta();
  const all = files(m);
  const size = all["tensors/strength/c.0.0.0"].length;
  const { fetchFn, log } = server(all, { ranges: false });
  const cache = new ShardCache(size + all["tensors/strength/c.1.0.0"].length);
  await loadChunk(m, 0, BASE, cache, fetchFn);
  await loadChunk(m, 20, BASE, cache, fetchFn);
  await loadChunk(m, 1, BASE, cache, fetchFn);          // shard 0: the most recently used now
  assert.equal(log.length, 2);
  await loadChunk(m, 40, BASE, cache, fetchFn);         // shard 2 in, shard 1 out
  assert.ok(cache.bytes <= cache.budget);
  assert.deepEqual([...cache.spans.keys()].map((u) => u.slice(BASE.length)), ["tensors/strength/c.0.0.0", "tensors/strength/c.2.0.0"]);
  await loadChunk(m, 2, BASE, cache, fetchFn);
  assert.equal(log.length, 3);
  // shard 1's index is still kept: its chunk is asked for with a Range, and this server sends it all again
  await loadChunk(m, 21, BASE, cache, fetchFn);
  assert.equal(log.length, 4);
  assert.match(log[3].range, /^bytes=\d+-\d+$/);
  // a shard over the whole budget is never kept
  const tiny = new ShardCache(10);
  await loadChunk(m, 0, BASE, tiny, fetchFn);
  assert.equal(tiny.bytes, 0);
});

test("a missing shard reads as the fill value; other errors are errors", async () => {
  const m = meta({ dtype: "int32", fill: -1 });
  const { fetchFn, log } = server({});
  const cache = new ShardCache();
  const got = await loadChunk(m, 30, BASE, cache, fetchFn);
  assert.equal(got.status, "missing");
  assert.ok(got.data instanceof Int32Array && got.data.every((v) => v === -1));
  await loadChunk(m, 31, BASE, cache, fetchFn);
  assert.equal(log.length, 1, "the missing shard is remembered");
  const broken = async () => new Response("", { status: 500, statusText: "Internal Server Error" });
  await assert.rejects(loadChunk(meta(), 0, BASE, new ShardCache(), broken), /500 Internal Server Error for tensors\/strength\/c.0.0.0/);
  assert.equal(cache.indexes.size, 1);
});

test("an inner chunk of an unknown codec is a clear error; a blosc one cut short or of the wrong size too", async () => {
  const m = meta({ codecs: ["bytes", "zstd"] });
  const { fetchFn } = server(files(m));
  await assert.rejects(loadChunk(m, 3, BASE, new ShardCache(), fetchFn), /unsupported codec zstd/);
  const b = meta({ codecs: ["bytes", "blosc"] });
  const raw = new Uint8Array(new Float32Array(stepValues(3)).buffer);
  const frame = await new Blosc(5, "lz4", Blosc.SHUFFLE).encode(raw);
  assert.deepEqual(Array.from(await decodeChunk(frame, b)), Array.from(new Float32Array(stepValues(3))));
  await assert.rejects(decodeChunk(frame.subarray(0, frame.length - 1), b), /blosc chunk of \d+ bytes, its header says/);
  await assert.rejects(decodeChunk(frame.subarray(0, 10), b), /shorter than its header/);
  await assert.rejects(decodeChunk(frame, meta({ codecs: ["bytes", "blosc"], chunks: [2, 2, 3] })), /expected 12/);
  await assert.rejects(decodeChunk(frame, meta({ codecs: ["bytes", "gzip", "blosc", "lz4"] })), /unsupported codec lz4/);
});

test("a plain array: one request per chunk, no Range", async () => {
  const m = meta({ shard: null, index: null, chunks: [1, 2, 3], sep: "/" });
  const raw = Buffer.alloc(24);
  stepValues(7).forEach((v, i) => raw.writeFloatLE(v, i * 4));
  const { fetchFn, log } = server({ "tensors/strength/c/7/0/0": new Uint8Array(gzipSync(raw)) });
  const cache = new ShardCache();
  assert.deepEqual(Array.from((await loadChunk(m, 7, BASE, cache, fetchFn)).data), stepValues(7));
  assert.equal((await loadChunk(m, 8, BASE, cache, fetchFn)).status, "missing");
  assert.deepEqual(log, [{ url: "tensors/strength/c/7/0/0", range: undefined }, { url: "tensors/strength/c/8/0/0", range: undefined }]);
});

test("a changed shard: dropChunk forgets its index and whole body; a stale index is read afresh once", async () => {
  const m = meta();
  const all = files(m, { empty: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19] });  // a live session wrote steps 0-9
  for (const ranges of [true, false]) {
    const { fetchFn, log } = server(all, { ranges });
    const cache = new ShardCache();
    assert.equal((await loadChunk(m, 12, BASE, cache, fetchFn)).status, "missing");
    assert.equal((await loadChunk(m, 3, BASE, cache, fetchFn)).status, "ok");
    const before = log.length;
    all["tensors/strength/c.0.0.0"] = shardFile(m, 0);   // ... then steps 10-19
    assert.equal((await loadChunk(m, 12, BASE, cache, fetchFn)).status, "missing", "until told, the kept index stands");
    cache.dropChunk(m, 12, BASE);
    assert.equal(cache.indexes.size, 0);
    assert.equal(cache.bytes, 0);
    assert.deepEqual(Array.from((await loadChunk(m, 12, BASE, cache, fetchFn)).data), stepValues(12));
    assert.ok(log.length > before);
    all["tensors/strength/c.0.0.0"] = shardFile(m, 0, { empty: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19] });
  }
  // an index kept from before a rewrite that moved the chunks: what it points at is no chunk now;
  // the index is read again, once
  const shard = "tensors/strength/c.0.0.0";
  const { fetchFn, log } = server(all);
  const cache = new ShardCache();
  await loadChunk(m, 0, BASE, cache, fetchFn);
  assert.equal(log.length, 2);
  all[shard] = shardFile(m, 0, { pad: 3 });
  assert.deepEqual(Array.from((await loadChunk(m, 5, BASE, cache, fetchFn)).data), stepValues(5));
  assert.deepEqual(log.slice(2).map((r) => r.range === indexRange(m)), [false, true, false]);
  // an index that still fails when read afresh: the error, after one more try only
  all[shard] = shardFile(m, 0, { pad: 3 }).map((b, i, a) => (i < a.length - 320 ? 0 : b));
  cache.dropChunk(m, 0, BASE);
  await loadChunk(m, 19, BASE, cache, fetchFn).then(() => assert.fail("read a zeroed chunk"), () => {});
  assert.equal(log.length, 7);
  await assert.rejects(loadChunk(m, 2, BASE, cache, fetchFn));
  assert.equal(log.length, 7 + 3, "a kept index, then the index afresh: one retry, no more");
});

test("a kept index travels to another thread's cache", async () => {
  const m = meta();
  const { fetchFn, log } = server(files(m), { ranges: false });
  const page = new ShardCache();
  await loadChunk(m, 0, BASE, page, fetchFn);
  page.drop(`${BASE}tensors/strength/c.2.0.0`);
  const contents = structuredClone(page.contents());
  assert.equal(contents.indexes.length, 1);
  assert.equal(contents.spans.length, 1);
  assert.deepEqual(contents.unbuilt, [`${BASE}tensors/strength/c.2.0.0`]);
  const worker = new ShardCache();
  worker.take(contents);
  assert.deepEqual(Array.from((await loadChunk(m, 1, BASE, worker, fetchFn)).data), stepValues(1));
  assert.equal(log.length, 1);
  assert.equal(worker.bytes, page.bytes);
  assert.ok(worker.unbuilt.has(`${BASE}tensors/strength/c.2.0.0`));
});

// -- reading with the neighbours; the built shard index -------------------------------------------

/** entries as parseIndex gives them, from [offset, nbytes] pairs (null: empty) */
const index = (...pairs) => Float64Array.from(pairs.flatMap((p) => (p ? p : [-1, -1])));

test("chunkSpan: the chunk, with the ones right beside it in the file, unless not wanted", () => {
  const e = index([0, 10], [10, 5], [15, 7], null, [30, 4], [40, 2]);
  assert.deepEqual(chunkSpan(e, 1), [0, 22]);
  assert.deepEqual(chunkSpan(e, 0), [0, 15], "the first slot: nothing before");
  assert.deepEqual(chunkSpan(e, 2), [10, 22], "an empty slot after: nothing after");
  assert.deepEqual(chunkSpan(e, 4), [30, 34], "empty before, a gap after: the chunk alone");
  assert.deepEqual(chunkSpan(e, 5), [40, 42], "the last slot");
  assert.deepEqual(chunkSpan(e, 1, (s) => s !== 0), [10, 22], "a neighbour held already is not asked for");
  assert.deepEqual(chunkSpan(e, 1, () => false), [10, 15]);
  // chunks written out of order: not beside each other in the file
  assert.deepEqual(chunkSpan(index([20, 5], [0, 20], [25, 3]), 1), [0, 20]);
  // slots a built index does not cover (NaN): never part of a span
  assert.deepEqual(chunkSpan(index([0, 4], [4, 4], [NaN, NaN]).fill(NaN, 4), 1), [0, 8]);
});

/**
 * The built shard index (as viewer/build.py writes it) of chunks [0, chunks) of `m`, after a part of
 * `before` pairs of another array; width 4 or 8.
 */
function builtIndex(m, all, chunks, { width = 4, before = 3 } = {}) {
  const per = chunksPerShard(m);
  const big = width === 8;
  const values = new (big ? BigUint64Array : Uint32Array)(2 * (before + chunks));
  const empty = big ? 0xffffffffffffffffn : 0xffffffff;
  for (let c = 0; c < chunks; c++) {
    const body = all[chunkPath(m, c)];
    const e = body ? parseIndex(indexBytes(body, m), m) : null;
    const slot = c % per;
    const at = 2 * (before + c);
    values[at] = e && e[2 * slot] >= 0 ? (big ? BigInt(e[2 * slot]) : e[2 * slot]) : empty;
    values[at + 1] = e && e[2 * slot] >= 0 ? (big ? BigInt(e[2 * slot + 1]) : e[2 * slot + 1]) : empty;
  }
  const arrays = { "tensors/other": { at: 0, chunks: before }, [m.path]: { at: 2 * before * width, chunks } };
  return { buffer: values.buffer, spec: { path: "viewer/shard-index.bin", bytes: values.byteLength, width, arrays } };
}

for (const width of [4, 8]) {
  test(`parse a built index of ${width}-byte numbers: a shard's entries, empty and not covered slots`, () => {
    const m = meta();
    const all = files(m, { empty: [3] });
    delete all["tensors/strength/c.2.0.0"];  // shard 2: no file
    const { buffer, spec } = builtIndex(m, all, 30, { width });
    const built = parseBuiltIndex(buffer, spec);
    assert.deepEqual([...built.keys()], ["tensors/other", "tensors/strength"]);
    assert.deepEqual(builtEntries(built, m, 0), parseIndex(indexBytes(all["tensors/strength/c.0.0.0"], m), m));
    const shard1 = builtEntries(built, m, 1);
    const own = parseIndex(indexBytes(all["tensors/strength/c.1.0.0"], m), m);
    assert.deepEqual(Array.from(shard1.subarray(0, 20)), Array.from(own.subarray(0, 20)), "slots 0-9: as the shard says");
    assert.ok(shard1.subarray(20).every(Number.isNaN), "slots 10-19: not covered");
    assert.ok(builtEntries(built, m, 2).every(Number.isNaN));
    assert.equal(builtEntries(built, meta({ path: "tensors/unknown" }), 0), null);
    assert.equal(builtEntries(null, m, 0), null);
    assert.throws(() => parseBuiltIndex(buffer.slice(8), spec), /expected/);
  });
}

test("a built index: no index request for the steps it covers, one request a step and its neighbours", async () => {
  const m = meta();
  const all = files(m, { empty: [7] });
  const { fetchFn, log } = server(all);
  const { buffer, spec } = builtIndex(m, all, 30);
  const cache = new ShardCache();
  let arrive;
  cache.useBuilt(new Promise((resolve) => { arrive = resolve; }), spec);
  const first = loadChunk(m, 5, BASE, cache, fetchFn);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(log.length, 0, "reads wait for the built index");
  arrive(buffer);
  assert.deepEqual(Array.from((await first).data), stepValues(5));
  const own = (f) => parseIndex(indexBytes(all[`tensors/strength/c.${f}.0.0`], m), m);
  assert.deepEqual(log, [{ url: "tensors/strength/c.0.0.0", range: `bytes=${own(0)[8]}-${own(0)[12] + own(0)[13] - 1}` }]);
  // the neighbours: held
  for (const i of [4, 6]) assert.deepEqual(Array.from((await loadChunk(m, i, BASE, cache, fetchFn)).data), stepValues(i));
  assert.equal((await loadChunk(m, 7, BASE, cache, fetchFn)).status, "missing");
  assert.equal(log.length, 1);
  // step 8: step 7 is empty, so 8 and 9 only
  assert.deepEqual(Array.from((await loadChunk(m, 8, BASE, cache, fetchFn)).data), stepValues(8));
  assert.deepEqual(log[1].range, `bytes=${own(0)[16]}-${own(0)[18] + own(0)[19] - 1}`);
  // shard 1: slots 0-9 covered
  assert.deepEqual(Array.from((await loadChunk(m, 29, BASE, cache, fetchFn)).data), stepValues(29));
  assert.equal(log.length, 3);
  assert.ok(log.every((r) => r.range !== indexRange(m)));
  // step 30 and on: recorded after the build, so the shard's own index first
  assert.deepEqual(Array.from((await loadChunk(m, 31, BASE, cache, fetchFn)).data), stepValues(31));
  assert.deepEqual(log.slice(3).map((r) => r.range === indexRange(m)), [true, false]);
  assert.deepEqual(Array.from((await loadChunk(m, 44, BASE, cache, fetchFn)).data), stepValues(44));
  assert.deepEqual(log.slice(5).map((r) => [r.url, r.range === indexRange(m)]), [["tensors/strength/c.2.0.0", true], ["tensors/strength/c.2.0.0", false]]);
  // ... and once that index is read, it serves the covered slots too
  assert.deepEqual(Array.from((await loadChunk(m, 25, BASE, cache, fetchFn)).data), stepValues(25));
  assert.equal(log.length, 8);
});

test("a built index: empty slots and shards never written cost no request", async () => {
  const m = meta();
  const all = files(m, { empty: [3, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39] });
  delete all["tensors/strength/c.1.0.0"];
  const { fetchFn, log } = server(all);
  const { buffer, spec } = builtIndex(m, all, 45);
  const cache = new ShardCache();
  cache.useBuilt(buffer, spec);
  for (const i of [3, 20, 33, 39]) assert.equal((await loadChunk(m, i, BASE, cache, fetchFn)).status, "missing");
  assert.equal(log.length, 0);
});

test("a built index a shard no longer matches: the shard's own index, once; dropChunk stops using it for that shard", async () => {
  const m = meta();
  const all = files(m);
  const { fetchFn, log } = server(all);
  const { buffer, spec } = builtIndex(m, all, 45);
  for (const drop of [false, true]) {
    const cache = new ShardCache();
    cache.useBuilt(buffer, spec);
    all["tensors/strength/c.0.0.0"] = shardFile(m, 0, { pad: 5 });  // the chunks moved
    log.length = 0;
    if (drop) cache.dropChunk(m, 3, BASE);  // told: a live session rewrote the shard
    assert.deepEqual(Array.from((await loadChunk(m, 3, BASE, cache, fetchFn)).data), stepValues(3));
    const ranges = log.map((r) => r.range === indexRange(m));
    assert.deepEqual(ranges, drop ? [true, false] : [false, true, false]);
    assert.deepEqual(Array.from((await loadChunk(m, 10, BASE, cache, fetchFn)).data), stepValues(10));
    assert.equal(log.length, ranges.length + 1, "the shard's own index, kept");
    // other shards: still the built index
    assert.deepEqual(Array.from((await loadChunk(m, 30, BASE, cache, fetchFn)).data), stepValues(30));
    assert.equal(log.length, ranges.length + 2);
    all["tensors/strength/c.0.0.0"] = shardFile(m, 0);
  }
  // a built index that is not this page's: not used at all
  const cache = new ShardCache();
  const warn = console.warn;
  console.warn = () => {};
  try {
    cache.useBuilt(buffer.slice(16), spec);
    log.length = 0;
    assert.deepEqual(Array.from((await loadChunk(m, 3, BASE, cache, fetchFn)).data), stepValues(3));
  } finally {
    console.warn = warn;
  }
  assert.equal(cache.built, null);
  assert.deepEqual(log.map((r) => r.range === indexRange(m)), [true, false]);
});

test("a built index and a server that ignores Range: one whole shard, kept for the steps beside it", async () => {
  const m = meta();
  const all = files(m);
  const { fetchFn, log } = server(all, { ranges: false });
  const { buffer, spec } = builtIndex(m, all, 45);
  const cache = new ShardCache();
  cache.useBuilt(buffer, spec);
  for (const i of [4, 0, 19, 12]) assert.deepEqual(Array.from((await loadChunk(m, i, BASE, cache, fetchFn)).data), stepValues(i));
  assert.equal(log.length, 1);
  assert.equal(cache.bytes, all["tensors/strength/c.0.0.0"].length);
});

test("known spans of a shard: a view of what is held; a wider span replaces those it covers; old answers are not kept", () => {
  const cache = new ShardCache(100);
  const url = `${BASE}tensors/strength/c.0.0.0`;
  const bytes = (start, n) => Uint8Array.from({ length: n }, (_, i) => (start + i) % 256);
  cache.keep(url, 10, bytes(10, 20), 0);
  assert.deepEqual(Array.from(cache.held(url, 15, 5)), [15, 16, 17, 18, 19]);
  assert.equal(cache.held(url, 25, 10), null, "runs past the span");
  assert.equal(cache.held(url, 5, 2), null);
  cache.keep(url, 40, bytes(40, 10), 0);
  assert.equal(cache.bytes, 30);
  cache.keep(url, 0, bytes(0, 60), 0);  // (a whole shard)
  assert.equal(cache.bytes, 60);
  assert.equal(cache.spans.get(url).length, 1);
  assert.deepEqual(Array.from(cache.held(url, 45, 2)), [45, 46]);
  const other = `${BASE}tensors/strength/c.1.0.0`;
  cache.keep(other, 0, bytes(0, 50), 0);  // over the budget: the least recently used shard goes
  assert.deepEqual([...cache.spans.keys()], [other]);
  assert.equal(cache.bytes, 50);
  cache.drop(other);
  assert.equal(cache.bytes, 0);
  cache.keep(other, 0, bytes(0, 10), 0);  // asked for before the drop
  assert.equal(cache.bytes, 0);
  cache.keep(other, 0, bytes(0, 101), cache.version(other));  // over the whole budget
  assert.equal(cache.bytes, 0);
});
