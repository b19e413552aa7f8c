// The run over all steps, from the `summary/` arrays only: loss, dead features, cosine
// off-diagonal means and norms as line charts, and a features x steps heatmap of win_rate.
// Drag across a chart to zoom into a range of steps, double-click to see them all again; the
// cursor and the zoom are shared by every chart, and the heatmap follows the zoom. A click jumps
// to that step.
//
// `StepChart` is the reusable part: one chart of series over steps (uPlot, vendored), e.g. several
// runs overlaid, one colour and one legend entry each.
import uPlot from "./vendor/uPlot.esm.js";
import { Heatmap, h, lineColors } from "./plots.js";
import { binSteps, formatValue, isFiniteNumber } from "./stats.js";

const MAX_BINS = 1280;
export const SYNC = "acc-steps";  // the charts of a page with this key share their cursor and zoom
const AXIS = { stroke: "#666", font: "11px system-ui, sans-serif", grid: { stroke: "#eee", width: 1 }, ticks: { stroke: "#ddd", width: 1, size: 4 } };
const STEP_INCRS = Array.from({ length: 10 }, (_, k) => [1, 2, 5].map((m) => m * 10 ** k)).flat();  // whole steps only

/** A tick label: short, exponent notation for tiny or huge values. */
function tickLabel(v) {
  if (v === null || v === undefined) return "";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential().replace("e+", "e");
  return String(Number(v.toPrecision(6)));
}

/** Grid lines and ticks of a log axis at powers of ten only (not at 2..9 of every decade). */
const decades = (u, splits) => splits.map((v) => (v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? v : null));

/** The width an axis needs for its labels (uPlot asks again after the labels change). */
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (v && v.length > a.length ? v : a), "");
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / uPlot.pxRatio;
  }
  return Math.ceil(size);
}

/** What uPlot plots of a series: finite values (positive ones on a log scale), null for the rest. */
function plotted(values, steps, log) {
  const out = new Array(steps);
  const n = Math.min(steps, values ? values.length : 0);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    out[i] = isFiniteNumber(v) && (!log || v > 0) ? v : null;
  }
  out.fill(null, n);
  return out;
}

/**
 * One chart of values over steps 0..steps-1, appended to `parent`:
 * - series: [{ label, values, color? }]: values has one number a step (a shorter array leaves the
 *   last steps empty; non-finite values leave gaps). Colours default to `lineColors`.
 * - log: a log-scale y axis (values <= 0 leave gaps).
 * - ticks: [{ label, color, data }]: per-step flags drawn as short marks along the bottom.
 * - sync: charts with the same key share their cursor and their zoom.
 * - onPick(step): a click (not a drag) on the plot. onZoom(min, max): the range of steps shown changed.
 * - legend: show the series' colours and labels (default: when there are several series).
 * Drag to zoom, double-click to reset. The readout under the chart says the step under the cursor
 * and each series' value there (as stored, NaN and Inf included). The chart's element
 * (`.step-chart`, whose `chart` property is this object) carries data-x-min / data-x-max, the
 * range of steps shown.
 */
