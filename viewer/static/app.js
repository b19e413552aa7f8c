// The page: reads the inlined run description (the recording's key table and the layout the
// builder made of it), builds every section and table, and shows one step at a time. Showing a
// step fetches one chunk per array that an open section in view needs (collapsed sections, and
// sections scrolled out of the window, fetch and draw nothing), draws those sections, then marks
// the page root data-step / data-ready="true" (every open section in view shows that step; each
// section says the step it shows in its own data-step) and prefetches the neighbouring steps of
// those sections. A section scrolled into view (or opened) later fetches and draws the step then.
// Served by `acc-capture serve`, the page also trains: see live.js.
import { ChunkStore, Cancelled, PRIO, addPageHelpers, locate } from "./data.js";
import { Panel } from "./panels.js";
import { h } from "./plots.js";
import { formatValue } from "./stats.js";
import { MetricsTable } from "./table.js";
import { Timeline } from "./timeline.js";
import { Live } from "./live.js";
import { stepWithKeys } from "./stepkeys.js";
import { chunkIndex, rowLength } from "./zarr.js";

const root = document.documentElement;
const $ = (sel) => document.querySelector(sel);

function makePage(raw) {
  const page = {
    run: raw.run,
    arrays: raw.arrays,
    keys: raw.keys,
    keyByValue: Object.fromEntries(raw.keys.map((k) => [k.value, k])),
    layout: { sections: raw.sections, tables: raw.tables, timeline: raw.timeline, timelineHeatmap: raw.timeline_heatmap },
    names: raw.names,
    shardIndex: raw.shard_index,
    full: null,
    nonfinite: null,
    lossSeries: null,
    deadRow: null,
  };
  addPageHelpers(page);
  page.nearestFull = (step) => {
    let before = null, after = null;
    for (let s = step - 1; s >= 0; s--) if (page.full[s]) { before = s; break; }
    for (let s = step + 1; s < page.run.steps; s++) if (page.full[s]) { after = s; break; }
    return [before, after];
  };
  return page;
}

/** Whether an element lies (at least in part) inside the window. */
function inWindow(el) {
  const r = el.getBoundingClientRect();
  const height = window.innerHeight || document.documentElement.clientHeight;
  const width = window.innerWidth || document.documentElement.clientWidth;
  return (r.width > 0 || r.height > 0) && r.bottom > 0 && r.top < height && r.right > 0 && r.left < width;
}

/** A section of step panels: a <details> that may be collapsed, and a line for "nothing here". */
class Section {
  constructor(spec, page) {
    this.id = spec.id;
    this.details = document.querySelector(`[data-section="${spec.id}"]`);
    const box = this.details.querySelector(".panels");
    this.note = h("p", { class: "missing section-note", hidden: true });
    box.before(this.note);
    this.panels = [];
    this.fixed = [];  // panels whose keys this recording lacks altogether
    for (const p of spec.panels) {
      const lacking = [p.key, ...p.with].find((k) => !page.available(k));
      if (lacking) {
        // the reason names the key when it is one the panel needs beside its own (neighbours: weights)
        const why = locate(page, lacking, 0).missing;
        const panel = { spec: p, reason: lacking === p.key ? why : `needs ${lacking}, ${why}`, el: h("p", { class: "missing" }) };
        panel.el.textContent = `${p.key}: ${panel.reason}`;
        box.append(panel.el);
        this.fixed.push(panel);
      } else {
        // its plot now, blank: the page has its final layout before anything is drawn, so what
        // is in view is known before the first step is fetched
        this.panels.push(new Panel(box, p, page).prepare());
      }
    }
    this.drawnStep = null;
    if (!this.panels.length && this.fixed.length) this.collapseNotes(this.fixed.map((p) => p.reason));
  }

  get open() { return this.details.open; }

  /** It shows `step` now. */
  drawn(step) {
    this.drawnStep = step;
    this.details.dataset.step = String(step);
  }

  /** One line for the section when every panel lacks data for the same reason. */
  collapseNotes(reasons) {
    const same = reasons.length > 0 && reasons.every((r) => r && r === reasons[0]);
    this.note.hidden = !same;
    if (same) this.note.textContent = reasons[0];
    for (const p of this.fixed) p.el.hidden = same;
    for (const p of this.panels) p.el.hidden = same;
  }
}

