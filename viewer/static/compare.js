// The compare page (FOLDER/compare.html#a=RUN&b=RUN&step=N): two recordings of the archive at the
// same step. Every section of the run viewer shows A, B and, where their shapes agree, A - B on a
// diverging scale centred on 0; a table says for every key whether A and B are bit-equal at this
// step, else the largest |A - B| (each in an element data-diff="<key>"); the timeline overlays both
// runs. One scrubber, the arrow keys and the address drive both; runs of different lengths scrub
// to the shorter. As in the run viewer, a step fetches only what the open sections draw (each run
// through its own ChunkStore), and the page root carries data-step and data-ready="true" once drawn.
import { ChunkStore, Cancelled, PRIO, addPageHelpers, locate } from "./data.js";
import { Panel, imageLayout } from "./panels.js";
import { Bars, Heatmap, ThumbGrid, h } from "./plots.js";
import { settingsDiffer } from "./settings.js";
import { formatValue } from "./stats.js";
import { MetricsTable } from "./table.js";
import { StepChart } from "./timeline.js";
import { stepWithKeys } from "./stepkeys.js";
import { chunkIndex } from "./zarr.js";

const root = document.documentElement;
const $ = (sel) => document.querySelector(sel);
const COLORS = { a: "#1f77b4", b: "#e4572e" };
const TARGET = 384;  // CSS pixels a difference heatmap aims for along each axis (as the run viewer's)
const fit = (n) => Math.max(1, Math.min(8, Math.floor(TARGET / n)));
const product = (xs) => xs.reduce((x, y) => x * y, 1);
const shapeText = (shape) => `[${shape.join(", ")}]`;

/** What the run viewer's page object holds (app.js), for one run of the pair. */
function makePage(raw, run) {
  const page = {
    run: raw.run, arrays: raw.arrays, keys: raw.keys, names: raw.names, shardIndex: raw.shard_index, info: raw.info,
    keyByValue: Object.fromEntries(raw.keys.map((k) => [k.value, k])),
    layout: { sections: raw.sections, tables: raw.tables, timeline: raw.timeline },
    path: run.path, full: null, nonfinite: null, lossSeries: null, deadRow: null,
  };
  return addPageHelpers(page);
}

/** The per-step flags (full tensors, non-finite counts) and the loss of every step, onto the page. */
function loadBasics(store, page) {
  return Promise.all(["full", "nonfinite", "lossSeries"].filter((f) => page.names[f] && page.arrays[`summary/${page.names[f]}`])
    .map((f) => store.series(`summary/${page.names[f]}`, page.run.steps).then((v) => { page[f] = v; })));
}

/**
 * How A and B compare at one step: identical (bit for bit), or how many elements differ and the
 * largest |A - B| among them (a NaN against a number counts as differing, outside the maximum),
 * with the element-wise A - B for drawing. `named`: the values are names (the key table says `named`), so the
 * drawing is 1 where A and B differ and 0 where they agree, and there is no largest difference.
 */
export function compareValues(a, b, named = false) {
  const n = a.length;
  if (a.constructor === b.constructor && a.byteLength === b.byteLength) {
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength), y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    let same = true;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) { same = false; break; }
    if (same) return { identical: true, n };
  }
  const diff = new Float32Array(n);
  let differ = 0, max = 0, nonfinite = 0;
  for (let i = 0; i < n; i++) {
    const u = a[i], v = b[i];
    if (u === v || (u !== u && v !== v)) continue;  // (equal values, or both NaN)
    differ++;
    const d = Math.abs(u - v);
    if (named) {
      diff[i] = 1;
    } else if (d === d && d !== Infinity) {
      if (d > max) max = d;
      diff[i] = u - v;
    } else {
      nonfinite++;
      diff[i] = NaN;
    }
  }
  return named ? { identical: false, n, differ, named, diff } : { identical: false, n, differ, max, nonfinite, diff };
}