export class StepChart {
  constructor(parent, { series, steps, log = false, ticks = [], sync = SYNC, onPick = null, onZoom = null,
    height = 150, legend = series.length > 1 }) {
    const colors = lineColors(series.length);
    this.series = series.map((s, i) => ({ ...s, color: s.color || colors[i] }));
    this.steps = steps;
    this.log = log && this.series.some((s) => plotted(s.values, steps, true).some((v) => v !== null));
    this.ticks = ticks;
    this.onZoom = onZoom;
    this.step = null;
    this.el = h("div", { class: "step-chart" });
    this.el.chart = this;  // for the console and tests
    this.hint = ["drag to zoom", "double-click to reset", onPick && "click to jump"].filter(Boolean).join(", ");
    this.out = h("output", { class: "readout", text: this.hint });
    parent.append(this.el, this.out);
    if (ticks.length) parent.append(this.ticksNote());

    const x = Array.from({ length: steps }, (_, i) => i);
    const data = [x, ...this.series.map((s) => plotted(s.values, steps, this.log))];
    const opts = {
      width: Math.max(200, parent.clientWidth || 640),
      height,
      legend: { show: legend, live: false },
      cursor: {
        y: false,
        move: (u, left, top) => [left < 0 ? left : u.valToPos(this.clamp(u.posToVal(left, "x")), "x"), top],  // onto whole steps
        sync: { key: sync, scales: ["x", null] },
        drag: { x: true, y: false, dist: 5, setScale: true, click: () => {} },  // clicks are ours (see below)
        points: { size: 6 },
      },
      scales: {
        x: { time: false, range: (u, min, max) => (steps === 1 ? [-0.5, 0.5] : [min, max]) },  // one step: half a step each side
        y: this.log ? { distr: 3, log: 10 } : {},
      },
      axes: [
        { ...AXIS, size: 26, incrs: STEP_INCRS, values: (u, splits) => splits.map(String) },
        this.log
          ? { ...AXIS, size: axisSize, values: (u, splits) => splits.map(tickLabel),
            grid: { ...AXIS.grid, filter: decades }, ticks: { ...AXIS.ticks, filter: decades } }
          : { ...AXIS, size: axisSize, values: (u, splits) => splits.map(tickLabel) },
      ],
      series: [
        { label: "step" },
        ...this.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.25, spanGaps: false })),
      ],
      hooks: {
        setScale: [(u, key) => key === "x" && this.u && this.zoomed()],  // (this.u: not while uPlot starts)
        setCursor: [(u) => this.show(u.cursor.idx)],
        setSize: [() => this.u && this.place()],
        draw: [(u) => this.drawTicks(u)],
      },
    };
    this.u = new uPlot(opts, data, this.el);
    this.line = h("div", { class: "step-line", hidden: true });
    this.u.over.append(this.line);
    // beside the plot (over the y axis, or the room right of it) the first or the last step shown
    this.u.root.addEventListener("mousemove", (ev) => {
      const left = this.margin(ev);
      if (left !== null) this.u.setCursor({ left, top: this.u.over.clientHeight / 2 }, true, true);
    });
    if (onPick) {
      // a click on the plot or beside it picks a step; a drag (it zooms) does not, nor does the second
      // click of a double-click (it resets the zoom)
      let down = null;
      this.u.root.addEventListener("mousedown", (ev) => { down = ev.clientX; });
      this.u.root.addEventListener("click", (ev) => {
        const inPlot = this.u.over.contains(ev.target);
        if (ev.detail < 2 && down !== null && Math.abs(ev.clientX - down) < 5 && (inPlot || this.margin(ev) !== null)) onPick(this.stepAt(ev));
      });
    }
    this.resize = new ResizeObserver(() => {
      const w = Math.max(200, parent.clientWidth);
      if (w !== this.u.width) this.u.setSize({ width: w, height });
    });
    this.resize.observe(parent);
    this.zoomed();
  }

  ticksNote() {
    return h("p", { class: "ticks-note" }, this.ticks.map((t) => {
      const swatch = h("i", { class: "swatch" });
      swatch.style.background = t.color;
      return h("span", {}, swatch, ` ${t.label}`);
    }));
  }

  /** The step nearest to a value of the x scale. */
  clamp(x) {
    return Math.max(0, Math.min(this.steps - 1, Math.round(x)));
  }

  /** For a mouse event beside the plot, level with it: the plot's left or right edge (CSS pixels); else null. */
  margin(ev) {
    if (this.u.over.contains(ev.target) || this.el.querySelector(".u-legend")?.contains(ev.target)) return null;
    const r = this.u.over.getBoundingClientRect();
    if (ev.clientY < r.top || ev.clientY > r.bottom) return null;
    return ev.clientX < r.left ? 0 : ev.clientX > r.right ? r.width : null;
  }

  /** The step under a mouse event (nearest the plot's edge beside it). */
  stepAt(ev) {
    const r = this.u.over.getBoundingClientRect();
    return this.clamp(this.u.posToVal(ev.clientX - r.left, "x"));
  }

  /** The range of steps shown, as the x scale has it: [min, max]. */
  range() {
    const { min, max } = this.u.scales.x;
    return [min, max];
  }

  zoomed() {
    const [min, max] = this.range();
    if (min === null || min === undefined) return;
    this.el.dataset.xMin = String(min);
    this.el.dataset.xMax = String(max);
    this.place();
    if (this.onZoom) this.onZoom(min, max);
  }

  /** Mark a step with a vertical line (null: none). */
  mark(step) {
    this.step = step;
    this.place();
  }

  place() {
    if (!this.line) return;
    const [min, max] = this.range();
    const show = this.step !== null && this.step >= min && this.step <= max;
    this.line.hidden = !show;
    if (show) this.line.style.left = `${Math.round(this.u.valToPos(this.step, "x"))}px`;
  }

  show(idx) {
    if (idx === null || idx === undefined) return;  // the cursor left: keep the last values
    const many = this.series.length > 1;
    const parts = this.series.map((s) => `${many ? `${s.label} ` : ""}${formatValue(s.values[idx])}`);
    this.out.textContent = `step ${idx}: ${parts.join(", ")}`;
    this.out.dataset.step = String(idx);
  }

  drawTicks(u) {
    if (!this.ticks.length) return;
    const { ctx, bbox } = u;
    const pr = uPlot.pxRatio;
    const { min, max } = u.scales.x;
    const lo = Math.max(0, Math.ceil(min)), hi = Math.min(this.steps - 1, Math.floor(max));
    const w = Math.max(2, Math.round(2 * pr));
    ctx.save();
    this.ticks.forEach((t, k) => {  // a row of marks 6 pixels high each, along the bottom of the plot
      ctx.fillStyle = t.color;
      const y = Math.round(bbox.top + bbox.height - (k + 1) * 7 * pr);
      let last = -Infinity;
      for (let i = lo; i <= hi; i++) {
        if (!t.data[i]) continue;
        const px = Math.round(u.valToPos(i, "x", true));
        if (px === last) continue;  // one mark a pixel column
        last = px;
        ctx.fillRect(px - (w >> 1), y, w, Math.round(6 * pr));
      }
    });
    ctx.restore();
  }

  destroy() {
    this.resize.disconnect();
    this.u.destroy();
  }
}

