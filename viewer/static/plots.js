// Canvas plots: heatmaps, grids of 28x28 thumbnails, bar charts and line charts, each with a
// hover readout (and a colour legend where colour carries the value). A plot keeps its canvases
// and pixel buffers and redraws into them for every step.
import { NONFINITE_CSS, lut, paint, sample, valueRange } from "./colors.js";
import { formatValue } from "./stats.js";

const DPR = () => Math.max(1, Math.min(3, globalThis.devicePixelRatio || 1));

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c);
  return el;
}

/** Size a canvas to w x h CSS pixels with a backing store for the screen's pixel ratio. */
export function sizeCanvas(canvas, w, h) {
  const dpr = DPR();
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;  // height follows the aspect ratio, so CSS may shrink a plot to fit
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = false;
  return ctx;
}

/** Mouse position in the canvas' CSS pixel coordinates (whatever CSS scaling applies). */
function pointer(canvas, ev, w, h) {
  const r = canvas.getBoundingClientRect();
  return [((ev.clientX - r.left) * w) / r.width, ((ev.clientY - r.top) * h) / r.height];
}

/** An offscreen bitmap of w x h pixels with a Uint32 view, for painting through colour tables. */
class Bitmap {
  constructor(w, h) {
    this.canvas = document.createElement("canvas");
    this.canvas.width = w;
    this.canvas.height = h;
    this.ctx = this.canvas.getContext("2d");
    this.image = this.ctx.createImageData(w, h);
    this.pixels = new Uint32Array(this.image.data.buffer);
    this.w = w;
    this.h = h;
  }
  flush() { this.ctx.putImageData(this.image, 0, 0); }
}

/** Colour bar with its range; a swatch for non-finite values when there are any. */
export class Legend {
  constructor(parent) {
    this.bar = h("canvas", { class: "legend-bar", width: 128, height: 1 });
    this.lo = h("span", { class: "lo" });
    this.mid = h("span", { class: "mid" });
    this.hi = h("span", { class: "hi" });
    this.nan = h("span", { class: "nan", hidden: true }, h("i", { class: "swatch" }), " NaN/Inf");
    this.el = h("div", { class: "legend" }, this.lo, this.bar, this.hi, this.mid, this.nan);
    parent.append(this.el);
    this.map = null;
  }
  update(lo, hi, map, nonfinite = 0) {
    if (map !== this.map) {
      const ctx = this.bar.getContext("2d");
      const img = ctx.createImageData(128, 1);
      new Uint32Array(img.data.buffer).set(lut(map).filter((_, i) => i % 2 === 0));
      ctx.putImageData(img, 0, 0);
      this.map = map;
    }
    this.lo.textContent = formatValue(lo);
    this.hi.textContent = formatValue(hi);
    this.mid.textContent = map === "diverging" ? "(white: 0)" : "";
    this.nan.hidden = !nonfinite;
    this.nan.lastChild.textContent = nonfinite ? ` ${nonfinite} NaN/Inf` : "";
  }
}

/** A hover readout line under a plot. */
function readout(parent, hint) {
  const out = h("output", { class: "readout", text: hint });
  out.dataset.hint = hint;
  parent.append(out);
  return out;
}

/**
 * A rows x cols matrix, one cell per value (cellW x cellH CSS pixels). `label(r, c, v)` words the
 * readout; `onPick(r, c)` makes a click do something.
 */
export class Heatmap {
  constructor(parent, { rows, cols, cellW = 4, cellH = 4, map = "viridis", label, onPick, hint = "hover for values" }) {
    Object.assign(this, { rows, cols, cellW, cellH, map, label, onPick });
    this.w = cols * cellW;
    this.h = rows * cellH;
    this.canvas = h("canvas", { class: "heatmap" + (onPick ? " pickable" : ""), "data-rows": rows, "data-cols": cols });
    this.ctx = sizeCanvas(this.canvas, this.w, this.h);
    this.bitmap = new Bitmap(cols, rows);
    parent.append(h("div", { class: "plot" }, this.canvas));
    this.legend = new Legend(parent);
    this.out = readout(parent, hint);
    this.view = null;
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
    if (onPick) this.canvas.addEventListener("click", (ev) => { const rc = this.cell(ev); if (rc) onPick(...rc); });
  }

  /** Draw data[offset + r*rowStride + c*colStride]; range defaults to the data's own. */
  draw(data, { offset = 0, rowStride = this.cols, colStride = 1, range, signed = this.map === "diverging" } = {}) {
    const { rows, cols } = this;
    const r = range || rangeOf(data, offset, rowStride, colStride, rows, cols, signed);
    paint(this.bitmap.pixels, 0, cols, data, offset, rowStride, colStride, rows, cols, r.lo, r.hi, lut(this.map));
    this.bitmap.flush();
    this.ctx.clearRect(0, 0, this.w, this.h);
    this.ctx.drawImage(this.bitmap.canvas, 0, 0, this.w, this.h);
    this.legend.update(r.lo, r.hi, this.map, r.nonfinite);
    this.view = { data, offset, rowStride, colStride };
    if (this.last) this.show(...this.last);
  }

