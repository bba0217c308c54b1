"use strict";
// lmboard board: everything is drawn from the JSON blocks of this file with textContent
// (never innerHTML), so model text shows as text and runs nothing. Views: an overview of
// each benchmark's headline column, one view per family, plots, paired comparisons; a
// clicked value opens its run in a panel beside the table.
const B = JSON.parse(document.getElementById("board-data").textContent);
const byKey = Object.fromEntries(B.columns.map(c => [c.key, c]));
const cells = {};
for (const c of B.cells) cells[c.model + "\u0000" + c.column] = c;
const cellOf = (m, col) => cells[m + "\u0000" + col];
const FAMILY_NAMES = {exams: "Exams", classification: "Classification", shopbench: "ShopBench", tasks: "Task files", judged: "Judged",
                      speed: "Speed", imported: "Imported"};
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = text; if (cls) e.className = cls; return e; }
function $(id) { return document.getElementById(id); }
const digits = c => c.unit === "s" ? 2 : c.unit === "MB" ? 0 : 1;
function fmt(col, v) { return v === null || v === undefined || Number.isNaN(v) ? null : v.toFixed(digits(col)); }
const plain = s => String(s).replace(/</g, "\u2039").replace(/>/g, "\u203a");  // plotly renders some tags in labels
// numbers as numbers, keys such as "anatomy/12" by their digits, missing last
function compare(x, y) {
  const ex = x === null || x === undefined || x === "", ey = y === null || y === undefined || y === "";
  if (ex || ey) return ex && ey ? 0 : ex ? 1 : -1;
  if (typeof x === "boolean" || typeof y === "boolean") return Number(x) - Number(y);
  const nx = Number(x), ny = Number(y);
  if (!Number.isNaN(nx) && !Number.isNaN(ny)) return nx - ny;
  return String(x).localeCompare(String(y), undefined, {numeric: true});
}

// ---- views
let view = "overview";
const families = [...new Set(B.columns.map(c => c.family))];
function tabs() {
  const nav = $("tabs"); nav.textContent = "";
  const names = [["overview", "Overview"], ...families.map(f => [f, FAMILY_NAMES[f] || f]), ["plots", "Plots"], ["paired", "Paired comparisons"]];
  for (const [key, name] of names) {
    const b = el("button", name, key === view ? "tab on" : "tab"); b.dataset.view = key;
    b.addEventListener("click", () => { view = key; show(); }); nav.append(b);
  }
}
function needPlotly() {
  if (typeof Plotly !== "undefined") return true;
  const src = $("plotly-js"); if (!src) return false;
  const s = document.createElement("script"); s.textContent = src.textContent; document.head.append(s);  // runs now
  return typeof Plotly !== "undefined";
}
function show() {
  tabs();
  const tableView = view !== "plots" && view !== "paired";
  $("table-view").hidden = !tableView; $("plots-view").hidden = view !== "plots"; $("compare-view").hidden = view !== "paired";
  if (tableView) renderTable(); else if (view === "plots") renderPlots(); else renderComparisons();
}

