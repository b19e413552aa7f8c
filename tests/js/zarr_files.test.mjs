// Sharded arrays as zarr-python writes them (gzip, blosc, blosc then crc32c, or crc32c inner
// chunks), and plain blosc arrays, read with the page's metadata as the builder makes it. tests/test_js.py writes the arrays and their expected values into a folder named by
// ACC_ZARR_FIXTURE, with the built shard index the page builder writes for them (covering their
// first steps only). Without ACC_ZARR_FIXTURE (a bare `node --test`) they show as one skipped test;
// a fixture folder that is missing or holds no arrays fails: they never vanish unnoticed.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import {
  ShardCache, chunkBytes, chunkIndex, chunkKey, chunksPerShard, decodeChunk, indexBytes, indexRange as rangeOfIndex, indexSize,
  loadChunk, parseIndex, rowLength, shardOf,
} from "../../viewer/static/zarr.js";

/** How the log below writes a request for a shard's index (see server()). */
const indexRange = (m) => (m.index && m.index.location === "start" ? rangeOfIndex(m) : `bytes=-${indexSize(m)}`);

const ROOT = process.env.ACC_ZARR_FIXTURE;
const BASE = "http://127.0.0.1:9/";
const fixture = loadFixture();

function loadFixture() {
  const none = { arrays: {}, plain: {}, shard_index: null };
  if (!ROOT) {
    test("sharded arrays as zarr-python writes them", { skip: "no ACC_ZARR_FIXTURE (tests/test_js.py sets it)" }, () => {});
    return none;
  }
  let loaded;
  try {
    loaded = JSON.parse(readFileSync(join(ROOT, "expected.json"), "utf8"));
  } catch (e) {
    test(`the fixture in ${ROOT}`, () => assert.fail(`ACC_ZARR_FIXTURE names no readable fixture: ${e.message}`));
    return none;
  }
  test("the fixture holds arrays", () => assert.ok(Object.keys(loaded.arrays || {}).length > 0, `${ROOT} holds no array`));
  return { ...none, ...loaded };
}

/** A fetch over the fixture's files, answering Range requests (or not), logging each request. */
function server(ranges, meta) {
  const log = [];
  const fetchFn = async (url, init = {}) => {
    const path = String(url).slice(BASE.length);
    const sent = init.headers && init.headers.Range;
    assert.ok(!sent || !sent.startsWith("bytes=-"), `a suffix range: ${sent}`);
    let body;
    try { body = new Uint8Array(readFileSync(join(ROOT, path))); } catch { body = null; }
    if (init.method === "HEAD") {  // (the page's HEAD and its index read are logged as one index request)
      if (body) return new Response(null, { status: 200, headers: { "Content-Length": String(body.length) } });
      log.push({ path, range: indexRange(meta) });
      return new Response(null, { status: 404 });
    }
    // a read of a file's last bytes is logged as `bytes=-N`, as indexRange writes it
    const tail = body && sent && sent.endsWith(`-${body.length - 1}`) && /^bytes=(\d+)-/.exec(sent);
    const range = tail ? `bytes=-${body.length - Number(tail[1])}` : sent;
    log.push({ path, range });
    if (!body) return new Response("", { status: 404 });
    if (!range || !ranges) return new Response(body, { status: 200 });
    let m = /^bytes=(\d+)-(\d+)$/.exec(range), a, b;
    if (m) { a = Number(m[1]); b = Math.min(Number(m[2]), body.length - 1); }
    else { m = /^bytes=-(\d+)$/.exec(range); a = Math.max(0, body.length - Number(m[1])); b = body.length - 1; }
    return new Response(body.slice(a, b + 1), { status: 206 });
  };
  return { fetchFn, log };
}

const same = (got, want) => got.length === want.length && want.every((w, i) => (w === null ? Number.isNaN(got[i]) : got[i] === w));