  cell(ev) {
    const [x, y] = pointer(this.canvas, ev, this.w, this.h);
    const r = Math.floor(y / this.cellH), c = Math.floor(x / this.cellW);
    return r >= 0 && r < this.rows && c >= 0 && c < this.cols ? [r, c] : null;
  }

  hover(ev) {
    const rc = this.cell(ev);
    if (rc) this.show(...rc);
  }

  /** Put cell (r, c) of the current data into the readout. */
  show(r, c) {
    this.last = [r, c];
    if (!this.view) return;
    const { data, offset, rowStride, colStride } = this.view;
    const v = data[offset + r * rowStride + c * colStride];
    this.out.textContent = this.label ? this.label(r, c, v) : `row ${r}, column ${c}: ${formatValue(v)}`;
    this.out.dataset.row = r;
    this.out.dataset.col = c;
  }
}

function rangeOf(data, offset, rowStride, colStride, rows, cols, signed) {
  if (colStride === 1 && rowStride === cols) return valueRange(data, signed, offset, rows * cols);
  const tmp = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) tmp[r * cols + c] = data[offset + r * rowStride + c * colStride];
  return valueRange(tmp, signed);
}

/**
 * Thumbnails of side x side pixels (rows of a [n, side*side] array) placed at `cells`, a list of
 * { x, y, row } in bitmap pixels, drawn `scale` times. One colour range for all, so thumbnails
 * compare. `label(cell, py, px, v)` words the readout; `caption(cell)` is drawn on a thumbnail.
 */
export class ThumbGrid {
  constructor(parent, { side = 28, cells, width, height, scale = 2, map = "gray", label, caption, hint = "hover for values" }) {
    Object.assign(this, { side, cells, scale, map, label, caption });
    this.w = width * scale;
    this.h = height * scale;
    this.canvas = h("canvas", { class: "thumbs" });
    this.ctx = sizeCanvas(this.canvas, this.w, this.h);
    this.bitmap = new Bitmap(width, height);
    parent.append(h("div", { class: "plot" }, this.canvas));
    this.legend = new Legend(parent);
    this.out = readout(parent, hint);
    this.view = null;
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
  }

  /** Grid placement: n thumbnails in rows of `cols`, `gap` pixels apart. */
  static grid(n, cols, side = 28, gap = 1) {
    const cells = [];
    for (let i = 0; i < n; i++) cells.push({ x: (i % cols) * (side + gap), y: Math.floor(i / cols) * (side + gap), row: i, index: i });
    const rows = Math.ceil(n / cols);
    return { cells, width: cols * (side + gap) - gap, height: rows * (side + gap) - gap };
  }

  draw(data, { offset = 0, signed = this.map === "diverging", range, extra } = {}) {
    const n = this.side * this.side;
    const r = range || valueRange(data, signed, offset, data.length - offset);
    const px = this.bitmap.pixels;
    px.fill(0);  // transparent gaps
    const table = lut(this.map);
    for (const cell of this.cells) {
      if (cell.row < 0) continue;
      paint(px, cell.y * this.bitmap.w + cell.x, this.bitmap.w, data, offset + cell.row * n, this.side, 1, this.side, this.side, r.lo, r.hi, table);
    }
    this.bitmap.flush();
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.w, this.h);
    ctx.drawImage(this.bitmap.canvas, 0, 0, this.w, this.h);
    if (this.caption) {
      ctx.font = "10px ui-monospace, monospace";
      ctx.textBaseline = "top";
      for (const cell of this.cells) {
        const text = this.caption(cell, extra);
        if (text === null || text === undefined) continue;
        const x = cell.x * this.scale + 1, y = cell.y * this.scale + 1;
        const tw = ctx.measureText(text).width;
        ctx.fillStyle = "rgba(0,0,0,0.6)";
        ctx.fillRect(x, y, tw + 3, 11);
        ctx.fillStyle = "#ffd75e";
        ctx.fillText(text, x + 1.5, y + 1);
      }
    }
    this.legend.update(r.lo, r.hi, this.map, r.nonfinite);
    this.view = { data, offset, extra };
    if (this.last) this.show(...this.last);
  }

  hover(ev) {
    const [x, y] = pointer(this.canvas, ev, this.w, this.h);
    const bx = x / this.scale, by = y / this.scale;
    for (const cell of this.cells) {
      if (bx >= cell.x && bx < cell.x + this.side && by >= cell.y && by < cell.y + this.side) {
        this.show(cell, Math.floor(by - cell.y), Math.floor(bx - cell.x));
        return;
      }
    }
  }

  show(cell, py, px) {
    this.last = [cell, py, px];
    if (!this.view || cell.row < 0) return;
    const { data, offset, extra } = this.view;
    const v = data[offset + cell.row * this.side * this.side + py * this.side + px];
    this.out.textContent = this.label ? this.label(cell, py, px, v, extra) : `${cell.row} (${py}, ${px}): ${formatValue(v)}`;
  }
}