/** A sortable table of one dimension, in its own <details>: a section too. */
class TableSection {
  constructor(spec, page) {
    this.spec = spec;
    this.id = spec.id;
    this.details = document.querySelector(`[data-section="${spec.id}"]`);
    this.table = new MetricsTable(document.getElementById(spec.id), {
      columns: spec.columns, n: page.dimSize(spec.dim) || 0, dim: spec.dim, isDead: spec.dead ? page.isDead : () => false,
    });
    this.drawnStep = null;
  }

  get open() { return this.details.open; }

  drawn(step) {
    this.drawnStep = step;
    this.details.dataset.step = String(step);
  }
}

class Viewer {
  constructor(page, store) {
    this.page = page;
    this.store = store;
    this.steps = page.run.steps;
    this.step = 0;
    this.token = 0;
    this.busy = false;      // a step is being shown
    this.missed = false;    // something came into view (or was opened) meanwhile: looked at when it is shown
    this.started = false;
    this.playing = false;
    this.sections = page.layout.sections.map((s) => new Section(s, page));
    this.timelineBox = $('[data-section="timeline"]');
    this.timeline = new Timeline($("#timeline"), page, (s) => this.go(s));
    // the sortable tables: one row per entry of a dimension, one column per key (or summary)
    this.tables = page.layout.tables.map((spec) => new TableSection(spec, page));
    this.lastMs = null;
  }

  /** The open sections (panels and tables) in the window now. */
  inView() {
    return [...this.sections, ...this.tables].filter((s) => s.open && inWindow(s.details));
  }

  /** Whether something in view does not show the current step yet. */
  stale() {
    return (this.timelineBox.open && !this.timeline.ready) || this.inView().some((s) => s.drawnStep !== this.step);
  }

  /** A section came into view, or was opened: draw it (while a step is being shown: once it is). */
  reveal() {
    if (!this.started) return;
    if (this.busy) this.missed = true;
    else if (this.stale()) this.draw();
  }

  /** What showing `step` in `sections` (default: those in view) takes: per panel, its arrays or why it has none. */
  plan(step, sections = this.inView()) {
    const page = this.page;
    const arrays = new Map();  // key value -> array name
    const use = (key) => {
      const where = locate(page, key, step);
      if (where.array) arrays.set(key, where.array);
      return where;
    };
    // which features are dead (bars and table rows are red), when anything is drawn
    if (sections.length && page.names.dead && page.available(page.names.dead)) use(page.names.dead);
    const items = [];
    const tables = [];
    for (const section of sections) {
      if (section instanceof TableSection) {
        tables.push({ t: section, columns: section.spec.columns.map((k) => [k, use(k)]) });
        continue;
      }
      for (const panel of section.panels) {
        const missing = panel.keys.map(use).find((w) => w.missing);
        for (const k of panel.optional) use(k);
        items.push({ section, panel, missing: missing && missing.missing });
      }
    }
    return { arrays, items, tables, sections };
  }

  chunkSet(step, sections) {
    const out = new Set();
    if (step < 0 || step >= this.steps) return out;
    for (const array of this.plan(step, sections).arrays.values()) out.add(`${array}#${chunkIndex(this.page.arrays[array], step)}`);
    return out;
  }

  clamp(step) {
    return Math.max(0, Math.min(this.steps - 1, Math.round(Number(step) || 0)));
  }

  /**
   * Show a step: the toolbar at once, then every open section in view (see draw); resolves once
   * they are drawn (or another step superseded it).
   */
  async go(step) {
    if (!this.steps) return;
    this.step = this.clamp(step);
    this.toolbar(this.step);
    await this.draw();
  }