/** A comparison in words (the text of a data-diff element). */
function diffWords(c) {
  if (c.identical) return "identical";
  if (!c.differ) return "0: the same values in other bits (±0 or NaN payloads)";
  const where = `${c.differ.toLocaleString("en")} of ${c.n.toLocaleString("en")} differ`;
  if (c.named) return where;
  const odd = c.nonfinite ? `; ${c.nonfinite} against NaN or ±Inf` : "";
  return `max |A − B| ${formatValue(c.max)} (${where}${odd})`;
}

/** A − B drawn for a key of `shape`: thumbnails for images and square rows, bars for vectors, else a
 * heatmap; for a key of names (the key table says `named`), 1 where A and B differ, 0 where they agree. */
class DiffPlot {
  constructor(parent, key, shape) {
    const body = this.body = h("div", { class: "body" });
    parent.append(body);
    this.named = key.named;
    const words = this.named ? (v) => (v ? "A ≠ B" : "A = B") : (v) => `A − B = ${formatValue(v)}`;
    const image = (key.render === "images" || key.render === "weights") ? imageLayout(key.dims, shape) : null;
    if (!shape.length) {
      this.text = h("p", { class: "scalar" });
      body.append(this.text);
    } else if (image && image.c === 1 && image.ht === image.wd && image.per === image.ht * image.wd) {
      const { cells, width, height } = ThumbGrid.grid(image.n, key.render === "images" ? 16 : 8, image.ht);
      this.plot = new ThumbGrid(body, {
        side: image.ht, cells, width, height, scale: 2, map: "diverging",
        label: (cell, py, px, v) => `${key.dims[0]} ${cell.row}, pixel (${py}, ${px}): ${words(v)}`,
      });
    } else if (shape.length === 1) {
      this.plot = new Bars(body, { n: shape[0], name: key.dims[0] });
    } else {
      const rows = shape[0], cols = product(shape.slice(1));
      this.plot = new Heatmap(body, {
        rows, cols, cellW: fit(cols), cellH: fit(rows), map: this.named ? "viridis" : "diverging",
        label: (r, c, v) => `${key.dims[0]} ${r}, ${shape.length === 2 ? `${key.dims[1]} ` : "element "}${c}: ${words(v)}`,
      });
    }
    this.words = words;
  }

  draw(c) {
    const diff = c.diff || new Float32Array(c.n);
    if (this.text) this.text.textContent = this.words(diff[0]);
    else if (this.named && this.plot instanceof Heatmap) this.plot.draw(diff, { range: { lo: 0, hi: 1, nonfinite: 0 } });
    else this.plot.draw(diff);
  }
}

/** One key of a section: A's panel, B's panel and A − B side by side. */
class Row {
  constructor(parent, spec, pages, note) {
    this.spec = spec;
    this.key = spec.key;
    const key = pages.map((p) => p.keyByValue[spec.key]).find(Boolean);
    this.keyInfo = key;
    this.diffText = h("span", { class: "diff-text" });
    this.el = h("div", { class: "compare-row", "data-key": spec.key },
      h("div", { class: "row-head" }, h("code", { text: spec.key }), h("span", { class: "dims", text: `[${key.dims.join(", ")}]` }),
        this.diffText, note ? h("span", { class: "note", text: note }) : ""));
    const cells = h("div", { class: "compare-cells" });
    this.el.append(cells);
    parent.append(this.el);
    this.sides = pages.map((page, i) => {
      const tag = i ? "b" : "a";
      const cell = h("div", { class: "cell", "data-side": tag },
        h("div", { class: "cell-head" }, h("span", { class: `tag ${tag}`, text: tag.toUpperCase() }), h("span", { text: page.path })));
      cells.append(cell);
      const lacking = [spec.key, ...spec.with].find((k) => !page.available(k));
      if (lacking) {
        const why = page.keyByValue[lacking] || page.arrays[`summary/${lacking}`] ? locate(page, lacking, 0).missing : "not in this run";
        const line = h("p", { class: "missing", text: lacking === spec.key ? why : `needs ${lacking}, ${why}` });
        cell.append(line);
        return { page, panel: null, line };
      }
      return { page, panel: new Panel(cell, { ...spec, note: "" }, page) };
    });
    const named = key.named;
    this.diffCell = h("div", { class: "cell", "data-side": "diff" },
      h("div", { class: "cell-head" }, h("span", { class: "tag d", text: named ? "A ≠ B" : "A − B" }),
        h("span", { text: named ? "1 where they differ" : "diverging, white: 0" })));
    this.diffLine = h("p", { class: "missing" });
    this.diffCell.append(this.diffLine);
    cells.append(this.diffCell);
    this.plot = null;
  }