/** One bar per value; `highlight(i)` bars are drawn red. */
export class Bars {
  constructor(parent, { n, name = "index", height = 120, maxWidth = 520, highlight }) {
    Object.assign(this, { n, name, highlight });
    this.bw = Math.max(2, Math.floor(maxWidth / n));
    this.pad = 44;
    this.w = this.pad + this.bw * n;
    this.h = height;
    this.canvas = h("canvas", { class: "bars" });
    this.ctx = sizeCanvas(this.canvas, this.w, this.h);
    parent.append(h("div", { class: "plot" }, this.canvas));
    this.out = readout(parent, "hover for values");
    this.canvas.addEventListener("mousemove", (ev) => {
      const [x] = pointer(this.canvas, ev, this.w, this.h);
      const i = Math.floor((x - this.pad) / this.bw);
      if (i >= 0 && i < this.n) this.show(i);
    });
  }

  draw(data, offset = 0) {
    const { ctx, n, bw, pad, w, h: ht } = this;
    const r = valueRange(data, false, offset, n);
    const lo = Math.min(0, r.lo), hi = Math.max(0, r.hi);
    const top = 6, bottom = ht - 14;
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    ctx.clearRect(0, 0, w, ht);
    ctx.font = "10px ui-monospace, monospace";
    ctx.fillStyle = "#777";
    ctx.textBaseline = "middle";
    ctx.fillText(formatValue(hi), 0, top + 2);
    ctx.fillText(formatValue(lo), 0, bottom - 2);
    const y0 = y(0);
    for (let i = 0; i < n; i++) {
      const v = data[offset + i];
      const x = pad + i * bw;
      if (v !== v || v === Infinity || v === -Infinity) {
        ctx.fillStyle = NONFINITE_CSS;
        ctx.fillRect(x, top, Math.max(1, bw - 1), bottom - top);
        continue;
      }
      ctx.fillStyle = this.highlight && this.highlight(i) ? "#d62728" : "#3b6ea8";
      const yv = y(v);
      ctx.fillRect(x, Math.min(yv, y0), Math.max(1, bw - (bw > 3 ? 1 : 0)), Math.max(1, Math.abs(y0 - yv)));
    }
    ctx.strokeStyle = "#999";
    ctx.beginPath();
    ctx.moveTo(pad, y0 + 0.5);
    ctx.lineTo(w, y0 + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#777";
    ctx.textBaseline = "bottom";
    for (let i = 0; i < n; i += n > 64 ? 16 : 8) ctx.fillText(String(i), pad + i * bw, ht);
    this.view = { data, offset };
    if (this.last !== undefined) this.show(this.last);
  }

  show(i) {
    this.last = i;
    if (!this.view) return;
    this.out.textContent = `${this.name} ${i}: ${formatValue(this.view.data[this.view.offset + i])}`;
  }
}

/**
 * Values over all steps, one line per series (log scale optional); a marker at the current step;
 * a click picks a step. `ticks`: per-step flags drawn as short marks under the plot.
 */
export class LineChart {
  constructor(parent, { steps, series, log = false, width = 640, height = 150, onPick, ticks = [] }) {
    Object.assign(this, { steps, series, log, onPick, ticks });
    this.w = width;
    this.h = height;
    this.left = 52;
    this.right = 8;
    this.top = 8;
    this.bottom = height - 18 - (ticks.length ? 4 * ticks.length : 0);
    this.canvas = h("canvas", { class: "line pickable" });
    this.ctx = sizeCanvas(this.canvas, width, height);
    this.base = document.createElement("canvas");
    const keys = h("div", { class: "keys" }, series.map((s) => h("span", {}, h("i", { class: "swatch", "data-color": s.color }), s.label)));
    keys.querySelectorAll("i.swatch").forEach((el) => { el.style.background = el.dataset.color; });
    parent.append(h("div", { class: "plot" }, this.canvas), series.length > 1 ? keys : "");
    this.out = readout(parent, "hover for values, click to jump");
    this.canvas.addEventListener("mousemove", (ev) => this.show(this.stepAt(ev)));
    this.canvas.addEventListener("click", (ev) => onPick && onPick(this.stepAt(ev)));
    this.step = null;
  }

