// The run over all steps, from the `summary/` arrays only: loss, dead features, cosine
// off-diagonal means and norms as line charts, and a features x steps heatmap of win_rate.
// A click anywhere jumps to that step.
import { Heatmap, LineChart, h, lineColors } from "./plots.js";
import { binSteps, formatValue } from "./stats.js";

const MAX_BINS = 1280;

export class Timeline {
  constructor(parent, page, onPick) {
    this.page = page;
    this.onPick = onPick;
    this.parent = parent;
    this.charts = [];
    this.heat = null;
    this.marker = null;
    this.ready = null;
    this.generation = 0;
  }

  /** Fetch the summaries and draw (once); resolves when drawn. */
  load(store) {
    this.ready ||= this.build(store, this.generation);
    return this.ready;
  }

  /** Forget the drawing (the run has more steps now): the next load() draws it again. */
  reset() {
    this.generation++;
    this.parent.replaceChildren();
    this.charts = [];
    this.heat = null;
    this.marker = null;
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
      const colors = lineColors(present.length);
      const ticks = [];
      if (spec.ticks) {
        if (page.full && page.full.some((f) => !f)) ticks.push({ color: "#888", data: page.full, label: "full tensors" });
        if (page.nonfinite && page.nonfinite.some((n) => n > 0)) ticks.push({ color: "#d62728", data: page.nonfinite, label: "non-finite" });
      }
      const chart = new LineChart(box, {
        steps, log: spec.log, width: 660, height: 150, onPick: this.onPick, ticks,
        series: present.map((s, i) => ({ ...s, color: colors[i] })),
      });
      if (ticks.length) box.append(h("p", { class: "ticks-note", text: ticks.map((t) => `${t.color === "#888" ? "grey" : "red"} ticks: ${t.label}`).join("; ") }));
      this.charts.push(chart);
      jobs.push(Promise.all(present.map((s) => store.series(`summary/${s.name}`, steps))).then((values) => chart.setData(values)));
    }
    const name = page.layout.timelineHeatmap;
    const box = h("figure", { class: "chart wide", "data-chart": `${name}-over-time` },
      h("figcaption", { text: `${name} of every feature over time (rows: features, columns: steps) — click to jump` }));
    parent.append(box);
    if (!has(name)) {
      box.append(h("p", { class: "missing", text: page.missingSummary(name) }));
    } else {
      jobs.push(store.series(`summary/${name}`, steps).then((series) => {
        if (!current()) return;
        const width = page.arrays[`summary/${name}`].shape[1];
        const { data, bins, start } = binSteps(series, steps, width, MAX_BINS);
        const cellW = Math.max(1, Math.min(12, Math.floor(MAX_BINS / bins)));
        const range = (c) => (start[c + 1] - start[c] > 1 ? `steps ${start[c]}–${start[c + 1] - 1} (mean)` : `step ${start[c]}`);
        this.heat = new Heatmap(box, {
          rows: width, cols: bins, cellW, cellH: 3, map: "viridis",
          label: (r, c, v) => `feature ${r}, ${range(c)}: ${formatValue(v)}`,
          onPick: (r, c) => this.onPick(start[c]),
          hint: "hover for values, click to jump",
        });
        this.heat.draw(data);
        this.heatStart = start;
        this.marker = h("div", { class: "step-marker" });
        this.heat.canvas.parentElement.append(this.marker);
        if (this.step !== undefined) this.mark(this.step);
      }));
    }
    await Promise.all(jobs);
  }

  mark(step) {
    this.step = step;
    for (const c of this.charts) c.mark(step);
    if (this.marker && this.heat) {
      const s = this.heatStart;
      let b = 0;
      while (b + 1 < s.length - 1 && s[b + 1] <= step) b++;
      this.marker.style.left = `${b * this.heat.cellW}px`;
      this.marker.style.width = `${Math.max(1, this.heat.cellW)}px`;
      this.marker.style.height = `${this.heat.h}px`;
    }
  }
}
