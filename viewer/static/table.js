// The per-feature metrics table: one row per feature, one column per key with one value per
// feature (found in the key table), sortable by any column, dead features red, and mean / min /
// max rows under the header (they stay in view while the rows scroll).
import { h } from "./plots.js";
import { finiteStats, formatValue, sortOrder } from "./stats.js";

export class MetricsTable {
  constructor(parent, { columns, n, isDead }) {
    this.columns = columns;  // key values
    this.n = n;
    this.isDead = isDead;
    this.sort = { col: -1, ascending: true };  // -1: by feature number
    this.values = {};
    this.note = h("p", { class: "missing", hidden: true });
    const heads = [h("th", { scope: "col" }, h("button", { type: "button", "data-col": -1, text: "feature" }))];
    columns.forEach((c, i) => heads.push(h("th", { scope: "col" }, h("button", { type: "button", "data-col": i, text: c }))));
    this.headRow = h("tr", {}, heads);
    this.headRow.addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (!b) return;
      const col = Number(b.dataset.col);
      this.sort = { col, ascending: this.sort.col === col ? !this.sort.ascending : col === -1 };
      this.order();
    });
    this.rows = [];
    this.cells = [];
    for (let d = 0; d < n; d++) {
      const tds = columns.map(() => h("td"));
      const tr = h("tr", { "data-feature": d }, h("th", { scope: "row", text: String(d) }), tds);
      this.rows.push(tr);
      this.cells.push(tds);
    }
    this.tbody = h("tbody", {}, this.rows);
    this.summary = ["mean", "min", "max"].map((name) => {
      const tds = columns.map(() => h("td"));
      return { name, tds, tr: h("tr", { class: "summary", "data-stat": name }, h("th", { scope: "row", text: name }), tds) };
    });
    this.table = h("table", { class: "metrics-table" }, h("thead", {}, this.headRow, this.summary.map((s) => s.tr)), this.tbody);
    this.wrap = h("div", { class: "table-wrap" }, this.table);
    parent.append(this.note, this.wrap);
  }

  /** values: key -> typed array of n (or a one-line reason string when the step has none). */
  draw(values) {
    this.values = values;
    const reasons = this.columns.map((c) => (typeof values[c] === "string" ? values[c] : null));
    const allMissing = reasons.every((r) => r !== null);
    this.note.hidden = !allMissing;
    this.wrap.hidden = allMissing;
    if (allMissing) {
      this.note.textContent = reasons[0] || "no per-feature tensors in this recording";
      return;
    }
    this.columns.forEach((c, i) => {
      const data = values[c];
      const ok = typeof data !== "string";
      for (let d = 0; d < this.n; d++) {
        this.cells[d][i].textContent = ok ? formatValue(data[d]) : "–";
      }
      const st = ok ? finiteStats(data, 0, this.n) : null;
      for (const s of this.summary) s.tds[i].textContent = ok ? formatValue(st[s.name]) : "–";
      this.headRow.children[i + 1].title = ok ? "" : reasons[i];
    });
    for (let d = 0; d < this.n; d++) this.rows[d].classList.toggle("dead", Boolean(this.isDead(d)));
    this.order();
  }

  order() {
    const { col, ascending } = this.sort;
    const data = col >= 0 ? this.values[this.columns[col]] : null;
    const idx = data && typeof data !== "string"
      ? sortOrder(this.n, (i) => data[i], ascending)
      : sortOrder(this.n, (i) => i, col === -1 ? ascending : true);
    this.tbody.append(...idx.map((i) => this.rows[i]));
    [...this.headRow.children].forEach((th, i) => {
      const active = i - 1 === col;
      th.setAttribute("aria-sort", active ? (ascending ? "ascending" : "descending") : "none");
    });
  }
}