  stepAt(ev) {
    const [x] = pointer(this.canvas, ev, this.w, this.h);
    const t = (x - this.left) / (this.w - this.left - this.right);
    return Math.max(0, Math.min(this.steps - 1, Math.round(t * Math.max(1, this.steps - 1))));
  }

  x(step) { return this.left + (step / Math.max(1, this.steps - 1)) * (this.w - this.left - this.right); }

  /** values: one typed array per series, each `steps` long. */
  setData(values) {
    this.values = values;
    const dpr = DPR();
    this.base.width = Math.round(this.w * dpr);
    this.base.height = Math.round(this.h * dpr);
    const ctx = this.base.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const tf = (v) => (this.log ? (v > 0 ? Math.log10(v) : NaN) : v);
    let lo = Infinity, hi = -Infinity;
    for (const arr of values) for (let i = 0; i < this.steps; i++) {
      const v = tf(arr[i]);
      if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    if (!(lo <= hi)) { lo = 0; hi = 1; }
    const dataLo = lo, dataHi = hi;
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
    const y = (v) => this.bottom - ((v - lo) / (hi - lo)) * (this.bottom - this.top);
    ctx.strokeStyle = "#ddd";
    ctx.strokeRect(this.left + 0.5, this.top + 0.5, this.w - this.left - this.right - 1, this.bottom - this.top);
    ctx.font = "10px ui-monospace, monospace";
    ctx.fillStyle = "#666";
    ctx.textBaseline = "middle";
    const label = (v) => formatValue(this.log ? 10 ** v : v);
    ctx.fillText(label(dataHi), 2, y(dataHi));
    if (dataLo !== dataHi) ctx.fillText(label(dataLo), 2, y(dataLo));
    ctx.strokeStyle = "#eee";
    for (const v of [dataLo, dataHi]) {
      ctx.beginPath();
      ctx.moveTo(this.left, Math.round(y(v)) + 0.5);
      ctx.lineTo(this.w - this.right, Math.round(y(v)) + 0.5);
      ctx.stroke();
    }
    ctx.textBaseline = "bottom";
    ctx.fillText("0", this.left, this.h);
    const last = String(this.steps - 1);
    ctx.fillText(last, this.w - this.right - ctx.measureText(last).width, this.h);
    const width = this.w - this.left - this.right;
    values.forEach((arr, k) => {
      ctx.strokeStyle = this.series[k].color;
      ctx.lineWidth = 1.25;
      ctx.beginPath();
      let pen = false;
      if (this.steps <= 2 * width) {
        for (let i = 0; i < this.steps; i++) {
          const v = tf(arr[i]);
          if (!Number.isFinite(v)) { pen = false; continue; }
          if (pen) ctx.lineTo(this.x(i), y(v)); else ctx.moveTo(this.x(i), y(v));
          pen = true;
        }
      } else {  // one vertical min-max stroke per pixel column
        for (let px = 0; px < width; px++) {
          const a = Math.floor((px * this.steps) / width), b = Math.floor(((px + 1) * this.steps) / width);
          let mn = Infinity, mx = -Infinity;
          for (let i = a; i < b; i++) { const v = tf(arr[i]); if (Number.isFinite(v)) { mn = Math.min(mn, v); mx = Math.max(mx, v); } }
          if (mn > mx) continue;
          ctx.moveTo(this.left + px + 0.5, y(mx));
          ctx.lineTo(this.left + px + 0.5, y(mn) + 0.5);
        }
      }
      ctx.stroke();
    });
    this.ticks.forEach((t, k) => {
      ctx.fillStyle = t.color;
      const y0 = this.bottom + 2 + 4 * k;
      for (let i = 0; i < this.steps; i++) if (t.data[i]) ctx.fillRect(Math.floor(this.x(i)), y0, 1, 3);
    });
    this.render();
  }

  mark(step) {
    this.step = step;
    this.render();
  }

  render() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.w, this.h);
    ctx.drawImage(this.base, 0, 0, this.w, this.h);
    if (this.step !== null) {
      ctx.strokeStyle = "#e4572e";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(this.x(this.step)) + 0.5, this.top);
      ctx.lineTo(Math.round(this.x(this.step)) + 0.5, this.bottom);
      ctx.stroke();
    }
  }

  show(step) {
    if (!this.values) return;
    const parts = this.values.map((arr, k) => `${this.series.length > 1 ? this.series[k].label + " " : ""}${formatValue(arr[step])}`);
    this.out.textContent = `step ${step}: ${parts.join(", ")}`;
  }
}

/** n distinct line colours. */
export function lineColors(n) {
  const fixed = ["#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b"];
  return Array.from({ length: n }, (_, i) => fixed[i] || `rgb(${sample("viridis", i / n).join(",")})`);
}