for (const [name, { meta, steps }] of Object.entries(fixture.arrays)) {
  for (const ranges of [true, false]) {
    test(`${name} (${JSON.stringify(meta.index)}), ${ranges ? "Range requests" : "a server that ignores Range"}`, async () => {
      assert.ok(meta.shard, "the builder did not see a sharded array");
      const { fetchFn, log } = server(ranges, meta);
      const cache = new ShardCache();
      await readSteps(name, meta, steps, cache, fetchFn);
      const shards = new Set(log.map((r) => r.path)).size;
      if (ranges) assert.equal(log.filter((r) => r.range === indexRange(meta)).length, shards, "one index request per shard");
      else assert.equal(log.length, shards, "one request per shard");
    });
  }

  test(`${name} (${JSON.stringify(meta.index)}), with the built shard index`, async () => {
    const spec = fixture.shard_index;
    const { fetchFn, log } = server(true, meta);
    const cache = new ShardCache();
    cache.useBuilt(new Uint8Array(readFileSync(join(ROOT, spec.path))).buffer, spec);
    const read = await readSteps(name, meta, steps, cache, fetchFn);
    // shards wholly covered: no index request; the others (steps past the build) one each
    const covered = spec.arrays[name].chunks;
    const per = chunksPerShard(meta);
    const partly = new Set();
    for (let i = covered; i < chunkIndex(meta, steps.length - 1) + 1; i++) partly.add(shardOf(meta, i).file);
    const asked = log.filter((r) => r.range === indexRange(meta)).map((r) => Number(/\bc\.(\d+)\./.exec(r.path)[1]));
    assert.deepEqual(asked, [...partly]);
    assert.ok(covered >= per && covered % per !== 0, "the fixture covers a whole shard and part of one");
    const chunks = log.filter((r) => r.range !== indexRange(meta)).length;
    assert.ok(chunks < read.size, `${chunks} requests for ${read.size} chunks: neighbours came along`);
  });
}

for (const [name, { meta }] of Object.entries(fixture.arrays).filter(([, a]) => a.meta.codecs.includes("crc32c"))) {
  test(`${name}: a flipped byte in any inner chunk (its data or its crc32c) is an error`, async () => {
    let checked = 0;
    for (let file = 0; existsSync(join(ROOT, name, chunkKey(meta, file))); file++) {
      const body = new Uint8Array(readFileSync(join(ROOT, name, chunkKey(meta, file))));
      const entries = parseIndex(indexBytes(body, meta), meta);
      for (let slot = 0; slot < chunksPerShard(meta); slot++) {
        const chunk = chunkBytes(body, entries, slot, meta);
        if (!chunk) continue;
        await decodeChunk(chunk, meta);  // (as written: it decodes)
        for (const at of [slot % (chunk.length - 4), chunk.length - 1 - (slot % 4)]) {
          const bad = chunk.slice();
          bad[at] ^= 1 << (slot % 8);
          await assert.rejects(decodeChunk(bad, meta), /crc32c mismatch/, `shard ${file} slot ${slot}, byte ${at} of ${chunk.length}`);
        }
        checked++;
      }
    }
    assert.ok(checked >= 30, `${checked} inner chunks checked`);
  });
}

for (const [name, { meta, steps }] of Object.entries(fixture.plain)) {
  test(`${name} (plain chunks)`, async () => {
    assert.equal(meta.shard, null, "the builder saw a sharded array");
    const { fetchFn, log } = server(true, meta);
    const read = await readSteps(name, meta, steps, new ShardCache(), fetchFn);
    // a chunk whose steps are all the fill value was never written: it reads as missing
    const chunks = Math.ceil(steps.length / meta.chunks[0]);
    const fill = (s) => steps[s].every((v) => v === null || v === -1);
    const written = Array.from({ length: chunks }, (_, c) => c)
      .filter((c) => !steps.slice(c * meta.chunks[0], (c + 1) * meta.chunks[0]).every((_, i) => fill(c * meta.chunks[0] + i)));
    assert.ok(written.length < chunks, "the fixture has a chunk never written");
    assert.deepEqual([...read], written);
    assert.ok(log.every((r) => !r.range), "no Range request for a plain chunk");
  });
}

/** Read every step in order, check its values; the chunks read that were written. */
async function readSteps(name, meta, steps, cache, fetchFn) {
  const n = rowLength(meta);
  const written = new Set();
  for (let step = 0; step < steps.length; step++) {
    const index = Math.floor(step / meta.chunks[0]);
    const { status, data } = await loadChunk(meta, index, BASE, cache, fetchFn);
    const at = (step % meta.chunks[0]) * n;
    const row = data.subarray(at, at + n);
    assert.ok(same(Array.from(row), steps[step]), `${name} step ${step}: ${Array.from(row).slice(0, 4)} vs ${steps[step].slice(0, 4)}`);
    if (steps[step].every((v) => v === null) || steps[step].every((v) => v === -1)) {
      // an empty slot or a shard never written
      if (meta.chunks[0] === 1) assert.equal(status, "missing", `${name} step ${step}`);
    } else {
      assert.equal(status, "ok");
    }
    if (status === "ok") written.add(index);
  }
  return written;
}