  /** Draw the step: `values[i]` holds side i's arrays by key, `reasons[i]` why a side has none. */
  draw(step, values, reasons, comparison) {
    this.sides.forEach((s, i) => {
      if (!s.panel) return;
      if (reasons[i]) s.panel.missing(reasons[i]); else s.panel.draw(values[i], step);
    });
    setDiff(this.diffText, comparison);
    if (comparison.values && !comparison.values.identical) {
      this.diffLine.hidden = true;
      this.plot ||= new DiffPlot(this.diffCell, this.keyInfo, comparison.shape);
      this.plot.draw(comparison.values);
      this.plot.body.hidden = false;
    } else {
      this.diffLine.hidden = false;
      this.diffLine.textContent = comparison.kind !== "identical" ? comparison.text
        : `identical at this step: ${this.keyInfo.named ? "A = B" : "A − B is 0"} everywhere`;
      if (this.plot) this.plot.body.hidden = true;
    }
  }
}

/** Put a comparison on an element: its text and a class (identical, differs, one-side, shapes, missing). */
function setDiff(el, comparison) {
  el.textContent = comparison.text;
  el.className = `${el.classList.contains("diff-text") ? "diff-text " : ""}${comparison.kind}`;
  if (comparison.values && !comparison.values.identical) el.dataset.value = String(comparison.values.named ? comparison.values.differ : comparison.values.max);
  else delete el.dataset.value;
  el.dataset.state = comparison.kind;
}

class Compare {
  constructor(runs, pages, stores) {
    this.runs = runs;
    this.pages = pages;
    this.stores = stores;
    this.steps = Math.min(...pages.map((p) => p.run.steps));
    this.step = 0;
    this.token = 0;
    this.main = $("#compare");
    // every key either run stores, in A's key-table order, then B's others
    const order = [];
    for (const p of pages) for (const k of p.keys) if (!order.includes(k.value) && pages.some((q) => q.run.keys.includes(k.value))) order.push(k.value);
    this.allKeys = order;
  }

  // -- building the page ------------------------------------------------------------------------

  build() {
    const [A, B] = this.pages;
    this.main.append(this.infoCard());
    this.diffCard = this.card("differences", "Differences at this step",
      "Every key, in the order the loop computes them: identical (bit for bit) in A and B, or the largest |A − B| (labels and indices: how many differ).", true);
    const groups = [[], []];
    this.allKeys.forEach((k, i) => groups[i < Math.ceil(this.allKeys.length / 2) ? 0 : 1].push(k));
    this.diffCells = new Map();
    const diffTables = groups.filter((g) => g.length).map((g) => h("table", { class: "diff-table" }, h("tbody", {}, g.map((k) => {
      const cell = h("td", { "data-diff": k, text: "–" });
      this.diffCells.set(k, cell);
      return h("tr", { "data-key": k }, h("th", { scope: "row", text: k }), cell);
    }))));
    this.diffCard.body.append(h("p", { class: "first-line", id: "first-diff" }), h("div", { class: "diff-columns" }, diffTables));
    this.main.append(this.diffCard.el);

    this.timelineCard = this.card("timeline", "Timeline", "Both runs over every step (A blue, B orange): drag to zoom, double-click to reset, click to jump.", true);
    this.timelineCard.body.append(h("div", { class: "timeline" }, this.chartsBox = h("div", { class: "charts" })));
    this.main.append(this.timelineCard.el);
    this.charts = [];
    this.timelineReady = null;

    const byId = (lists) => {
      const out = new Map();
      for (const list of lists) for (const s of list) if (!out.has(s.id)) out.set(s.id, s);
      return [...out.values()];
    };
    const sections = byId([A.layout.sections, B.layout.sections]);
    const tables = byId([A.layout.tables, B.layout.tables]);
    this.sections = [];
    this.tables = [];
    for (const t of tables.filter((t) => t.after === "timeline" || !sections.some((s) => s.id === t.after))) this.addTable(t);
    for (const spec of sections) {
      const card = this.card(spec.id, spec.title, spec.question || "", spec.open !== false);
      const section = { spec, card, rows: [], drawnStep: null };
      const panels = spec.panels.filter((p) => this.pages.some((page) => page.available(p.key)));
      for (const p of panels) section.rows.push(new Row(card.body, p, this.pages, p.note));
      if (!panels.length) card.body.append(h("p", { class: "missing", text: "neither run has these keys" }));
      this.main.append(card.el);
      this.sections.push(section);
      for (const t of tables.filter((t) => t.after === spec.id)) this.addTable(t);
    }
  }