  /**
   * Draw the current step in every open section in view that does not show it yet; resolves once
   * drawn (or superseded by another step, or another look at what is in view).
   */
  async draw() {
    const step = this.step;
    const token = ++this.token;
    const t0 = performance.now();
    this.busy = true;
    root.dataset.ready = "false";
    // the flags and the timeline first: until the timeline is drawn, the sections under it are not
    // where they will be
    const timeline = this.timelineBox.open ? this.timeline.load(this.store) : null;
    try {
      await Promise.all([timeline, this.basics]);
    } catch (err) {
      if (token === this.token) this.fail(err);
      return;
    }
    if (token !== this.token) return;
    const view = this.inView();
    const plan = this.plan(step, view.filter((s) => s.drawnStep !== step));
    const keep = new Set([...this.chunkSet(step, view), ...this.chunkSet(step + 1, view), ...this.chunkSet(step - 1, view)]);
    this.store.cancelUnless((array, index) => keep.has(`${array}#${index}`));
    // the largest chunks first, so the slowest transfers start first
    const bytes = (a) => rowLength(this.page.arrays[a]) * (this.page.arrays[a].dtype === "bool" ? 1 : 4);
    const names = [...new Set(plan.arrays.values())].sort((a, b) => bytes(b) - bytes(a));
    let rows;
    try {
      rows = await Promise.all(names.map((a) => this.store.row(a, step, PRIO.now)));
    } catch (err) {
      if (token !== this.token) return;
      if (err instanceof Cancelled) this.busy = false; else this.fail(err);
      return;
    }
    if (token !== this.token) return;
    // every panel draws the same step in one go: the page never shows a mix of two steps
    const t1 = performance.now();
    const byArray = Object.fromEntries(names.map((a, i) => [a, rows[i]]));
    const values = Object.create(null);  // (a key may be named __proto__)
    for (const [key, array] of plan.arrays) values[key] = byArray[array];
    if (plan.sections.length) this.page.deadRow = values[this.page.names.dead] || null;
    const reasons = new Map();
    for (const { section, panel, missing } of plan.items) {
      if (missing) panel.missing(missing); else panel.draw(values, step);
      if (!reasons.has(section)) reasons.set(section, []);
      reasons.get(section).push(missing || null);
    }
    for (const [section, rs] of reasons) section.collapseNotes([...rs, ...section.fixed.map((p) => p.reason)]);
    for (const { t, columns } of plan.tables) {
      t.table.draw(Object.fromEntries(columns.map(([k, w]) => [k, w.missing || values[k]])));
    }
    for (const section of plan.sections) section.drawn(step);
    this.timeline.mark(step);
    if (timeline) this.timelineBox.dataset.step = String(step);
    // a section that came into view while this step loaded: drawn too before the page says it is ready
    if (this.missed) {
      this.missed = false;
      if (this.stale()) return this.draw();
    }
    this.busy = false;
    this.lastMs = performance.now() - t0;
    this.timing = { data: t1 - t0, draw: performance.now() - t1, chunks: names.length };
    root.dataset.step = String(step);
    root.dataset.ready = "true";
    $("#status").textContent = `step ${step} drawn in ${Math.round(this.lastMs)} ms`;
    this.prefetch(step, view);
  }

  /**
   * The recording has `steps` steps now (a live session appended some): refetch the chunks that
   * changed (the last one of every array that holds several steps a chunk), redraw the timeline
   * and the step bounds, and show the newest step.
   */
  async grow(steps) {
    const page = this.page;
    const old = this.steps;
    if (!(steps > old)) return;
    this.busy = true;  // (the timeline is redrawn: what moves into view meanwhile waits for the new step)
    if (!old) {  // the arrays are made at the first step: the rebuilt page describes them
      history.replaceState(null, "", `#step=${steps - 1}`);
      location.reload();
      return new Promise(() => {});
    }
    for (const [name, meta] of Object.entries(page.arrays)) {
      const last = chunkIndex(meta, steps - 1);
      for (let i = chunkIndex(meta, old); i <= last; i++) this.store.refresh(name, i);  // written steps never change
    }
    page.run.steps = this.steps = steps;
    for (const el of [$("#step-input"), $("#step-slider")]) el.max = String(steps - 1);
    $("#step-last").textContent = `/ ${steps - 1}`;
    $("#run-steps").textContent = String(steps);
    this.timeline.reset();
    this.basics = loadBasics(this.store, page);
    try {
      await this.basics;
    } catch (err) {
      this.busy = false;
      throw err;
    }
    if (page.full) $("#run-full").textContent = String(page.full.reduce((a, b) => a + (b ? 1 : 0), 0));
    await this.go(steps - 1);
  }

  /** Fetch the chunks of the neighbouring steps that `sections` (those in view) need, at low priority. */
  prefetch(step, sections) {
    const ahead = this.playing ? [1, 2, 3] : [1, -1];
    for (const d of ahead) {
      const s = step + d;
      if (s < 0 || s >= this.steps) continue;
      for (const array of new Set(this.plan(s, sections).arrays.values())) {
        this.store.chunk(array, chunkIndex(this.page.arrays[array], s), PRIO.prefetch).catch(() => {});
      }
    }
  }

  fail(err) {
    this.busy = false;
    console.error(err);
    $("#status").textContent = `could not load step ${this.step}: ${err.message}`;
    $("#status").classList.add("error");
  }

