// Canvas plots: heatmaps, grids of thumbnails (grey, colour-mapped or RGB) and bar charts, each
// with a hover readout (and a colour legend where colour carries the value), and the line colours
// of the timeline's charts. A plot keeps its canvases and pixel buffers and redraws into them for
// every step.
import { NONFINITE_CSS, lut, paint, paintRGB, sample, valueRange } from "./colors.js";
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

/**
 * Colour bar with its range; a swatch for non-finite values when there are any. Until the first
 * update it holds about the room its values take (transparent), so that a plot not drawn yet has
 * about the size it will have (`map`: the colour map, when known).
 */
export class Legend {
  constructor(parent, map = null) {
    this.bar = h("canvas", { class: "legend-bar", width: 128, height: 1 });
    this.lo = h("span", { class: "lo", text: "-0.0000" });
    this.mid = h("span", { class: "mid", text: map === "diverging" ? "(white: 0)" : "" });
    this.hi = h("span", { class: "hi", text: "-0.0000" });
    this.lo.style.color = this.hi.style.color = "transparent";
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
    this.lo.style.color = this.hi.style.color = "";
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
    this.legend = new Legend(parent, map);
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
 * Thumbnails of tw x th pixels placed at `cells`, a list of { x, y, row } in bitmap pixels, drawn
 * `scale` times; a cell whose row is negative is left empty. One colour range for all, so
 * thumbnails compare. Where a thumbnail's values lie: from `at(cell)` on (default: rows of tw*th
 * values, `cell.row` the row), `ys` apart from one pixel row to the next and `xs` from one pixel to
 * the next; `rgb`: the distance between a pixel's red, green and blue values (null: one value a
 * pixel, through `map`). `label(cell, py, px, v)` words the readout (v: [r, g, b] for rgb);
 * `caption(cell)` is drawn on a thumbnail. `side` sets tw and th at once.
 */
export class ThumbGrid {
  constructor(parent, { side = 28, tw = side, th = side, cells, width, height, scale = 2, map = "gray", label, caption,
    at = null, ys = tw, xs = 1, rgb = null, hint = "hover for values" }) {
    Object.assign(this, { tw, th, cells, scale, map, label, caption, ys, xs, rgb });
    this.at = at || ((cell) => cell.row * tw * th);
    this.w = width * scale;
    this.h = height * scale;
    this.canvas = h("canvas", { class: "thumbs" });
    this.ctx = sizeCanvas(this.canvas, this.w, this.h);
    this.bitmap = new Bitmap(width, height);
    parent.append(h("div", { class: "plot" }, this.canvas));
    this.legend = new Legend(parent, map);
    this.out = readout(parent, hint);
    this.view = null;
    this.canvas.addEventListener("mousemove", (ev) => this.hover(ev));
  }

  /** Grid placement: n thumbnails of tw x th in rows of `cols`, `gap` pixels apart. */
  static grid(n, cols, tw = 28, th = tw, gap = 1) {
    const cells = [];
    for (let i = 0; i < n; i++) cells.push({ x: (i % cols) * (tw + gap), y: Math.floor(i / cols) * (th + gap), row: i, index: i });
    const rows = Math.ceil(n / cols);
    return { cells, width: Math.min(n, cols) * (tw + gap) - gap, height: rows * (th + gap) - gap };
  }

  draw(data, { offset = 0, signed = this.map === "diverging", range, extra } = {}) {
    const r = range || valueRange(data, signed, offset, data.length - offset);
    const px = this.bitmap.pixels;
    px.fill(0);  // transparent gaps
    const table = lut(this.map);
    const { tw, th, ys, xs } = this;
    for (const cell of this.cells) {
      if (cell.row < 0) continue;
      const out = cell.y * this.bitmap.w + cell.x, from = offset + this.at(cell);
      if (this.rgb) paintRGB(px, out, this.bitmap.w, data, from, ys, xs, this.rgb, th, tw, r.lo, r.hi);
      else paint(px, out, this.bitmap.w, data, from, ys, xs, th, tw, r.lo, r.hi, table);
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
      if (bx >= cell.x && bx < cell.x + this.tw && by >= cell.y && by < cell.y + this.th) {
        this.show(cell, Math.floor(by - cell.y), Math.floor(bx - cell.x));
        return;
      }
    }
  }

  show(cell, py, px) {
    this.last = [cell, py, px];
    if (!this.view || cell.row < 0) return;
    const { data, offset, extra } = this.view;
    const at = offset + this.at(cell) + py * this.ys + px * this.xs;
    const v = this.rgb ? [0, 1, 2].map((c) => data[at + c * this.rgb]) : data[at];
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

/** n distinct line colours. */
export function lineColors(n) {
  const fixed = ["#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b"];
  return Array.from({ length: n }, (_, i) => fixed[i] || `rgb(${sample("viridis", i / n).join(",")})`);
}