  card(id, title, question, open) {
    const body = h("div", { class: "compare-body" });
    const el = h("details", { class: "card", "data-section": id, open },
      h("summary", {}, h("h2", { text: title }), question ? h("span", { class: "question", text: question }) : ""), body);
    return { el, body };
  }

  addTable(spec) {
    const card = this.card(spec.id, spec.title, spec.question || "", true);
    const grid = h("div", { class: "side-tables" });
    card.body.append(grid);
    const sides = this.pages.map((page, i) => {
      const tag = i ? "b" : "a";
      const box = h("div", { class: "cell" }, h("div", { class: "cell-head" }, h("span", { class: `tag ${tag}`, text: tag.toUpperCase() }), h("span", { text: page.path })));
      grid.append(box);
      const n = page.dimSize(spec.dim) || 0;
      return { page, table: new MetricsTable(box, { columns: spec.columns, n, dim: spec.dim, isDead: spec.dead ? page.isDead : () => false }) };
    });
    this.main.append(card.el);
    this.tables.push({ spec, card, sides, drawnStep: null });
  }

  infoCard() {
    const [A, B] = this.pages;
    const column = (page, tag) => {
      const i = page.info, r = page.run;
      const dl = h("dl", { class: "info" });
      const row = (k, v) => dl.append(h("dt", { text: k }), h("dd", {}, v));
      row("run", h("a", { href: `${page.path.split("/").map(encodeURIComponent).join("/")}/index.html`, text: page.path }));
      if (r.condition) row("condition", r.condition);
      row("seed", i.seed === null || i.seed === undefined ? "–" : String(i.seed));
      row("steps", `${r.steps} (${r.status})`);
      row("settings", i.settings.length ? i.settings.map(([k, v]) => `${k} ${v}`).join(", ") : "the condition's defaults");
      if (i.note) row("note", i.note);
      row("created", i.created || "–");
      return h("div", {}, h("h3", {}, h("span", { class: `tag ${tag}`, text: tag.toUpperCase() }), " ", page.path), dl);
    };
    const differ = settingsDiffer(A, B);
    const lengths = A.run.steps === B.run.steps ? "" : ` A has ${A.run.steps} steps, B ${B.run.steps}: the scrubber covers the first ${this.steps}.`;
    const card = this.card("run-info", "Runs", "", true);
    card.body.append(h("div", { class: "compare-info" }, column(A, "a"), column(B, "b"),
      h("p", { class: "differ", id: "settings-differ" },
        differ.length ? `Settings that differ: ${differ.join("; ")}.` : "The same settings.", lengths)));
    return card.el;
  }

  // -- the timeline -----------------------------------------------------------------------------

