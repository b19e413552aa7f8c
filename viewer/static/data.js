// The page's data source: chunks fetched and decoded by the worker, kept in a cache bounded in
// bytes (least recently used out first; the timeline's summaries stay), and where each key of a
// step comes from (a summary row, a tensor chunk, or nowhere, and why).
import { DTYPES, ShardCache, chunkCount, chunkIndex, fetchBuiltIndex, loadChunk, rowLength } from "./zarr.js";

export const PRIO = { now: 2, prefetch: 1 };

export class Cancelled extends Error {}

/**
 * Whether an array's chunks are decoded in the worker only: blosc's decoder (wasm, with glue that
 * makes functions from strings) is refused by the pages' Content-Security-Policy, not by a worker's.
 */
export function workerOnly(meta) {
  return Boolean(meta && meta.codecs && meta.codecs.includes("blosc"));
}

export class ChunkStore {
  /** shardIndex: the page's description of the built shard index (null: none), see zarr.js parseBuiltIndex. */
  constructor(arrays, base, shardIndex = null, budgetBytes = 128e6) {
    this.arrays = arrays;
    this.entries = new Map();   // "array#index" -> entry
    this.byId = new Map();
    this.nextId = 1;
    this.bytes = 0;
    this.budget = budgetBytes;
    this.clock = 0;
    this.requests = 0;          // chunks requested (for the curious: window.accViewer.store)
    this.base = base;
    // A worker takes a while to start (100-200 ms on a small machine); until it says it is
    // ready, the page fetches and decodes the first chunks itself (blosc ones wait: see workerOnly).
    this.workerReady = false;
    this.waiting = [];          // entries held for the worker until it is ready
    this.workerFailed = null;   // why the worker did not start, if it did not
    this.shards = new ShardCache(32e6);  // for the chunks read on this thread
    // the built shard index: fetched once, here, for the reads on this thread and the worker's
    const built = shardIndex && fetchBuiltIndex(shardIndex, base).catch((err) => {
      console.warn(`no built shard index: ${err.message}`);
      return null;
    });
    this.shards.useBuilt(built, shardIndex);
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = (e) => {
      if (e.data.type !== "ready") { this.onMessage(e.data); return; }
      this.workerReady = true;
      // nothing more is read here: what was kept of shards goes to the worker (copied, once)
      this.worker.postMessage({ type: "shards", contents: this.shards.contents() });
      this.shards = new ShardCache(32e6);
      for (const w of this.waiting.splice(0)) {
        if (w.cancelling) this.onMessage({ id: w.id, status: "cancelled" });  // (dropped while it waited)
        else this.post(w);
      }
    };
    this.worker.onerror = (e) => {
      console.error("chunk worker failed:", e.message);
      this.workerFailed = `the chunk worker failed (${e.message}); blosc chunks are decoded only there`;
      for (const w of this.waiting.splice(0)) this.onMessage({ id: w.id, status: "error", message: this.workerFailed });
    };
    this.worker.postMessage({ type: "init", base, arrays, shardIndex });
    if (built) built.then((buffer) => this.worker.postMessage({ type: "built", buffer }));  // (a copy)
  }

  /** The decoded chunk `index` of `array`: { data, missing }. */
  chunk(array, index, prio = PRIO.now, pinned = false) {
    const key = `${array}#${index}`;
    let e = this.entries.get(key);
    if (e) {
      e.used = ++this.clock;
      e.pinned ||= pinned;
      if (!e.value) {
        if (e.cancelling) e.cancelling = false;  // wanted again: resent if the worker dropped it
        if (prio > e.prio) { e.prio = prio; this.worker.postMessage({ type: "bump", id: e.id, prio }); }
      }
      return e.promise;
    }
    e = { key, id: this.nextId++, array, index, prio, pinned, used: ++this.clock, value: null, bytes: 0, cancelling: false };
    e.promise = new Promise((resolve, reject) => { e.resolve = resolve; e.reject = reject; });
    e.promise.catch(() => {});  // a cancelled prefetch is nobody's error
    this.entries.set(key, e);
    this.byId.set(e.id, e);
    this.send(e);
    return e.promise;
  }

  send(e) {
    this.requests++;
    if (this.workerReady) this.post(e);
    else if (!workerOnly(this.arrays[e.array])) this.fetchHere(e);
    else if (this.workerFailed) this.onMessage({ id: e.id, status: "error", message: this.workerFailed });
    else this.waiting.push(e);
  }

  post(e) {
    this.worker.postMessage({ type: "get", id: e.id, array: e.array, index: e.index, prio: e.prio });
  }

  /** What the worker does, on this thread (only while the worker starts). */
  async fetchHere(e) {
    try {
      const { status, data } = await loadChunk(this.arrays[e.array], e.index, this.base, this.shards);
      this.onMessage({ id: e.id, status, data });
    } catch (err) {
      this.onMessage({ id: e.id, status: "error", message: String((err && err.message) || err) });
    }
  }

  /** One step's slice of an array: a typed-array view of `rowLength` values. */
  async row(array, step, prio = PRIO.now) {
    const meta = this.arrays[array];
    const { data } = await this.chunk(array, chunkIndex(meta, step), prio);
    const n = rowLength(meta);
    const at = (step % meta.chunks[0]) * n;
    return data.subarray(at, at + n);
  }

