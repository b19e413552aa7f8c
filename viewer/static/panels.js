// One panel per key of a section, drawn the way the recording's key table says (`render`):
// heatmap (any rank: rows by the first dimension), weights (a thumbnail per row when the rows are
// square images, else a heatmap), images (any size; one channel grey, three RGB, channels first or
// last), bars, labels, neighbors (with the rows they index, else a heatmap), scalar. A key of a
// new vocabulary needs nothing here unless it brings a new kind of drawing.
import { mapFor } from "./colors.js";
import { Bars, Heatmap, ThumbGrid, h } from "./plots.js";
import { formatValue, offdiagMean } from "./stats.js";

const TARGET = 384;  // CSS pixels a heatmap aims for along each axis

function fit(n) {
  return Math.max(1, Math.min(8, Math.floor(TARGET / n)));
}

const product = (xs) => xs.reduce((a, b) => a * b, 1);
const isSquare = (n) => n > 0 && Math.round(Math.sqrt(n)) ** 2 === n;
const CHANNEL = /^(c|ch|chan|channels?)$/i;

/** The sizes of a key's dimensions in this recording. */
function shapeOf(key, page) {
  return key.dims.map((d) => page.dimSize(d));
}

/** Flat index i of a block of `shape` as words: "in 2, kh 1, kw 0". */
export function indexWords(dims, shape, i) {
  const out = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    out.unshift(`${dims[d]} ${i % shape[d]}`);
    i = Math.floor(i / shape[d]);
  }
  return out.join(", ");
}

/** Columns and an integer scale for n thumbnails of w x h pixels, at most `cols` a row, about `width` CSS pixels wide. */
export function thumbLayout(n, w, cols, width) {
  cols = Math.max(1, Math.min(n, cols));
  return { cols, scale: Math.max(1, Math.min(8, Math.round(width / (cols * (w + 1))))) };
}

/**
 * How an images key [n, c, h, w], [n, h, w, c], [n, h, w] or [n, h*w] lies: n images of c channels
 * of h x w pixels, the distance between channels (cs), pixel rows (ys) and pixels (xs); null if it
 * is none of those.
 */
export function imageLayout(dims, shape) {
  if (shape.length === 4) {
    const last = CHANNEL.test(dims[3]) || (!CHANNEL.test(dims[1]) && shape[1] > 4 && shape[3] <= 4);
    if (last) {
      const [n, ht, wd, c] = shape;
      return { n, c, ht, wd, per: ht * wd * c, cs: 1, ys: wd * c, xs: c };
    }
    const [n, c, ht, wd] = shape;
    return { n, c, ht, wd, per: c * ht * wd, cs: ht * wd, ys: wd, xs: 1 };
  }
  if (shape.length === 3) return { n: shape[0], c: 1, ht: shape[1], wd: shape[2], per: shape[1] * shape[2], cs: 0, ys: shape[2], xs: 1 };
  if (shape.length === 2 && isSquare(shape[1])) {
    const side = Math.round(Math.sqrt(shape[1]));
    return { n: shape[0], c: 1, ht: side, wd: side, per: shape[1], cs: 0, ys: side, xs: 1 };
  }
  return null;
}