  /** One chart per summary of the run viewer's timeline, A and B overlaid; fetched on first open. */
  loadTimeline() {
    this.timelineReady ||= (async () => {
      const specs = new Map();
      for (const p of this.pages) for (const c of p.layout.timeline) if (!specs.has(c.id)) specs.set(c.id, c);
      const steps = Math.max(...this.pages.map((p) => p.run.steps));
      const jobs = [];
      for (const spec of specs.values()) {
        spec.series.forEach((name, i) => {
          const present = this.pages.map((p) => Boolean(p.arrays[`summary/${name}`]));
          if (!present.some(Boolean)) return;
          const title = spec.series.length > 1 ? `${spec.title}: ${spec.labels[i]}` : spec.title;
          const fig = h("figure", { class: "chart", "data-chart": spec.series.length > 1 ? `${spec.id}-${i}` : spec.id }, h("figcaption", { text: title }));
          this.chartsBox.append(fig);
          jobs.push(Promise.all(this.pages.map((p, j) => (present[j] ? this.stores[j].series(`summary/${name}`, p.run.steps) : null)))
            .then((values) => {
              const series = this.pages.map((p, j) => ({ label: `${j ? "B" : "A"} ${p.path}`, values: values[j], color: j ? COLORS.b : COLORS.a }))
                .filter((s, j) => present[j]);
              const chart = new StepChart(fig, { steps, log: spec.log, series, legend: true, onPick: (s) => this.go(s) });
              chart.mark(this.step);
              this.charts.push(chart);
            }));
        });
      }
      await Promise.all(jobs);
    })();
    return this.timelineReady;
  }

  // -- a step -----------------------------------------------------------------------------------

  /** What showing `step` reads, per run: { arrays: Map(key -> array), reasons: Map(key -> why not) }. */
  plan(step) {
    const wanted = new Set();
    for (const s of this.sections) {
      if (!s.card.el.open) continue;
      for (const r of s.rows) for (const k of [r.spec.key, ...r.spec.with, ...r.spec.optional]) wanted.add(k);
    }
    for (const t of this.tables) if (t.card.el.open) for (const k of t.spec.columns) wanted.add(k);
    if (this.diffCard.el.open) for (const k of this.allKeys) wanted.add(k);
    return this.pages.map((page) => {
      const arrays = new Map(), reasons = new Map();
      const use = (k) => {
        if (!page.available(k) && !page.keyByValue[k]) { reasons.set(k, "not in this run"); return; }
        const where = locate(page, k, step);
        if (where.array) arrays.set(k, where.array); else reasons.set(k, where.missing);
      };
      for (const k of wanted) use(k);
      if (page.names.dead && page.available(page.names.dead)) use(page.names.dead);
      return { arrays, reasons };
    });
  }

  chunks(step) {
    if (step < 0 || step >= this.steps) return this.pages.map(() => new Set());
    return this.plan(step).map((p, i) => new Set([...p.arrays.values()].map((a) => `${a}#${chunkIndex(this.pages[i].arrays[a], step)}`)));
  }

  /** How key `k` compares at this step, given each side's values or reason. */
  comparison(k, plans, rows) {
    const [pa, pb] = plans;
    const has = this.pages.map((p) => p.run.keys.includes(k) || Boolean(p.arrays[`summary/${k}`]));
    if (has[0] !== has[1]) {
      const [only, other] = has[0] ? ["A", "B"] : ["B", "A"];
      return { kind: "one-side", text: `only in ${only} (${this.pages[has[0] ? 0 : 1].path}); ${other} has no ${k}` };
    }
    const ra = pa.reasons.get(k), rb = pb.reasons.get(k);
    if (ra || rb) return { kind: "missing", text: ra && rb && ra === rb ? ra : [ra && `A: ${ra}`, rb && `B: ${rb}`].filter(Boolean).join("; ") };
    const ma = this.pages[0].arrays[pa.arrays.get(k)], mb = this.pages[1].arrays[pb.arrays.get(k)];
    const sa = ma.shape.slice(1), sb = mb.shape.slice(1);
    if (sa.join() !== sb.join()) return { kind: "shapes", text: `shapes differ: A ${shapeText(sa)}, B ${shapeText(sb)}` };
    const key = this.pages.map((p) => p.keyByValue[k]).find(Boolean);
    const values = compareValues(rows[0][k], rows[1][k], Boolean(key && key.named));
    return { kind: values.identical ? "identical" : "differs", text: diffWords(values), values, shape: sa };
  }

  clamp(step) {
    return Math.max(0, Math.min(this.steps - 1, Math.round(Number(step) || 0)));
  }

