// The archive page (FOLDER/index.html): one row per recording, sortable by any column and filtered
// by a text box; ticking runs overlays their timelines (one chart per summary, one colour per run),
// read from each recording's own `summary/` arrays with the array metadata the page inlines; two
// ticked runs open the compare page. `#runs=a,b` in the address ticks those runs.
import { h } from "./plots.js";
import { StepChart } from "./timeline.js";
import { ShardCache, chunkCount, loadChunk } from "./zarr.js";

const root = document.documentElement;
const $ = (sel) => document.querySelector(sel);
// one colour per ticked run, in the order ticked (Tableau 10)
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/** Steps [0, steps) of a one-dimensional summary of a run, read straight from its Zarr array. */
async function readSeries(meta, steps, base, cache) {
  const parts = await Promise.all(Array.from({ length: chunkCount(meta, steps) }, (_, i) => loadChunk(meta, i, base, cache)));
  const out = new Float64Array(steps);
  parts.forEach(({ data }, i) => {
    const from = i * meta.chunks[0];
    for (let j = 0; j < data.length && from + j < steps; j++) out[from + j] = data[j];
  });
  return out;
}

class Archive {
  constructor(data) {
    this.runs = new Map(data.runs.map((r) => [r.path, r]));
    this.charts = data.charts;
    this.table = $("#runs");
    this.rows = [...this.table.tBodies[0].rows];
    this.heads = [...this.table.tHead.rows[0].cells];
    this.ticked = [];          // run paths, in the order ticked
    this.series = new Map();   // "path#summary" -> Promise<Float64Array>
    this.cache = new ShardCache(8e6);
    this.drawn = [];           // the StepCharts on the page
    this.token = 0;
    this.sort = { col: -1, ascending: true };
  }