  toolbar(step) {
    const page = this.page;
    $("#step-input").value = String(step);
    $("#step-slider").value = String(step);
    const hash = `#step=${step}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    $("#loss-reading").textContent = page.lossSeries ? `${page.names.reading} ${formatValue(page.lossSeries[step])}` : "";
    const flags = [];
    if (page.nonfinite && page.nonfinite[step] > 0) {
      flags.push(h("span", { class: "flag warn", title: "NaN or Inf values in this step's tensors; they are drawn magenta" },
        `⚠ ${page.nonfinite[step]} non-finite`));
    }
    if (page.full && !page.full[step]) {
      const [before, after] = page.nearestFull(step);
      const links = [before, after].filter((s) => s !== null).map((s) => h("a", { href: `#step=${s}`, text: String(s) }));
      flags.push(h("span", { class: "flag info", title: page.fullNote }, "summaries only",
        links.length ? " · full: " : "", ...links.flatMap((a, i) => (i ? [" ", a] : [a]))));
    }
    $("#flags").replaceChildren(...flags);
    root.dataset.nonfinite = page.nonfinite ? String(page.nonfinite[step]) : "0";
  }

  async play() {
    this.playing = !this.playing;
    const button = $('[data-act="play"]');
    button.textContent = this.playing ? "pause" : "play";
    button.setAttribute("aria-pressed", String(this.playing));
    while (this.playing && this.step < this.steps - 1) {
      const t0 = performance.now();
      await this.go(this.step + 1);
      const wait = 1000 / Number($("#speed").value) - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    if (this.playing) this.play();  // reached the end: back to "play"
  }

  wire() {
    const input = $("#step-input");
    input.addEventListener("change", () => this.go(input.value));
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") this.go(input.value); });
    $("#step-slider").addEventListener("input", (ev) => this.go(ev.target.value));
    $('[data-act="prev"]').addEventListener("click", () => this.go(this.step - 1));
    $('[data-act="next"]').addEventListener("click", () => this.go(this.step + 1));
    $('[data-act="play"]').addEventListener("click", () => this.play());
    window.addEventListener("hashchange", () => {
      const s = stepFromHash();
      if (s !== null && s !== this.step) this.go(s);
    });
    stepWithKeys(this);
    // a section opened, or scrolled (or pushed) into the window: drawn then
    const boxes = [...this.sections, ...this.tables].map((s) => s.details);
    for (const details of [...boxes, this.timelineBox]) details.addEventListener("toggle", () => this.reveal());
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.reveal();
    });
    for (const details of boxes) this.observer.observe(details);
  }

  /** basics: the promise of the per-step flags and loss the toolbar shows (see main). */
  async start(basics) {
    this.wire();
    if (!this.steps) {  // a live session on a new recording: the first Step shows the first step
      $("#status").textContent = "no steps recorded yet";
      root.dataset.ready = "true";
      return;
    }
    const s = stepFromHash();
    const first = s === null ? 0 : this.clamp(s);
    // the timeline ticks the steps with full tensors: where some have summaries only, it waits for
    // those flags (go() plans once both are in)
    if (!this.page.run.all_full) await basics;
    this.basics = basics.then(() => this.toolbar(this.step));
    this.started = true;
    await this.go(first);
    performance.mark("acc:ready");
  }
}

function stepFromHash() {
  const m = /(?:^#|&)step=(\d+)/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

/** The per-step flags and loss the toolbar shows, for every step; resolves once they are on `page`. */
function loadBasics(store, page) {
  return Promise.all(["full", "nonfinite", "lossSeries"].filter((f) => page.arrays[`summary/${page.names[f]}`])
    .map((f) => store.series(`summary/${page.names[f]}`, page.run.steps).then((v) => { page[f] = v; })));
}

function main() {
  const raw = JSON.parse(document.getElementById("acc-data").textContent);
  const page = makePage(raw);
  $("#boot-note").hidden = true;
  // `acc-capture serve` marks the page it serves; a static server's page never asks for the API
  const liveMark = document.querySelector('meta[name="acc-capture-live"]');
  if (!page.run.steps && !liveMark) {
    $("#status").textContent = "this recording has no completed steps yet";
    root.dataset.ready = "true";
    return;
  }
  performance.mark("acc:start");
  // start the worker and the first requests before building the page
  const store = new ChunkStore(page.arrays, document.baseURI, page.shardIndex);
  const basics = loadBasics(store, page);
  const viewer = new Viewer(page, store);
  performance.mark("acc:built");
  window.accViewer = viewer;  // for the console: accViewer.go(17), accViewer.lastMs
  if (liveMark) viewer.live = new Live(viewer, new URL(liveMark.content, document.baseURI));
  viewer.start(basics).catch((err) => viewer.fail(err));
}

main();