  /** Show a step in both runs; resolves once every open section has drawn it (or another step superseded it). */
  async go(step) {
    if (!this.steps) return;
    step = this.clamp(step);
    const token = ++this.token;
    this.step = step;
    root.dataset.ready = "false";
    this.toolbar(step);
    const plans = this.plan(step);
    const keep = [this.chunks(step), this.chunks(step + 1), this.chunks(step - 1)];
    this.stores.forEach((store, i) => store.cancelUnless((array, index) => keep.some((k) => k[i].has(`${array}#${index}`))));
    const fetches = plans.map((plan, i) => {
      const names = [...new Set(plan.arrays.values())];
      return Promise.all(names.map((a) => this.stores[i].row(a, step, PRIO.now))).then((got) => {
        const byArray = Object.fromEntries(names.map((a, j) => [a, got[j]]));
        return Object.fromEntries([...plan.arrays].map(([k, a]) => [k, byArray[a]]));
      });
    });
    const timeline = this.timelineCard.el.open ? this.loadTimeline() : null;
    let rows;
    try {
      [rows] = await Promise.all([Promise.all(fetches), timeline]);
    } catch (err) {
      if (token !== this.token || err instanceof Cancelled) return;
      this.fail(err);
      return;
    }
    if (token !== this.token) return;
    this.pages.forEach((page, i) => { page.deadRow = (page.names.dead && rows[i][page.names.dead]) || null; });
    const compared = new Map();
    const compare = (k) => {
      if (!compared.has(k)) compared.set(k, this.comparison(k, plans, rows));
      return compared.get(k);
    };
    for (const s of this.sections) {
      if (!s.card.el.open) continue;
      for (const r of s.rows) {
        const reasons = plans.map((p) => [r.spec.key, ...r.spec.with].map((k) => p.reasons.get(k)).find(Boolean) || null);
        r.draw(step, rows, reasons, compare(r.spec.key));
      }
      s.drawnStep = step;
    }
    for (const t of this.tables) {
      if (!t.card.el.open) continue;
      t.sides.forEach((side, i) => side.table.draw(Object.fromEntries(t.spec.columns.map((k) => [k, plans[i].reasons.get(k) || rows[i][k]]))));
      t.drawnStep = step;
    }
    if (this.diffCard.el.open) {
      let first = null;
      for (const k of this.allKeys) {
        const c = compare(k);
        setDiff(this.diffCells.get(k), c);
        const tr = this.diffCells.get(k).parentElement;
        const isFirst = first === null && c.kind === "differs";
        if (isFirst) first = k;
        tr.classList.toggle("first-diff", isFirst);
      }
      const counts = [...compared.values()].reduce((n, c) => ({ ...n, [c.kind]: (n[c.kind] || 0) + 1 }), {});
      $("#first-diff").textContent = first === null
        ? `At step ${step} every key both runs hold is identical${counts.missing ? ` (${counts.missing} not stored at this step)` : ""}.`
        : `At step ${step}, ${counts.identical || 0} keys are identical and ${counts.differs} differ; the first to differ, in the loop's order: ${first}.`;
      this.diffDrawn = step;
    }
    for (const c of this.charts) c.mark(step);
    root.dataset.step = String(step);
    root.dataset.ready = "true";
    $("#status").textContent = `step ${step}`;
    this.prefetch(step);
  }

  prefetch(step) {
    for (const s of [step + 1, step - 1]) {
      if (s < 0 || s >= this.steps) continue;
      this.plan(s).forEach((p, i) => {
        for (const a of new Set(p.arrays.values())) this.stores[i].chunk(a, chunkIndex(this.pages[i].arrays[a], s), PRIO.prefetch).catch(() => {});
      });
    }
  }

  toolbar(step) {
    $("#step-input").value = String(step);
    $("#step-slider").value = String(step);
    const hash = pairHash(this.runs[0].path, this.runs[1].path, step);
    if (location.hash !== hash) history.replaceState(null, "", hash);
    const reading = this.pages.map((p, i) => (p.lossSeries ? `${i ? "B" : "A"} ${formatValue(p.lossSeries[step])}` : null)).filter(Boolean);
    const name = this.pages[0].names.reading || this.pages[1].names.reading;
    $("#loss-reading").textContent = reading.length && name ? `${name}: ${reading.join(", ")}` : "";
  }

