// Fetches and decodes chunks off the main thread, at most MAX_IN_FLIGHT at a time, the most
// urgent first (the step on screen before prefetched neighbours), then in the order asked.
// Decoded buffers are transferred back, not copied. Shard indexes and the bytes read of shards
// (chunks with their neighbours, or whole shards from a server that ignores Range requests) are
// kept here between requests, until the page says a file changed. The built shard index comes
// from the page, which fetched it once; reads of shards wait for it.
import { ShardCache, loadChunk } from "./zarr.js";

// the step on screen: all its chunks at once (the browser queues what its connections cannot
// take yet); prefetches: a few at a time, so that a jump elsewhere never waits behind many
const MAX_IN_FLIGHT = 16;
const MAX_PREFETCH_IN_FLIGHT = 3;
const URGENT = 2;
let base = null;
let arrays = {};
const queue = [];        // waiting tasks
let inFlight = 0;
let seq = 0;
const shards = new ShardCache();
let builtArrived = null;  // resolves the built index's bytes, once the page sends them

self.onmessage = (e) => {
  const m = e.data;
  if (m.type === "init") {
    base = m.base;
    arrays = m.arrays;
    if (m.shardIndex) shards.useBuilt(new Promise((resolve) => { builtArrived = resolve; }), m.shardIndex);
    self.postMessage({ type: "ready" });
  } else if (m.type === "built") {
    if (builtArrived) builtArrived(m.buffer);
  } else if (m.type === "get") {
    queue.push({ ...m, seq: seq++ });
    pump();
  } else if (m.type === "cancel") {
    const ids = new Set(m.ids);
    for (let i = queue.length - 1; i >= 0; i--) {
      if (ids.has(queue[i].id)) {
        self.postMessage({ id: queue[i].id, status: "cancelled" });
        queue.splice(i, 1);
      }
    }
  } else if (m.type === "shards") {       // what the page read of shards while this worker started
    shards.take(m.contents);
  } else if (m.type === "refresh") {      // the file holding this chunk changed on disk
    if (arrays[m.array]) shards.dropChunk(arrays[m.array], m.index, base);
  } else if (m.type === "bump") {
    const task = queue.find((t) => t.id === m.id);
    if (task && m.prio > task.prio) { task.prio = m.prio; task.seq = seq++; }
  }
};

function next() {
  let best = 0;
  for (let i = 1; i < queue.length; i++) {
    const a = queue[i], b = queue[best];
    if (a.prio > b.prio || (a.prio === b.prio && a.seq < b.seq)) best = i;
  }
  return queue.splice(best, 1)[0];
}

let prefetching = 0;

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const task = next();
    const urgent = task.prio >= URGENT;
    if (!urgent && prefetching >= MAX_PREFETCH_IN_FLIGHT) { queue.push(task); return; }
    inFlight++;
    if (!urgent) prefetching++;
    run(task).finally(() => { inFlight--; if (!urgent) prefetching--; pump(); });
  }
}

async function run(task) {
  const meta = arrays[task.array];
  try {
    if (!meta) throw new Error(`unknown array ${task.array}`);
    const { status, data } = await loadChunk(meta, task.index, base, shards);
    self.postMessage({ id: task.id, status, data }, [data.buffer]);
  } catch (err) {
    self.postMessage({ id: task.id, status: "error", message: String(err && err.message || err) });
  }
}
