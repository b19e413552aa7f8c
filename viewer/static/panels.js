// One panel per key of a section, drawn the way its StepTensorKey says (`render`): heatmap,
// weights (28x28 thumbnails per feature), images, bars, neighbors, scalar. A key added to the
// enum needs only an entry here if it brings a new kind of drawing.
import { mapFor } from "./colors.js";
import { Bars, Heatmap, ThumbGrid, h } from "./plots.js";
import { formatValue, offdiagMean } from "./stats.js";

const TARGET = 384;  // CSS pixels a heatmap aims for along each axis

function fit(n) {
  return Math.max(1, Math.min(8, Math.floor(TARGET / n)));
}

/** Plots for each render kind: build(body, key, page, spec) -> { draw(values, step) }. */
const RENDERERS = {
  heatmap(body, key, page, spec) {
    const [rowDim, colDim] = key.dims;
    const rows = page.dimSize(rowDim), cols = page.dimSize(colDim);
    const map = mapFor({ signed: key.signed });
    const plot = new Heatmap(body, {
      rows, cols, cellW: fit(cols), cellH: fit(rows), map,
      label: (r, c, v) => `${rowDim} ${r}, ${colDim} ${c}: ${formatValue(v)}`,
    });
    const offdiag = spec.offdiag ? h("p", { class: "offdiag" }) : null;
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

  weights(body, key, page) {
    const n = page.dimSize(key.dims[0]);
    const side = Math.round(Math.sqrt(page.dimSize(key.dims[1])));
    const { cells, width, height } = ThumbGrid.grid(n, 8, side);
    const plot = new ThumbGrid(body, {
      side, cells, width, height, scale: 2, map: mapFor({ signed: key.signed, image: true }),
      label: (cell, py, px, v) => `${key.dims[0]} ${cell.row}, pixel (${py}, ${px}): ${formatValue(v)}`,
    });
    return { plot, draw: (values) => plot.draw(values[key.value]) };
  },

  images(body, key, page, spec) {
    const n = page.dimSize(key.dims[0]);
    const side = page.dimSize(key.dims[key.dims.length - 1]);
    const { cells, width, height } = ThumbGrid.grid(n, 16, side);
    const labelsKey = spec.optional[0];
    const plot = new ThumbGrid(body, {
      side, cells, width, height, scale: 2, map: "gray",
      caption: (cell, labels) => (labels ? String(labels[cell.row]) : null),
      label: (cell, py, px, v, labels) =>
        `${key.dims[0]} ${cell.row}${labels ? ` (label ${labels[cell.row]})` : ""}, pixel (${py}, ${px}): ${formatValue(v)}`,
    });
    return { plot, draw: (values) => plot.draw(values[key.value], { extra: values[labelsKey] }) };
  },

  bars(body, key, page) {
    const n = page.dimSize(key.dims[0]);
    const plot = new Bars(body, {
      n, name: key.dims[0],
      highlight: key.dims[0] === "feature" ? (i) => page.isDead(i) : undefined,
    });
    return { plot, draw: (values) => plot.draw(values[key.value]) };
  },

  neighbors(body, key, page, spec) {
    const weightsKey = page.keyByValue[spec.with[0]];
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
        ? `feature ${cell.feature} (itself), pixel (${py}, ${px}): ${formatValue(v)}`
        : `feature ${cell.feature}, neighbour ${cell.slot}: feature ${cell.row}, pixel (${py}, ${px}): ${formatValue(v)}`),
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
    const out = h("p", { class: "scalar" });
    body.append(out);
    return { draw: (values) => { out.textContent = formatValue(values[key.value][0]); } };
  },
};
RENDERERS.labels = (body, key) => {
  const out = h("p", { class: "labels" });
  body.append(out);
  return { draw: (values) => { out.textContent = Array.from(values[key.value]).join(" "); } };
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
    this.renderer = null;  // canvases are made on the first draw, while the first data loads
    this.keys = [spec.key, ...spec.with];
    this.optional = spec.optional.filter((k) => page.available(k));
  }

  draw(values, step) {
    this.missingLine.hidden = true;
    this.body.hidden = false;
    this.renderer ||= RENDERERS[this.key.render](this.body, this.key, this.page, this.spec);
    this.renderer.draw(values, step);
    this.el.dataset.step = step;
  }

  missing(text) {
    this.missingLine.textContent = text;
    this.missingLine.hidden = false;
    this.body.hidden = true;
    delete this.el.dataset.step;
  }
}