  fail(err) {
    console.error(err);
    $("#status").textContent = `could not load step ${this.step}: ${err.message}`;
    $("#status").classList.add("error");
  }

  wire() {
    const last = Math.max(0, this.steps - 1);
    for (const el of [$("#step-input"), $("#step-slider")]) el.max = String(last);
    $("#step-last").textContent = `/ ${last}`;
    const input = $("#step-input");
    input.addEventListener("change", () => this.go(input.value));
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") this.go(input.value); });
    $("#step-slider").addEventListener("input", (ev) => this.go(ev.target.value));
    $('[data-act="prev"]').addEventListener("click", () => this.go(this.step - 1));
    $('[data-act="next"]').addEventListener("click", () => this.go(this.step + 1));
    stepWithKeys(this);
    const refresh = (el, drawn) => el.addEventListener("toggle", () => { if (el.open && drawn() !== this.step) this.go(this.step); });
    for (const s of this.sections) refresh(s.card.el, () => s.drawnStep);
    for (const t of this.tables) refresh(t.card.el, () => t.drawnStep);
    refresh(this.diffCard.el, () => this.diffDrawn);
    refresh(this.timelineCard.el, () => (this.timelineReady ? this.step : null));
  }
}

function pairHash(a, b, step) {
  return `#a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}${step === null ? "" : `&step=${step}`}`;
}

function parseHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  const step = q.get("step");
  return { a: q.get("a"), b: q.get("b"), step: step !== null && /^\d+$/.test(step) ? Number(step) : null };
}

async function main() {
  const { runs } = JSON.parse(document.getElementById("archive-data").textContent);
  const byPath = new Map(runs.map((r) => [r.path, r]));
  const want = parseHash();
  const pair = [byPath.get(want.a) || runs[0], byPath.get(want.b) || runs[Math.min(1, runs.length - 1)]];
  for (const [i, sel] of [$("#pick-a"), $("#pick-b")].entries()) {
    for (const r of runs) sel.append(h("option", { value: r.path, text: `${r.path}${r.condition ? ` · ${r.condition}` : ""} · ${r.steps} steps` }));
    sel.value = pair[i].path;
    sel.addEventListener("change", () => {
      const [a, b] = [$("#pick-a").value, $("#pick-b").value];
      location.hash = pairHash(a, b, parseHash().step);
    });
  }
  window.addEventListener("hashchange", () => {
    const now = parseHash();
    if (now.a !== pair[0].path || now.b !== pair[1].path) { location.reload(); return; }
    if (window.accCompare && now.step !== null && now.step !== window.accCompare.step) window.accCompare.go(now.step);
  });
  $("#archive-link").href = `index.html#runs=${pair.map((r) => encodeURIComponent(r.path)).join(",")}`;
  document.title = `${pair[0].path} vs ${pair[1].path} · compare · acc-capture`;
  const raws = await Promise.all(pair.map(async (r) => {
    const response = await fetch(r.data, { cache: "no-cache" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${r.data}`);
    return response.json();
  }));
  const pages = raws.map((raw, i) => makePage(raw, pair[i]));
  const stores = pages.map((p) => new ChunkStore(p.arrays, new URL(`${p.path.split("/").map(encodeURIComponent).join("/")}/`, document.baseURI).href, p.shardIndex));
  $("#boot-note").hidden = true;
  const view = new Compare(pair, pages, stores);
  window.accCompare = view;  // for the console and tests
  view.build();
  view.wire();
  await Promise.all(pages.map((p, i) => loadBasics(stores[i], p)));
  if (!view.steps) {
    $("#status").textContent = "one of the runs has no completed step";
    root.dataset.ready = "true";
    return;
  }
  await view.go(want.step === null ? 0 : want.step);
}

main().catch((err) => {
  console.error(err);
  $("#status").textContent = `could not open the comparison: ${err.message}`;
  $("#status").classList.add("error");
});