export class Timeline {
  constructor(parent, page, onPick) {
    this.page = page;
    this.onPick = onPick;
    this.parent = parent;
    this.charts = [];
    this.heat = null;
    this.heatBox = null;
    this.heatData = null;
    this.heatRange = null;
    this.marker = null;
    this.view = null;     // the range of steps the charts show, [lo, hi]
    this.pending = 0;
    this.ready = null;
    this.generation = 0;
    this.step = undefined;
  }

  /** Fetch the summaries and draw (once); resolves when drawn. */
  load(store) {
    this.ready ||= this.build(store, this.generation);
    return this.ready;
  }

  /** Forget the drawing (the run has more steps now): the next load() draws it again. */
  reset() {
    this.generation++;
    for (const c of this.charts) c.destroy();
    cancelAnimationFrame(this.pending);
    this.pending = 0;
    this.parent.replaceChildren();
    this.charts = [];
    this.heat = this.heatBox = this.heatData = this.heatRange = this.marker = this.view = null;
    this.ready = null;
  }

  async build(store, generation) {
    const { page, parent } = this;
    const steps = page.run.steps;
    const current = () => generation === this.generation;  // not reset since this drawing began
    const has = (name) => Boolean(page.arrays[`summary/${name}`]);
    const grid = h("div", { class: "charts" });
    parent.append(grid);
    const jobs = [];
    for (const spec of page.layout.timeline) {
      const present = spec.series.map((s, i) => ({ name: s, label: spec.labels[i] })).filter((s) => has(s.name));
      const box = h("figure", { class: "chart", "data-chart": spec.id }, h("figcaption", { text: spec.title }));
      grid.append(box);
      if (!present.length) {
        box.append(h("p", { class: "missing", text: page.missingSummary(spec.series[0]) }));
        continue;
      }
      const ticks = [];
      if (spec.ticks) {
        if (page.full && page.full.some((f) => !f)) ticks.push({ color: "#888", data: page.full, label: "steps with full tensors" });
        if (page.nonfinite && page.nonfinite.some((n) => n > 0)) ticks.push({ color: "#d62728", data: page.nonfinite, label: "steps with non-finite values" });
      }
      jobs.push(Promise.all(present.map((s) => store.series(`summary/${s.name}`, steps))).then((values) => {
        if (!current()) return;
        const chart = new StepChart(box, {
          steps, log: spec.log, ticks, onPick: this.onPick, onZoom: (lo, hi) => this.zoomed(lo, hi),
          series: present.map((s, i) => ({ label: s.label, values: values[i] })),
        });
        this.charts.push(chart);
        if (this.step !== undefined) chart.mark(this.step);
      }));
    }
    const name = page.layout.timelineHeatmap;
    if (name) {
      const box = h("figure", { class: "chart wide", "data-chart": `${name}-over-time` },
        h("figcaption", { text: `${name} of every feature over time (rows: features, columns: steps; it follows the charts' zoom) — click to jump` }));
      parent.append(box);
      if (!has(name)) {
        box.append(h("p", { class: "missing", text: page.missingSummary(name) }));
      } else {
        jobs.push(store.series(`summary/${name}`, steps).then((series) => {
          if (!current()) return;
          this.heatBox = h("div", { class: "heat" });
          box.append(this.heatBox);
          this.heatData = { series, width: page.arrays[`summary/${name}`].shape[1] };
          this.drawHeat(...(this.view || [0, steps - 1]));
        }));
      }
    }
    await Promise.all(jobs);
  }

