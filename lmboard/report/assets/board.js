"use strict";
// lmboard board: everything is drawn from the JSON blocks of this file with textContent
// (never innerHTML), so model text shows as text and runs nothing.
const B = JSON.parse(document.getElementById("board-data").textContent);
const byKey = Object.fromEntries(B.columns.map(c => [c.key, c]));
const cells = {};
for (const c of B.cells) cells[c.model + "\u0000" + c.column] = c;
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function fmt(col, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return null;
  const x = col.unit === "frac" ? v * 100 : v;
  return x.toFixed(col.unit === "s" ? 3 : 1);
}
let sortCol = null, sortDir = -1;
function cellValue(m, key) { const c = cells[m.key + "\u0000" + key]; return c ? c.value : null; }
function renderTable() {
  const q = document.getElementById("filter").value.toLowerCase();
  const table = document.getElementById("board");
  table.textContent = "";
  const thead = el("thead"), groups = el("tr"), head = el("tr");
  groups.append(el("th", "", "group"));
  let last = null, span = null;
  for (const c of B.columns) {
    if (c.group !== last) { span = el("th", c.group, "group"); span.colSpan = 1; groups.append(span); last = c.group; }
    else span.colSpan += 1;
  }
  const mh = el("th", "model", "model"); mh.dataset.key = "__model"; head.append(mh);
  for (const c of B.columns) { const th = el("th", c.label + (c.unit === "frac" || c.unit === "pct" ? " %" : "")); th.dataset.key = c.key; head.append(th); }
  for (const th of head.children) {
    if (th.dataset.key === sortCol) th.className += sortDir > 0 ? " sorted-asc" : " sorted-desc";
    th.addEventListener("click", () => { sortDir = sortCol === th.dataset.key ? -sortDir : -1; sortCol = th.dataset.key; renderTable(); });
  }
  thead.append(groups, head); table.append(thead);
  let models = B.models.filter(m => (m.key + " " + (m.adapter || "")).toLowerCase().includes(q));
  if (sortCol) models.sort((a, b) => {
    if (sortCol === "__model") return sortDir * a.key.localeCompare(b.key);
    const x = cellValue(a, sortCol), y = cellValue(b, sortCol);
    if (x === null && y === null) return 0; if (x === null) return 1; if (y === null) return -1;
    return sortDir * (x - y);
  });
  const tbody = el("tbody");
  for (const m of models) {
    const tr = el("tr"); tr.dataset.model = m.key;
    tr.append(el("td", m.key + (m.imported ? " (imported)" : ""), "model" + (m.imported ? " imported" : "")));
    for (const c of B.columns) {
      const cell = cells[m.key + "\u0000" + c.key], v = cell ? fmt(c, cell.value) : null;
      if (v === null) { tr.append(el("td", "—", "missing")); continue; }
      const td = el("td"), a = el("a", v); td.append(a);
      if (cell.low !== null && cell.low !== undefined) td.append(el("span", " [" + fmt(c, cell.low) + ", " + fmt(c, cell.high) + "]", "ci"));
      if (cell.run) a.addEventListener("click", () => openRun(cell.run, m.key, c.key));
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.append(tbody);
}
function samplesOf(run) {
  const node = document.getElementById("run-" + run);
  return node ? JSON.parse(node.textContent) : [];  // parsed on demand: the page opens fast
}
function kvTable(obj) {
  const t = el("table");
  for (const [k, v] of Object.entries(obj)) { const tr = el("tr"); tr.append(el("th", k), el("td", typeof v === "object" ? JSON.stringify(v) : String(v), "text")); t.append(tr); }
  return t;
}
function sampleTable(rows, filterBox) {
  const t = el("table"); t.id = "samples";
  const keys = [...new Set(rows.flatMap(r => Object.keys(r)))];
  const tr = el("tr"); for (const k of keys) tr.append(el("th", k)); t.append(tr);
  const draw = () => {
    while (t.rows.length > 1) t.deleteRow(1);
    const q = filterBox.value.toLowerCase();
    for (const r of rows) {
      if (q && !JSON.stringify(r).toLowerCase().includes(q)) continue;
      const row = el("tr");
      for (const k of keys) { const v = r[k]; row.append(el("td", v === undefined || v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v), "text")); }
      t.append(row);
    }
  };
  filterBox.addEventListener("input", draw); draw();
  return t;
}
function openRun(run, model, column) {
  const d = document.getElementById("drill"); d.textContent = "";
  const info = B.runs[run] || {};
  d.append(el("h2", "Run " + run), el("p", model + " · " + (byKey[column] ? byKey[column].group : "")));
  d.append(kvTable({kind: info.kind, created: new Date((info.created || 0) * 1000).toISOString(), dtype: info.dtype,
                    spec: info.spec, template_hash: info.template_hash, versions: info.versions, settings: byKey[column] ? byKey[column].settings : {}}));
  const others = B.models.filter(m => m.key !== model && cells[m.key + "\u0000" + column] && cells[m.key + "\u0000" + column].run);
  if (others.length) {
    const pick = el("select"); pick.id = "compare-with"; pick.append(el("option", "side by side with…"));
    for (const m of others) { const o = el("option", m.key); o.value = m.key; pick.append(o); }
    pick.addEventListener("change", () => { if (pick.value) sideBySide(column, model, pick.value); });
    d.append(pick);
  }
  const box = el("input"); box.placeholder = "search samples"; box.id = "sample-filter"; d.append(box);
  d.append(sampleTable(samplesOf(run), box));
  d.scrollIntoView();
}
const SHOWN = ["question", "instruction", "choices", "reference"];
function sideBySide(column, a, b) {
  const ra = cells[a + "\u0000" + column].run, rb = cells[b + "\u0000" + column].run;
  const sb = Object.fromEntries(samplesOf(rb).map(r => [r.key, r]));
  const rows = [];
  for (const x of samplesOf(ra)) {
    const y = sb[x.key]; if (!y) continue;  // the questions or instructions both answered
    const row = {key: x.key};
    for (const k of SHOWN) if (x[k] !== undefined) row[k] = x[k];
    for (const k of ["pred", "correct", "gold", "output", "preference", "score"]) {
      if (x[k] !== undefined) row["A " + k] = x[k];
      if (y[k] !== undefined) row["B " + k] = y[k];
    }
    rows.push(row);
  }
  const d = document.getElementById("drill"); d.textContent = "";
  d.append(el("h2", "Side by side"), el("p", "A: " + a + " · B: " + b + " · " + (byKey[column] ? byKey[column].group + ": " + byKey[column].label : "") + " · " + rows.length + " in common"));
  const box = el("input"); box.placeholder = "search"; box.id = "sample-filter"; d.append(box);
  d.append(sampleTable(rows, box));
  d.scrollIntoView();
}
function renderComparisons() {
  const s = document.getElementById("compare"); s.textContent = "";
  for (const [col, pairs] of Object.entries(B.comparisons)) {
    const c = byKey[col]; if (!c) continue;
    s.append(el("h3", c.group + ": " + c.label + " — paired (questions both answered)"));
    const t = el("table"), h = el("tr");
    for (const x of ["A", "B", "n", "A right, B wrong", "A wrong, B right", "A − B (points)", "95% interval (cluster bootstrap)", "McNemar p"]) h.append(el("th", x));
    t.append(h);
    for (const p of pairs) {
      const tr = el("tr"); tr.className = "link"; tr.title = "side by side";
      tr.addEventListener("click", () => sideBySide(col, p.a, p.b));
      tr.append(el("td", p.a, "model"), el("td", p.b, "model"), el("td", String(p.n)), el("td", String(p.a_only)), el("td", String(p.b_only)),
                el("td", (p.difference * 100).toFixed(2)), el("td", "[" + (p.low * 100).toFixed(2) + ", " + (p.high * 100).toFixed(2) + "]"),
                el("td", p.p_value.toPrecision(3)));
      t.append(tr);
    }
    s.append(t);
  }
}
function renderPlots() {
  if (typeof Plotly === "undefined") return;
  for (const f of B.figures) {
    const div = el("div", undefined, "plot"); div.id = f.id; document.getElementById("plots").append(div);
    Plotly.newPlot(div, f.data, f.layout, {displaylogo: false, responsive: true});
  }
}
document.getElementById("filter").addEventListener("input", renderTable);
renderTable(); renderComparisons(); renderPlots();
document.getElementById("source").textContent = JSON.parse(document.getElementById("board-source").textContent);