  wire() {
    this.heads.forEach((th, col) => {
      const button = th.querySelector("button");
      if (!button) return;
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", () => {
        this.sort = { col, ascending: this.sort.col === col ? !this.sort.ascending : true };
        this.order();
      });
    });
    $("#filter").addEventListener("input", () => this.filter());
    for (const tr of this.rows) {
      tr.querySelector("input[type=checkbox]").addEventListener("change", (ev) => this.tick(tr.dataset.run, ev.target.checked));
    }
    $("#untick").addEventListener("click", () => { this.ticked = []; this.update(); });
    window.addEventListener("hashchange", () => {
      const wanted = this.fromHash();
      if (wanted.join() !== this.ticked.join()) { this.ticked = wanted; this.update(false); }
    });
  }

  fromHash() {
    const m = /(?:^#|&)runs=([^&]*)/.exec(location.hash);
    return m ? m[1].split(",").filter(Boolean).map(decodeURIComponent).filter((p) => this.runs.has(p)) : [];
  }

  tick(path, on) {
    this.ticked = this.ticked.filter((p) => p !== path);
    if (on) this.ticked.push(path);
    this.update();
  }

  /** Sort the rows by a column (its cells' data-value, else their text); rows without a value last. */
  order() {
    const { col, ascending } = this.sort;
    const numeric = this.heads[col].dataset.type === "num";
    const value = (tr) => {
      const td = tr.cells[col];
      const raw = td.dataset.value !== undefined ? td.dataset.value : td.textContent.trim();
      if (!numeric) return raw === "–" ? "" : raw;
      return raw === "" ? NaN : Number(raw);
    };
    const present = (v) => (numeric ? !Number.isNaN(v) : v !== "");
    const text = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
    const sorted = this.rows.map((tr, i) => ({ tr, i, v: value(tr) })).sort((a, b) => {
      const pa = present(a.v), pb = present(b.v);
      if (pa !== pb) return pa ? -1 : 1;
      const c = !pa ? 0 : numeric ? a.v - b.v : text.compare(a.v, b.v);
      return c ? (ascending ? c : -c) : a.i - b.i;
    });
    this.table.tBodies[0].append(...sorted.map((s) => s.tr));
    this.heads.forEach((th, i) => { if (th.querySelector("button")) th.setAttribute("aria-sort", i === col ? (ascending ? "ascending" : "descending") : "none"); });
  }

  /** Show the rows whose text holds every word of the filter (case-insensitive). */
  filter() {
    const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tr of this.rows) {
      const text = tr.textContent.toLowerCase();
      const match = words.every((w) => text.includes(w));
      tr.hidden = !match;
      shown += match;
    }
    $("#shown").textContent = shown === this.rows.length ? `${shown} runs` : `${shown} of ${this.rows.length} runs`;
    $("#no-match").hidden = shown > 0;
  }

  colour(path) {
    return PALETTE[this.ticked.indexOf(path) % PALETTE.length];
  }

  /** The ticks changed: marks, the compare link, the address, and the overlays. */
  async update(toHash = true) {
    for (const tr of this.rows) {
      const on = this.ticked.includes(tr.dataset.run);
      tr.querySelector("input[type=checkbox]").checked = on;
      tr.classList.toggle("ticked", on);
      const swatch = tr.querySelector(".swatch");
      swatch.hidden = !on;
      if (on) swatch.style.background = this.colour(tr.dataset.run);
    }
    const link = $("#compare-link");
    if (this.ticked.length === 2) {
      const [a, b] = this.ticked.map(encodeURIComponent);
      link.href = `compare.html#a=${a}&b=${b}`;
      link.setAttribute("aria-disabled", "false");
      link.textContent = `compare ${this.ticked[0]} with ${this.ticked[1]}`;
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
      link.textContent = "compare two ticked runs";
    }
    if (toHash) {
      const hash = this.ticked.length ? `#runs=${this.ticked.map(encodeURIComponent).join(",")}` : "";
      if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname + location.search);
    }
    await this.overlay();
  }

  series_(run, name) {
    const key = `${run.path}#${name}`;
    if (!this.series.has(key)) {
      const base = new URL(`${run.path.split("/").map(encodeURIComponent).join("/")}/`, document.baseURI).href;
      const promise = readSeries(run.arrays[name], run.steps, base, this.cache);
      promise.catch(() => this.series.delete(key));
      this.series.set(key, promise);
    }
    return this.series.get(key);
  }

  /** Draw one chart per summary that some ticked run has, one line per ticked run. */
  async overlay() {
    const token = ++this.token;
    root.dataset.ready = "false";
    const runs = this.ticked.map((p) => this.runs.get(p));
    $("#overlay-hint").hidden = runs.length > 0;
    const wanted = this.charts.map((c) => ({ spec: c, runs: runs.filter((r) => r.arrays[c.summary] && r.steps > 0) }))
      .filter((c) => c.runs.length);
    let values;
    try {
      values = await Promise.all(wanted.map((c) => Promise.all(c.runs.map((r) => this.series_(r, c.spec.summary)))));
    } catch (err) {
      if (token === this.token) this.fail(err);
      return;
    }
    if (token !== this.token) return;
    for (const chart of this.drawn) chart.destroy();
    this.drawn = [];
    const box = $("#overlays");
    box.replaceChildren();
    wanted.forEach((c, i) => {
      const fig = h("figure", { class: "chart", "data-chart": c.spec.id }, h("figcaption", { text: c.spec.title }));
      box.append(fig);
      const steps = Math.max(...c.runs.map((r) => r.steps));
      this.drawn.push(new StepChart(fig, {
        steps, legend: true,
        series: c.runs.map((r, j) => ({ label: r.path, values: values[i][j], color: this.colour(r.path) })),
      }));
    });
    $("#status").textContent = runs.length ? `${runs.length} run${runs.length > 1 ? "s" : ""} overlaid` : "";
    root.dataset.ready = "true";
  }

  fail(err) {
    console.error(err);
    $("#status").textContent = `could not read the timelines: ${err.message}`;
    $("#status").classList.add("error");
    root.dataset.ready = "true";
  }
}

function main() {
  const data = JSON.parse(document.getElementById("archive-data").textContent);
  $("#boot-note").hidden = true;
  const archive = new Archive(data);
  window.accArchive = archive;  // for the console and tests
  archive.wire();
  archive.ticked = archive.fromHash();
  archive.update(false).catch((err) => archive.fail(err));
}

main();