/** Plots for each render kind: build(body, key, page, spec) -> { draw(values, step) }. */
const RENDERERS = {
  heatmap(body, key, page, spec) {
    const shape = shapeOf(key, page);
    const rows = shape.length >= 2 ? shape[0] : 1;
    const cols = shape.length >= 2 ? product(shape.slice(1)) : product(shape);
    const [rowDim, colDim] = key.dims;
    const label = shape.length === 2 ? (r, c, v) => `${rowDim} ${r}, ${colDim} ${c}: ${formatValue(v)}`
      : shape.length === 1 ? (r, c, v) => `${rowDim} ${c}: ${formatValue(v)}`
        : shape.length === 0 ? (r, c, v) => formatValue(v)
          : (r, c, v) => `${rowDim} ${r}, ${indexWords(key.dims.slice(1), shape.slice(1), c)}: ${formatValue(v)}`;
    const map = mapFor({ signed: key.signed });
    const plot = new Heatmap(body, { rows, cols, cellW: fit(cols), cellH: fit(rows), map, label });
    const offdiag = spec.offdiag ? h("p", { class: "offdiag", text: "\u00a0" }) : null;  // (its line, before the first draw)
    if (offdiag) body.prepend(offdiag);
    return {
      plot,
      draw(values) {
        const data = values[key.value];
        plot.draw(data);
        if (offdiag) {
          const m = offdiagMean(data, rows);
          offdiag.dataset.value = String(m);
          offdiag.replaceChildren("mean off-diagonal: ", h("strong", { text: formatValue(m) }));
        }
      },
    };
  },

  weights(body, key, page, spec) {
    const shape = shapeOf(key, page);
    let tw = 0, th = 0;
    if (shape.length === 2 && isSquare(shape[1])) tw = th = Math.round(Math.sqrt(shape[1]));
    else if (shape.length === 3) [th, tw] = [shape[1], shape[2]];
    if (!tw) return RENDERERS.heatmap(body, key, page, spec);  // rows that are no images
    const n = shape[0];
    const { cols, scale } = thumbLayout(n, tw, n <= 64 ? 8 : n <= 256 ? 16 : 32, 464);
    const { cells, width, height } = ThumbGrid.grid(n, cols, tw, th);
    const plot = new ThumbGrid(body, {
      tw, th, cells, width, height, scale, map: mapFor({ signed: key.signed, image: true }),
      label: (cell, py, px, v) => `${key.dims[0]} ${cell.row}, pixel (${py}, ${px}): ${formatValue(v)}`,
    });
    return { plot, draw: (values) => plot.draw(values[key.value]) };
  },

  images(body, key, page, spec) {
    const at = imageLayout(key.dims, shapeOf(key, page));
    if (!at) return RENDERERS.heatmap(body, key, page, spec);
    const rgb = at.c === 3;
    const per = rgb ? 1 : at.c;  // thumbnails per image: one, or one per channel
    const total = at.n * per;
    const { cols, scale } = thumbLayout(total, at.wd, per * Math.max(1, Math.floor(16 / per)), 928);
    const { cells, width, height } = ThumbGrid.grid(total, cols, at.wd, at.ht);
    for (const cell of cells) { cell.image = Math.floor(cell.index / per); cell.channel = cell.index % per; }
    const labelsKey = spec.optional[0];
    const what = (cell, labels) => `${key.dims[0]} ${cell.image}${labels ? ` (label ${labels[cell.image]})` : ""}`
      + (per > 1 ? `, channel ${cell.channel}` : "");
    const plot = new ThumbGrid(body, {
      tw: at.wd, th: at.ht, cells, width, height, scale, map: "gray", ys: at.ys, xs: at.xs, rgb: rgb ? at.cs : null,
      at: (cell) => cell.image * at.per + cell.channel * at.cs,
      caption: (cell, labels) => (labels && cell.channel === 0 ? String(labels[cell.image]) : null),
      label: (cell, py, px, v, labels) =>
        `${what(cell, labels)}, pixel (${py}, ${px}): ${rgb ? `rgb(${v.map(formatValue).join(", ")})` : formatValue(v)}`,
    });
    return { plot, draw: (values) => plot.draw(values[key.value], { extra: values[labelsKey] }) };
  },

  bars(body, key, page) {
    const shape = shapeOf(key, page);
    const n = product(shape);
    const plot = new Bars(body, {
      n, name: shape.length === 1 ? key.dims[0] : "index",
      highlight: key.dims[0] === "feature" ? (i) => page.isDead(i) : undefined,
    });
    return { plot, draw: (values) => plot.draw(values[key.value]) };
  },

  neighbors(body, key, page, spec) {
    const weightsKey = page.keyByValue[spec.with[0]];
    if (!weightsKey) return RENDERERS.heatmap(body, key, page, spec);  // no rows to draw them with
    const n = page.dimSize(key.dims[0]), k = page.dimSize(key.dims[1]);
    const side = Math.round(Math.sqrt(page.dimSize(weightsKey.dims[1])));
    const blocks = 4, perBlock = Math.ceil(n / blocks), step = side + 1;
    const blockWidth = (k + 1) * step + 4;  // the feature, a gap, its k neighbours
    const cells = [];
    for (let d = 0; d < n; d++) {
      const bx = Math.floor(d / perBlock) * (blockWidth + 8), y = (d % perBlock) * step;
      cells.push({ x: bx, y, row: d, feature: d, slot: -1 });
      for (let j = 0; j < k; j++) cells.push({ x: bx + step + 4 + j * step, y, row: -1, feature: d, slot: j });
    }
    const plot = new ThumbGrid(body, {
      side, cells, width: blocks * (blockWidth + 8) - 8 - 1, height: perBlock * step - 1, scale: 1,
      map: mapFor({ signed: weightsKey.signed, image: true }),
      caption: (cell) => (cell.slot < 0 ? String(cell.feature) : null),
      label: (cell, py, px, v) => (cell.slot < 0
        ? `${key.dims[0]} ${cell.feature} (itself), pixel (${py}, ${px}): ${formatValue(v)}`
        : `${key.dims[0]} ${cell.feature}, neighbour ${cell.slot}: ${key.dims[0]} ${cell.row}, pixel (${py}, ${px}): ${formatValue(v)}`),
    });
    return {
      plot,
      draw(values) {
        const nb = values[key.value];
        for (const cell of cells) if (cell.slot >= 0) cell.row = nb[cell.feature * k + cell.slot];
        plot.draw(values[weightsKey.value]);
      },
    };
  },

  scalar(body, key) {
    const out = h("p", { class: "scalar", text: "\u00a0" });  // (its line, before the first draw)
    body.append(out);
    return { draw: (values) => { out.textContent = formatValue(values[key.value][0]); } };
  },

  labels(body, key, page) {
    // until the first draw, a digit per value, transparent: the panel has about its size already
    const out = h("p", { class: "labels", text: Array(product(shapeOf(key, page))).fill("0").join(" ") });
    out.style.color = "transparent";
    body.append(out);
    return {
      draw: (values) => {
        out.style.color = "";
        out.textContent = Array.from(values[key.value], formatValue).join(" ");
      },
    };
  },
};