  /** Steps [0, steps) of an array as one typed array (kept in the cache for good). */
  async series(array, steps) {
    const meta = this.arrays[array];
    const n = rowLength(meta);
    if (!steps) return new DTYPES[meta.dtype](0);
    const parts = await Promise.all(Array.from({ length: chunkCount(meta, steps) }, (_, i) => this.chunk(array, i, PRIO.now, true)));
    if (parts.length === 1) return parts[0].data.subarray(0, steps * n);
    const out = new parts[0].data.constructor(steps * n);
    parts.forEach(({ data }, i) => {
      const from = i * meta.chunks[0] * n;
      out.set(data.subarray(0, Math.min(data.length, out.length - from)), from);
    });
    return out;
  }

  /** Whether the chunk holding `step` of `array` is decoded and cached. */
  has(array, step) {
    const e = this.entries.get(`${array}#${chunkIndex(this.arrays[array], step)}`);
    return Boolean(e && e.value);
  }

  /**
   * Forget chunk `index` of `array`: its file on disk changed (a live session appended steps to it),
   * so the next request fetches it again, and what is known of its shard (its index, its bytes),
   * here and in the worker. A request in flight still answers whoever waits for it, but its answer no longer
   * fills the cache.
   */
  refresh(array, index) {
    const meta = this.arrays[array];
    if (meta && meta.shard) {
      this.shards.dropChunk(meta, index, this.base);
      this.worker.postMessage({ type: "refresh", array, index });
    }
    const key = `${array}#${index}`;
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    this.bytes -= e.bytes;
    e.bytes = 0;
    e.stale = true;
  }

  /** Ask the worker to drop queued requests that `keep(array, index)` no longer wants. */
  cancelUnless(keep) {
    const ids = [];
    for (const e of this.entries.values()) {
      if (!e.value && !e.pinned && !e.cancelling && !keep(e.array, e.index)) { e.cancelling = true; ids.push(e.id); }
    }
    if (ids.length) this.worker.postMessage({ type: "cancel", ids });
  }

  onMessage(m) {
    const e = this.byId.get(m.id);
    if (!e) return;
    if (m.status === "cancelled") {
      if (!e.cancelling) { this.send(e); return; }  // wanted again in the meantime
      this.forget(e);
      e.reject(new Cancelled(e.key));
      return;
    }
    this.byId.delete(m.id);
    if (m.status === "error") {
      if (this.entries.get(e.key) === e) this.entries.delete(e.key);
      e.reject(new Error(m.message));
      return;
    }
    e.value = { data: m.data, missing: m.status === "missing" };
    if (!e.stale) {
      e.bytes = m.data.byteLength;
      this.bytes += e.bytes;
    }
    e.resolve(e.value);
    this.evict();
  }

  forget(e) {
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    this.byId.delete(e.id);
    this.bytes -= e.bytes;
    e.bytes = 0;
  }

  evict() {
    while (this.bytes > this.budget) {
      let victim = null;
      for (const e of this.entries.values()) {
        if (e.value && !e.pinned && (!victim || e.used < victim.used)) victim = e;
      }
      if (!victim) return;
      this.forget(victim);
    }
  }
}

/**
 * The helpers every page over a recording uses, added to `page` (its run, arrays and, once loaded,
 * deadRow): dimSize(name), available(key), isDead(feature), missingSummary(name), and fullNote,
 * the line that says which steps kept full tensors. Returns the page.
 */
export function addPageHelpers(page) {
  const sizes = Object.create(null);  // (a dimension may be named toString or __proto__)
  for (const meta of Object.values(page.arrays)) meta.dims.forEach((d, i) => { if (i > 0 && !(d in sizes)) sizes[d] = meta.shape[i]; });
  page.dimSize = (name) => sizes[name];
  page.available = (key) => Boolean(page.arrays[`tensors/${key}`] || page.arrays[`summary/${key}`]);
  page.isDead = (i) => Boolean(page.deadRow && page.deadRow[i] < page.run.dead_win_rate);
  page.missingSummary = (name) => (page.run.kind !== "bcl" || page.run.bcl
    ? `${name} is not in this recording` : `not recorded: the ${page.run.condition} condition has no BCL`);
  const policy = page.run.policy || {};
  const ranges = (policy.full_steps || []).map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(", ");
  const kept = [policy.full_every && `every ${policy.full_every} steps`, ranges && `for steps ${ranges}`].filter(Boolean);
  page.fullNote = kept.length ? `full tensors ${kept.join(" and ")}` : "full tensors only for some steps";
  return page;
}

/**
 * Where a key's values for one step come from: { array } (a summary kept for every step, or the
 * tensor chunk) or { missing: "why, in one line" }. `key` may also name a summary that is no key
 * (a per-feature summary such as grad_magnitude): it comes from that summary for every step.
 */
export function locate(page, key, step) {
  const k = page.keyByValue[key];
  const summary = page.arrays[`summary/${key}`];
  if (summary && (!k || summary.dims.join() === ["step", ...k.dims].join())) return { array: `summary/${key}` };
  const tensor = page.arrays[`tensors/${key}`];
  if (tensor) {
    if (page.full && !page.full[step]) return { missing: `step ${step} kept summaries only (${page.fullNote})` };
    return { array: `tensors/${key}` };
  }
  if (!k) return { missing: page.missingSummary(key) };
  if (!page.run.keys.includes(key)) {
    if (k.bcl && !page.run.bcl) return { missing: `not recorded: the ${page.run.condition} condition has no BCL` };
    if (page.run.kind !== "bcl") {
      const only = page.run.policy && page.run.policy.only;
      return { missing: only ? "not stored: the recording kept only some keys (record(only=...))" : "not captured in this recording" };
    }
    return { missing: "not recorded in this run (its --keys left it out)" };
  }
  return { missing: "stored in a form this viewer cannot read" };
}
