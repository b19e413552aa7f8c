// A sortable table of one dimension (BCL's per-feature metrics, or any dimension several keys
// share): one row per entry, one column per key (or per-step summary) with one value per entry,
// sortable by any column, dead features red where the layout says so, and mean / min / max rows
// under the header (they stay in view while the rows scroll). Columns the step lacks say why, in a
// line above the table.
import { h } from "./plots.js";
import { finiteStats, formatValue, sortOrder } from "./stats.js";

export class MetricsTable {
  constructor(parent, { columns, n, dim = "feature", isDead = () => false }) {
    this.columns = columns;  // key values (or summary names)
    this.n = n;
    this.isDead = isDead;
    this.sort = { col: -1, ascending: true };  // -1: by entry number
    this.values = Object.create(null);
    this.note = h("p", { class: "missing", hidden: true });
    const heads = [h("th", { scope: "col" }, h("button", { type: "button", "data-col": -1, text: dim }))];
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
      const tr = h("tr", { "data-row": d }, h("th", { scope: "row", text: String(d) }), tds);
      if (/^[a-z][a-z0-9_]*$/.test(dim)) tr.dataset[dim] = String(d);  // e.g. data-feature
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
      this.note.textContent = reasons[0] || "no values in this recording";
      return;
    }
    // the columns this step lacks, by reason
    const why = new Map();
    this.columns.forEach((c, i) => { if (reasons[i]) why.set(reasons[i], [...(why.get(reasons[i]) || []), c]); });
    this.note.hidden = !why.size;
    this.note.textContent = [...why].map(([reason, cols]) => `${cols.join(", ")}: ${reason}`).join("; ");
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