  /** The charts show steps [min, max] now: the heatmap follows (once a frame, whichever chart moved). */
  zoomed(min, max) {
    const steps = this.page.run.steps;
    const lo = Math.max(0, Math.min(steps - 1, Math.ceil(min)));
    const hi = Math.max(lo, Math.min(steps - 1, Math.floor(max)));
    this.view = [lo, hi];
    if (this.pending || !this.heatData) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      const [lo, hi] = this.view || [];
      if (this.heatData && this.view && (lo !== this.heatRange[0] || hi !== this.heatRange[1])) this.drawHeat(lo, hi);
    });
  }

  /** The heatmap of steps [lo, hi]: one column per step, or per bin of steps when they are many. */
  drawHeat(lo, hi) {
    const { series, width } = this.heatData;
    const n = hi - lo + 1;
    const part = series.subarray(lo * width, (hi + 1) * width);
    const { data, bins, start } = binSteps(part, n, width, MAX_BINS);
    const first = Int32Array.from(start, (s) => s + lo);
    const cellW = Math.max(1, Math.min(12, Math.floor(MAX_BINS / bins)));
    const range = (c) => (first[c + 1] - first[c] > 1 ? `steps ${first[c]}–${first[c + 1] - 1} (mean)` : `step ${first[c]}`);
    this.heatBox.replaceChildren();
    this.heat = new Heatmap(this.heatBox, {
      rows: width, cols: bins, cellW, cellH: 3, map: "viridis",
      label: (r, c, v) => `feature ${r}, ${range(c)}: ${formatValue(v)}`,
      onPick: (r, c) => this.onPick(first[c]),
      hint: `steps ${lo}–${hi}: hover for values, click to jump`,
    });
    this.heat.draw(data);
    this.heat.canvas.dataset.from = String(lo);
    this.heat.canvas.dataset.to = String(hi);
    this.heatStart = first;
    this.heatRange = [lo, hi];
    this.marker = h("div", { class: "step-marker" });
    this.heat.canvas.parentElement.append(this.marker);
    if (this.step !== undefined) this.mark(this.step);
  }

  mark(step) {
    this.step = step;
    for (const c of this.charts) c.mark(step);
    if (this.marker && this.heat) {
      const s = this.heatStart;
      const inside = step >= this.heatRange[0] && step <= this.heatRange[1];
      this.marker.hidden = !inside;
      if (!inside) return;
      let a = 0, b = s.length - 2;  // the last bin whose first step is <= step
      while (a < b) {
        const m = (a + b + 1) >> 1;
        if (s[m] <= step) a = m; else b = m - 1;
      }
      this.marker.style.left = `${a * this.heat.cellW}px`;
      this.marker.style.width = `${Math.max(1, this.heat.cellW)}px`;
      this.marker.style.height = `${this.heat.h}px`;
    }
  }
}