// ---- the table
let sortCol = null, sortDir = -1;
const collapsed = new Set();
for (const g of new Set(B.columns.map(c => c.group))) if (B.columns.filter(c => c.group === g).length > 4) collapsed.add(g);
function shownColumns() {
  if (view === "overview") return B.columns.filter(c => c.main);
  return B.columns.filter(c => c.family === view && (c.main || !collapsed.has(c.group)));
}
function renderTable() {
  const q = $("filter").value.toLowerCase(), cols = shownColumns(), table = $("board");
  table.textContent = "";
  const thead = el("thead"), groups = el("tr"), head = el("tr");
  groups.append(el("th", "", "group model"));
  let last = null, span = null;
  for (const c of cols) {
    if (c.group !== last) {
      span = el("th", null, "group"); span.colSpan = 1; span.title = c.group;
      span.append(el("span", c.group));
      const all = B.columns.filter(x => x.group === c.group).length;
      if (view !== "overview" && all > 1) {
        const t = el("button", collapsed.has(c.group) ? "+" + (all - 1) : "\u2212", "fold");
        t.title = collapsed.has(c.group) ? "show the group's other columns" : "show the headline column only";
        const g = c.group;
        t.addEventListener("click", e => { e.stopPropagation(); if (collapsed.has(g)) collapsed.delete(g); else collapsed.add(g); renderTable(); });
        span.append(t);
      }
      groups.append(span); last = c.group;
    } else span.colSpan += 1;
  }
  const mh = el("th", "model", "model"); mh.dataset.key = "__model"; head.append(mh);
  for (const c of cols) { const th = el("th", c.label + " [" + c.unit + "]"); th.dataset.key = c.key; th.title = c.group + ": " + c.label; head.append(th); }
  for (const th of head.children) {
    th.classList.add("sort");
    if (th.dataset.key === sortCol) th.classList.add(sortDir > 0 ? "sorted-asc" : "sorted-desc");
    th.addEventListener("click", () => { sortDir = sortCol === th.dataset.key ? -sortDir : -1; sortCol = th.dataset.key; renderTable(); });
  }
  thead.append(groups, head); table.append(thead);
  let models = B.models.filter(m => (m.key + " " + (m.adapter || "")).toLowerCase().includes(q));
  models = models.filter(m => cols.some(c => cellOf(m.key, c.key)));
  if (sortCol === "__model") models.sort((a, b) => sortDir * a.key.localeCompare(b.key));
  else if (sortCol) models.sort((a, b) => {
    const x = cellOf(a.key, sortCol), y = cellOf(b.key, sortCol);
    const vx = x ? x.value : null, vy = y ? y.value : null;
    if (vx === null || vy === null) return compare(vx, vy);
    return sortDir * (vx - vy);
  });
  const tbody = el("tbody");
  for (const m of models) {
    const tr = el("tr"); tr.dataset.model = m.key;
    const name = el("td", m.key + (m.imported ? " (imported)" : ""), "model" + (m.imported ? " imported" : ""));
    name.title = m.key; tr.append(name);
    for (const c of cols) {
      const cell = cellOf(m.key, c.key), v = cell ? fmt(c, cell.value) : null;
      if (v === null) { tr.append(el("td", "\u2014", "missing")); continue; }
      const td = el("td"), a = el("a", v); td.append(a);
      if (cell.low !== null && cell.low !== undefined) td.append(el("span", " [" + fmt(c, cell.low) + ", " + fmt(c, cell.high) + "]", "ci"));
      td.title = (cell.interval ? "95% interval: " + cell.interval : "") + (cell.n ? (cell.interval ? "; " : "") + "n = " + cell.n : "");
      if (cell.run) a.addEventListener("click", () => openRun(cell.run, m.key, c.key));
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.append(tbody);
  legend(cols, models);
}
function legend(cols, models) {
  const box = $("legend"); box.textContent = "";
  const units = [...new Set(cols.map(c => c.unit))].map(u => u + " = " + (B.units[u] || u)).join("; ");
  box.append(el("p", "Units: " + units + ". Click a header to sort (numbers as numbers), a value to open its run, \u2212/+ over a group to fold it."));
  const how = new Map();
  for (const c of cols) for (const m of models) { const x = cellOf(m.key, c.key); if (x && x.interval) how.set(x.interval, (how.get(x.interval) || 0) + 1); }
  if (how.size) {
    box.append(el("p", "Intervals are 95%. An exam's accuracy gets a cluster bootstrap over its subjects (2,000 resamples) only where a run has at least 10 subjects; with fewer, resampling subjects says nothing, and the interval is Wilson's on the questions as independent. Hovering a value shows its own. In this view:"));
    const ul = el("ul");
    for (const [k, n] of [...how.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8)) ul.append(el("li", k + " \u2014 " + n + (n === 1 ? " value" : " values")));
    box.append(ul);
  }
  if (cols.some(c => c.label.startsWith("LC win rate (lmboard"))) box.append(el("p", "LC win rate (lmboard fit): a length-controlled win rate that lmboard fits offline over the generators on this board; alpaca_eval's published value uses its own fitted instruction difficulties and differs by a few points."));
}

// ---- the drill-down panel
function samplesOf(run) {
  const node = $("run-" + run);
  if (!node) return [];
  const {fields, rows, prefixes} = JSON.parse(node.textContent);  // parsed on demand: the page opens fast
  return rows.map(r => {
    const o = {}; fields.forEach((f, i) => { if (r[i] !== null) o[f] = r[i]; });
    if (o.prompt_end !== undefined) { Object.defineProperty(o, "prompt", {value: (prefixes[o.prompt_prefix] || "") + o.prompt_end}); delete o.prompt_end; delete o.prompt_prefix; }
    return o;
  });
}
function show_value(v) { return v === undefined || v === null ? "\u2014" : typeof v === "object" ? JSON.stringify(v) : String(v); }
function settingsList(info, col) {
  const dl = el("dl");
  const add = (k, v) => { if (v === undefined || v === null || v === "") return; dl.append(el("dt", k), el("dd", v)); };
  add("run", info.id); add("kind", info.kind);
  if (info.created) add("created", new Date(info.created * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC");
  if (info.spec) add("model", Object.entries(info.spec).filter(([, v]) => v !== null && v !== undefined && v !== false).map(([k, v]) => k + "=" + show_value(v)).join(", "));
  add("dtype", info.dtype); add("runtime", info.runtime); add("prompt template hash", info.template_hash);
  if (info.versions) add("versions", Object.entries(info.versions).map(([k, v]) => k + " " + v).join(", "));
  for (const [k, v] of Object.entries((col && col.settings) || {})) {
    if (v === null || v === undefined) continue;
    let text = Array.isArray(v) ? (v.length > 8 ? v.length + ": " + v.slice(0, 8).join(", ") + ", \u2026" : v.join(", "))
      : typeof v === "object" ? Object.entries(v).map(([a, b]) => a + "=" + show_value(b)).join(", ") : show_value(v);
    if (text.length > 300) text = text.slice(0, 300) + "\u2026";
    add(k, text);
  }
  return dl;
}
const RIGHT = r => r.correct !== undefined ? !!r.correct : r.pred !== undefined && r.gold !== undefined ? r.pred === r.gold : undefined;
const WINNER = p => p === null || p === undefined ? "invalid" : p > 1.5 ? "output" : p < 1.5 ? "reference" : "tie";
function columnsFor(kind, rows) {
  const has = k => rows.some(r => r[k] !== undefined);
  if (kind === "exam") return ["key", "subject", "question", "gold", "pred", "correct"].filter(k => k === "correct" || has(k));
  if (kind === "classify") return ["key", "text", "gold", "pred", "correct", "answer"].filter(k => k === "correct" || has(k));
  if (kind === "judge") return ["key", "instruction", "output", "reference", "preference", "winner", "score"].filter(k => k === "winner" ? has("preference") : has(k));
  return [...new Set(rows.flatMap(r => Object.keys(r)))].slice(0, 12);
}
function detailOf(r) {
  const box = el("div", null, "detail");
  if (r.prompt !== undefined) {
    const b = el("button", "the prompt as the model read it", "prompt-button");
    b.addEventListener("click", e => { e.stopPropagation(); b.replaceWith(el("pre", r.prompt, "prompt")); });
    box.append(b);
  }
  if (r.question !== undefined) box.append(el("pre", r.question));
  if (r.choices) for (const [k, v] of Object.entries(r.choices)) box.append(el("pre", k + ". " + v));
  if (r.probs) box.append(el("p", "probabilities: " + r.probs.map(p => p.toFixed(3)).join(", ")));
  for (const [k, v] of Object.entries(r)) if (!["question", "choices", "probs"].includes(k)) box.append(el("p", k + ": " + show_value(v)));
  return box;
}
function sampleTable(rows, kind, host) {
  const cols = columnsFor(kind, rows);
  for (const r of rows) { r.__right = RIGHT(r); if (kind === "judge") r.__winner = WINNER(r.preference); }
  const value = (r, k) => k === "correct" ? r.__right : k === "winner" ? r.__winner : r[k];
  const bar = el("div", null, "controls");
  const box = el("input"); box.placeholder = "search samples"; box.id = "sample-filter"; bar.append(box);
  let wrong = null, subject = null;
  if (rows.some(r => r.__right !== undefined)) { const l = el("label"); wrong = el("input"); wrong.type = "checkbox"; wrong.id = "wrong-only"; l.append(wrong, " wrong answers only"); bar.append(l); }
  const subjects = [...new Set(rows.map(r => r.subject).filter(x => x !== undefined))].sort();
  if (subjects.length > 1) { subject = el("select"); subject.id = "subject-filter"; subject.append(el("option", "every subject")); subject.firstChild.value = "";
    for (const s of subjects) { const o = el("option", s); o.value = s; subject.append(o); } bar.append(subject); }
  const count = el("span", "", "muted"); bar.append(count);
  const t = el("table"); t.id = "samples";
  let sortKey = null, dir = 1, limit = 200;
  const headRow = el("tr");
  for (const k of cols) {
    const th = el("th", k, "sort"); th.dataset.key = k;
    th.addEventListener("click", () => { dir = sortKey === k ? -dir : 1; sortKey = k; limit = 200; draw(); });
    headRow.append(th);
  }
  t.append(headRow);
  const more = el("button", "show more"); more.id = "more";
  more.addEventListener("click", () => { limit += 500; draw(); });
  function draw() {
    while (t.rows.length > 1) t.deleteRow(1);
    for (const th of headRow.children) th.classList.toggle("sorted-asc", th.dataset.key === sortKey && dir > 0), th.classList.toggle("sorted-desc", th.dataset.key === sortKey && dir < 0);
    const q = box.value.toLowerCase(), w = wrong && wrong.checked, s = subject ? subject.value : "";
    let shown = rows.filter(r => (!w || r.__right === false) && (!s || r.subject === s) &&
      (!q || cols.some(k => String(value(r, k) ?? "").toLowerCase().includes(q)) || (q && r.choices && JSON.stringify(r.choices).toLowerCase().includes(q))));
    if (sortKey) shown = shown.slice().sort((a, b) => { const v = compare(value(a, sortKey), value(b, sortKey)); return value(a, sortKey) == null || value(b, sortKey) == null ? v : dir * v; });
    count.textContent = shown.length + " of " + rows.length + " samples" + (shown.length > limit ? ", the first " + limit + " shown" : "");
    for (const r of shown.slice(0, limit)) {
      const tr = el("tr"); tr.className = "sample";
      for (const k of cols) {
        const v = value(r, k), long = typeof v === "string" && v.length > 24;
        tr.append(el("td", v === true ? "\u2713" : v === false ? "\u2717" : show_value(v), (long ? "text" : "short") + (v === false ? " wrong" : "")));
      }
      tr.title = "click: the question as asked, every field";
      tr.addEventListener("click", () => {
        if (tr.nextSibling && tr.nextSibling.className === "detail-row") { tr.nextSibling.remove(); return; }
        const d = el("tr", null, "detail-row"), td = el("td"); td.colSpan = cols.length; td.append(detailOf(r)); d.append(td); tr.after(d);
      });
      t.append(tr);
    }
    more.hidden = shown.length <= limit;
  }
  box.addEventListener("input", () => { limit = 200; draw(); });
  if (wrong) wrong.addEventListener("change", () => { limit = 200; draw(); });
  if (subject) subject.addEventListener("change", () => { limit = 200; draw(); });
  host.append(bar, t, more); draw();
}
function panel(title, sub) {
  const d = $("drill"); d.textContent = ""; d.hidden = false; document.body.classList.add("drilled");
  const close = el("button", "\u00d7", "close"); close.title = "close (Esc)"; close.addEventListener("click", closePanel);
  d.append(close, el("h2", title), el("p", sub, "muted"));
  return d;
}
function closePanel() { $("drill").hidden = true; document.body.classList.remove("drilled"); }
document.addEventListener("keydown", e => { if (e.key === "Escape") closePanel(); });
function openRun(run, model, column) {
  const info = B.runs[run] || {}, col = byKey[column] || {};
  const d = panel(model, (col.group || "") + " \u00b7 " + (col.label || ""));
  d.append(el("h3", "Settings"), settingsList(info, col));
  const others = B.models.filter(m => m.key !== model && cellOf(m.key, column) && cellOf(m.key, column).run);
  if (others.length) {
    const pick = el("select"); pick.id = "compare-with"; pick.append(el("option", "side by side with\u2026")); pick.firstChild.value = "";
    for (const m of others) { const o = el("option", m.key); o.value = m.key; pick.append(o); }
    pick.addEventListener("change", () => { if (pick.value) sideBySide(column, model, pick.value); });
    d.append(pick);
  }
  d.append(el("h3", "Samples"));
  sampleTable(samplesOf(run), info.kind, d);
}
function sideBySide(column, a, b) {
  const ra = cellOf(a, column).run, rb = cellOf(b, column).run, kind = (B.runs[ra] || {}).kind;
  const sb = Object.fromEntries(samplesOf(rb).map(r => [r.key, r]));
  const rows = [];
  for (const x of samplesOf(ra)) {
    const y = sb[x.key]; if (!y) continue;  // the questions or instructions both answered
    const row = {key: x.key};
    for (const k of ["subject", "question", "text", "instruction", "reference", "gold"]) if (x[k] !== undefined) row[k] = x[k];
    for (const k of ["pred", "output", "preference", "score"]) { if (x[k] !== undefined) row["A " + k] = x[k]; if (y[k] !== undefined) row["B " + k] = y[k]; }
    if (RIGHT(x) !== undefined) { row["A correct"] = RIGHT(x); row["B correct"] = RIGHT(y); }
    rows.push(row);
  }
  const col = byKey[column] || {};
  const d = panel("Side by side", "A: " + a + " \u00b7 B: " + b + " \u00b7 " + col.group + ": " + col.label + " \u00b7 " + rows.length + " in common");
  sampleTable(rows, "pair:" + kind, d);
}

// ---- paired comparisons
function pairColumns() { return Object.keys(B.comparisons).filter(k => byKey[k]).sort((x, y) => B.comparisons[y].length - B.comparisons[x].length); }
function selector(id, options, current, onChange) {
  const s = el("select"); s.id = id;
  for (const [v, name] of options) { const o = el("option", name); o.value = v; if (v === current) o.selected = true; s.append(o); }
  s.addEventListener("change", () => onChange(s.value));
  return s;
}
let pairCol = null;
function renderComparisons() {
  const s = $("compare"); s.textContent = "";
  const keys = pairColumns();
  if (!keys.length) {
    s.append(el("p", "No paired comparison on this board: one needs two models scored on the same questions of one benchmark with the same settings (run lmboard eval with the same --task, --data, --subjects, --limit and --shots for a second model).", "empty"));
    return;
  }
  if (!keys.includes(pairCol)) pairCol = keys[0];
  const c = byKey[pairCol], pairs = B.comparisons[pairCol];
  s.append(el("label", "Benchmark: "), selector("pair-column", keys.map(k => [k, byKey[k].group + ": " + byKey[k].label + " (" + B.comparisons[k].length + (B.comparisons[k].length === 1 ? " pair)" : " pairs)")]), pairCol, v => { pairCol = v; renderComparisons(); }));
  s.append(el("p", "Each pair on the questions both answered: the difference in accuracy (A \u2212 B, percentage points) with its 95% interval, and McNemar's exact test on the questions one got right and the other wrong. Click a row to see them side by side.", "muted"));
  const div = el("div", null, "plot wide"); div.id = "plot-pairs"; s.append(div);
  const t = el("table"), h = el("tr"); t.id = "pairs";
  for (const x of ["A", "B", "shared questions", "A right, B wrong", "A wrong, B right", "A \u2212 B [points]", "95% interval", "interval", "McNemar p"]) h.append(el("th", x));
  t.append(h);
  for (const p of pairs.slice().sort((x, y) => x.p_value - y.p_value)) {
    const tr = el("tr"); tr.className = "link"; tr.title = "side by side";
    tr.addEventListener("click", () => sideBySide(pairCol, p.a, p.b));
    tr.append(el("td", p.a, "model"), el("td", p.b, "model"), el("td", String(p.n)), el("td", String(p.a_only)), el("td", String(p.b_only)),
              el("td", p.difference.toFixed(1)), el("td", "[" + p.low.toFixed(1) + ", " + p.high.toFixed(1) + "]"), el("td", p.interval || "", "muted"),
              el("td", p.p_value < 0.001 ? p.p_value.toExponential(1) : p.p_value.toFixed(3), p.p_value < 0.05 ? "signif" : ""));
    t.append(tr);
  }
  const wrap = el("div", null, "scroll"); wrap.append(t); s.append(wrap);
  if (!needPlotly()) return;
  const names = [...new Set(pairs.flatMap(p => [p.a, p.b]))].sort((x, y) => compare((cellOf(y, pairCol) || {}).value, (cellOf(x, pairCol) || {}).value));
  const z = names.map(() => names.map(() => null)), text = names.map(() => names.map(() => ""));
  for (const p of pairs) {
    const i = names.indexOf(p.a), j = names.indexOf(p.b);
    z[i][j] = p.difference; z[j][i] = -p.difference;
    text[i][j] = (p.difference >= 0 ? "+" : "") + p.difference.toFixed(1) + "<br>p=" + p.p_value.toPrecision(2);
    text[j][i] = (p.difference <= 0 ? "+" : "") + (-p.difference).toFixed(1) + "<br>p=" + p.p_value.toPrecision(2);
  }
  const lim = Math.max(1, ...pairs.map(p => Math.abs(p.difference)));
  Plotly.newPlot(div, [{type: "heatmap", z, x: names.map(plain), y: names.map(plain), text, texttemplate: "%{text}", colorscale: "RdBu", zmin: -lim, zmax: lim,
    hovertemplate: "%{y} \u2212 %{x}: %{z:.1f} points<extra></extra>", colorbar: {title: {text: "row \u2212 column [points]"}}}],
    {title: {text: plain(c.group + ": " + c.label + " \u2014 row minus column")}, margin: {l: 220, b: 160}, yaxis: {autorange: "reversed"}},
    {displaylogo: false, responsive: true});
}

// ---- plots
const accCols = () => B.columns.filter(c => c.main && c.unit === "%");
const modelsWith = key => B.models.filter(m => { const x = cellOf(m.key, key); return x && x.value !== null; }).map(m => m.key);
let plotAcc = null, plotSpeed = null;
function renderPlots() {
  const host = $("plots"); host.textContent = "";
  if (!needPlotly()) { note(host, "plotly.js did not load"); return; }
  const accs = accCols().sort((a, b) => modelsWith(b.key).length - modelsWith(a.key).length);
  const speeds = B.columns.filter(c => c.unit === "tok/s").sort((a, b) => modelsWith(b.key).length - modelsWith(a.key).length);
  const bar = el("div", null, "controls");
  if (accs.length) {
    if (!accs.some(c => c.key === plotAcc)) plotAcc = accs[0].key;
    bar.append(el("label", "Benchmark: "), selector("plot-benchmark", accs.map(c => [c.key, c.group + ": " + c.label + " (" + modelsWith(c.key).length + " models)"]), plotAcc, v => { plotAcc = v; renderPlots(); }));
  }
  if (speeds.length > 1) {
    if (!speeds.some(c => c.key === plotSpeed)) plotSpeed = speeds[0].key;
    bar.append(el("label", " Speed: "), selector("plot-speed-column", speeds.map(c => [c.key, c.group + ": " + c.label]), plotSpeed, v => { plotSpeed = v; renderPlots(); }));
  } else if (speeds.length) plotSpeed = speeds[0].key;
  host.append(bar);
  const acc = byKey[plotAcc], speed = byKey[plotSpeed];
  const mem = speed ? B.columns.find(c => c.group === speed.group && c.unit === "MB") : null;
  if (acc && speed) scatter(host, "plot-speed", acc, speed, true); else note(host, "Accuracy against speed needs a benchmark and a speed run (lmboard speed MODEL).");
  if (acc && mem) scatter(host, "plot-memory", acc, mem, false);
  if (acc) categories(host, acc);
  for (const c of B.columns.filter(c => c.label === "win rate")) winRates(host, c);
}
function note(host, text) { host.append(el("p", text, "empty")); }
function pad(vals, floor, share) {
  const lo = Math.min(...vals), hi = Math.max(...vals), m = (hi - lo) * (share || 0.12) || Math.abs(hi) * 0.1 || 1;
  return [floor !== undefined ? Math.max(floor, lo - m) : lo - m, hi + m];
}
function pareto(pts, xHigher) {
  const s = pts.slice().sort((a, b) => xHigher ? b.x - a.x || b.y - a.y : a.x - b.x || b.y - a.y);
  const front = []; let best = -Infinity;
  for (const p of s) if (p.y > best) { front.push(p); best = p.y; }
  return front;
}
function scatter(host, id, acc, other, xHigher) {
  const pts = [];
  for (const m of B.models) {
    const a = cellOf(m.key, acc.key), b = cellOf(m.key, other.key);
    if (a && b && a.value !== null && b.value !== null) pts.push({x: b.value, y: a.value, name: m.key});
  }
  const title = acc.group + ": " + acc.label + " against " + other.label;
  if (pts.length < 2) { note(host, title + ": " + (pts.length ? "one model has" : "no model has") + " both; a plot needs two."); return; }
  const div = el("div", null, "plot"); div.id = id; host.append(div);
  const front = pareto(pts, xHigher);
  // one trace per model: its name in the legend, not written over the plot where points crowd
  const models = pts.map(p => ({type: "scatter", mode: "markers", x: [p.x], y: [p.y], name: plain(p.name), marker: {size: 11},
    hovertemplate: plain(p.name) + "<br>%{y:.1f}% at %{x:.1f} " + other.unit + "<extra></extra>"}));
  Plotly.newPlot(div, [
    ...models,
    {type: "scatter", mode: "lines+markers", x: front.map(p => p.x), y: front.map(p => p.y), name: "Pareto front (no other model better on both)",
     line: {dash: "dot"}, marker: {symbol: "circle-open", size: 16}, hoverinfo: "skip"}],
    {title: {text: plain(title)}, xaxis: {title: {text: plain(other.label + " [" + other.unit + "]" + (xHigher ? ", higher is better" : ", lower is better"))}, range: pad(pts.map(p => p.x), 0, 0.22)},
     yaxis: {title: {text: plain(acc.label + " [%]")}, range: pad(pts.map(p => p.y), 0)}, showlegend: true, legend: {orientation: "h", y: -0.32, font: {size: 11}}, margin: {b: 120}},
    {displaylogo: false, responsive: true});
}
function categories(host, acc) {
  const cats = B.columns.filter(c => c.group === acc.group && !c.main && c.unit === "%" && c.family === "exams");
  if (!cats.length) return;
  const models = B.models.map(m => m.key).filter(m => cats.some(c => cellOf(m, c.key)));
  const div = el("div", null, "plot"); div.id = "plot-categories"; host.append(div);
  const z = models.map(m => cats.map(c => { const x = cellOf(m, c.key); return x ? x.value : null; }));
  Plotly.newPlot(div, [{type: "heatmap", z, x: cats.map(c => plain(c.label)), y: models.map(plain), colorscale: "Viridis", zmin: 0, zmax: 100,
    text: z.map(r => r.map(v => v === null ? "" : v.toFixed(0))), texttemplate: "%{text}", colorbar: {title: {text: "%"}},
    hovertemplate: "%{y}<br>%{x}: %{z:.1f}%<extra></extra>"}],
    {title: {text: plain(acc.group + ": accuracy by category [%]")}, margin: {l: 220, b: 120}}, {displaylogo: false, responsive: true});
}
function winRates(host, c) {
  const ms = B.models.map(m => [m.key, cellOf(m.key, c.key)]).filter(([, x]) => x && x.value !== null).sort((a, b) => a[1].value - b[1].value);
  if (ms.length < 2) { note(host, c.group + ": win rate of " + (ms.length ? "one model" : "no model") + "; a comparison needs two."); return; }
  const div = el("div", null, "plot"); div.id = "plot-win-" + c.key.replace(/[^a-z0-9]/gi, "_"); host.append(div);
  Plotly.newPlot(div, [{type: "bar", orientation: "h", y: ms.map(([m]) => plain(m)), x: ms.map(([, x]) => x.value),
    error_x: {type: "data", symmetric: false, array: ms.map(([, x]) => (x.high ?? x.value) - x.value), arrayminus: ms.map(([, x]) => x.value - (x.low ?? x.value))}}],
    {title: {text: plain(c.group)}, xaxis: {title: {text: "win rate [%] with its 95% interval"}, range: [0, 100]}, margin: {l: 220}},
    {displaylogo: false, responsive: true});
}

$("filter").addEventListener("input", renderTable);
$("source").textContent = JSON.parse($("board-source").textContent);
if (!B.columns.some(c => c.main)) view = families[0] || "overview";
show();