/** A panel: a caption, the plot, and a one-line note when the step has no data for it. */
export class Panel {
  constructor(parent, spec, page) {
    this.spec = spec;
    this.key = page.keyByValue[spec.key];
    const key = this.key;
    const shape = key.dims.map((d) => page.dimSize(d)).join("×") || "scalar";
    this.el = h("figure", { class: `panel render-${key.render}`, "data-key": key.value });
    this.el.append(h("figcaption", {},
      h("code", { text: key.value }), " ", h("span", { class: "dims", text: `[${key.dims.join(", ")}] ${shape}` }),
      spec.note ? h("span", { class: "note", text: spec.note }) : ""));
    this.body = h("div", { class: "body" });
    this.missingLine = h("p", { class: "missing", hidden: true });
    this.el.append(this.body, this.missingLine);
    parent.append(this.el);
    this.page = page;
    this.renderer = null;  // canvases are made by prepare(), or on the first draw
    this.keys = [spec.key, ...spec.with];
    this.optional = spec.optional.filter((k) => page.available(k));
  }

  /** Make the plot (its canvases at their size, blank) before the first draw; returns the panel. */
  prepare() {
    this.renderer ||= RENDERERS[this.key.render](this.body, this.key, this.page, this.spec);
    return this;
  }

  draw(values, step) {
    this.missingLine.hidden = true;
    this.body.hidden = false;
    this.prepare().renderer.draw(values, step);
    this.el.dataset.step = step;
  }

  missing(text) {
    this.missingLine.textContent = text;
    this.missingLine.hidden = false;
    this.body.hidden = true;
    delete this.el.dataset.step;
  }
}
