"""Reading the store into a board: how each kind of finished run puts its cells on it
(the structures are in report/board_data.py)."""

from __future__ import annotations

from pathlib import Path

from lmboard.report.board_data import (
    Board,
    Cell,
    Column,
    ModelRow,
    accuracy_cell,
    model_row,
    percent,
    run_info,
    settings_key,
)
from lmboard.store import Store


def _group(board: Board, base: str, settings: dict, detail: str = "") -> tuple[str, str]:
    """(column key prefix, group label): runs that differ in any setting get their own
    columns; a name already taken by other settings gets the settings that tell them apart
    (``detail``), and the settings' hash if even that is taken."""
    h = settings_key(settings)

    def taken(label: str) -> bool:
        return any(c.group == label and c.settings != settings for c in board.columns.values())

    label = base
    if taken(label) and detail:
        label = f"{base} ({detail})"
    if taken(label):
        label = f"{label} [{h}]"
    return h, label


TITLES = {"mmlu": "MMLU", "cmmlu": "CMMLU", "ceval": "C-Eval"}


def exam_title(task: str | None) -> str:
    return TITLES.get(str(task), str(task))


def add_exam(board: Board, store: Store, run: dict, _: dict) -> None:
    cfg, summary = run["config"], run["summary"] or {}
    exam = cfg.get("exam", {})
    settings = {**{k: exam.get(k) for k in ("task", "data", "subjects", "limit", "shots", "letter_token", "chat",
                                            "max_length")}, "template": cfg.get("template")}
    gen = cfg.get("by") == "generate"
    if gen:
        settings.update(by="generate", max_new_tokens=cfg.get("max_new_tokens"))
    base = f"{exam_title(exam.get('task'))} {exam.get('shots')}-shot" + (
        " bare letter" if exam.get("letter_token") == "bare" and not gen else "") + (
        " by generation" if gen else " chat" if exam.get("chat") else "")
    subjects = exam.get("subjects") or []
    detail = ", ".join(x for x in (f"{len(subjects)} subjects" if subjects else "",
                                   f"{exam['limit']} a subject" if exam.get("limit") else "") if x)
    h, group = _group(board, base, settings, detail)
    model = model_row(run["provenance"] or {}, run["model"])
    correct, clusters = {}, {}
    for k, s in store.samples(run["id"]):
        correct[k], clusters[k] = bool(s["correct"]), s.get("subject", "")
    col = Column(f"exam:{h}", group, "accuracy", settings=settings, family="exams", main=True)
    board.put(model, col, accuracy_cell(board, col, model, run["id"], correct, clusters))
    for cat, acc in (summary.get("categories") or {}).items():
        board.put(model, Column(f"exam:{h}:cat:{cat}", group, cat, settings=settings, family="exams"),
                  Cell(percent(acc), run=run["id"]))


def dataset_name(data: str) -> str:
    """A classification file's benchmark name: ``chnsenticorp/ChnSentiCorp_htl_all.csv`` is
    ChnSentiCorp (the file name's part that its folder is named after), else the file's stem."""
    path = Path(data)
    folder, stem = path.parent.name.lower(), path.stem
    if folder and stem.lower().startswith(folder) and len(folder) >= 3:
        return stem[:len(folder)]
    return stem


def add_classify(board: Board, store: Store, run: dict, _: dict) -> None:
    cfg, summary = run["config"], run["summary"] or {}
    st = cfg.get("settings", {})
    settings = {"data": cfg.get("data"), "test": cfg.get("test"), **st}
    by = " by generation" if st.get("by") == "generate" else ""
    base = f"{dataset_name(str(cfg.get('data')))} {st.get('shots')}-shot{by}"
    detail = ", ".join(f"{k} {st[k]}" for k in ("normalize", "template") if st.get(k) not in (None, "none"))
    h, group = _group(board, base, settings, detail)
    model = model_row(run["provenance"] or {}, run["model"])
    correct = {k: s["pred"] == s["gold"] for k, s in store.samples(run["id"])}
    col = Column(f"cls:{h}", group, "accuracy", settings=settings, family="classification", main=True)
    board.put(model, col, accuracy_cell(board, col, model, run["id"], correct, {}))
    board.put(model, Column(f"cls:{h}:f1", group, "macro-F1", settings=settings, family="classification"),
              Cell(percent(summary.get("macro_f1")), run=run["id"], n=summary.get("n")))


def add_shopbench(board: Board, store: Store, run: dict, _: dict) -> None:
    model = model_row(run["provenance"] or {}, run["model"])
    for parse, res in (run["summary"] or {}).items():
        if isinstance(res, dict) and "overall" in res:
            settings = {"parse": parse, "key": run["config"]}
            h, group = _group(board, "ShopBench", {"parse": parse})
            board.put(model, Column(f"shop:{parse}", group, f"overall ({parse} parse)", settings=settings,
                                    family="shopbench", main=parse == "official"),
                      Cell(percent(res["overall"]), run=run["id"], n=res.get("n")))


def add_judge(board: Board, store: Store, run: dict, generated: dict[str, ModelRow]) -> None:
    cfg, s = run["config"], run["summary"] or {}
    model = generated.get(run["model"]) or ModelRow(run["model"], run["model"])
    settings = {k: cfg.get(k) for k in ("judge", "reference", "mode", "lang", "seed", "both_orders", "files")}
    judge = s.get("judge") or cfg.get("judge")
    h, group = _group(board, f"judged vs {s.get('reference')} · judge {judge}", settings)
    if cfg.get("mode") == "single":
        board.put(model, Column(f"judge:{h}", group, "mean score", "score", settings=settings, family="judged",
                                main=True),
                  Cell(s.get("mean"), s.get("ci_low"), s.get("ci_high"), run["id"], s.get("n"),
                       "bootstrap over instructions"))
        return
    board.put(model, Column(f"judge:{h}", group, "win rate", settings=settings, family="judged", main=True),
              Cell(s.get("win_rate"), s.get("win_rate_ci_low"), s.get("win_rate_ci_high"), run["id"], s.get("n_total"),
                   "bootstrap over instructions"))
    lc, se = s.get("length_controlled_winrate"), s.get("lc_standard_error")
    ok = lc is not None and lc == lc
    band = ok and se is not None and se == se
    # fitted offline on this board's generators (judge/stats.py), not alpaca_eval's published fit
    board.put(model, Column(f"judge:{h}:lc", group, "LC win rate (lmboard fit)", settings=settings, family="judged"),
              Cell(lc if ok else None, lc - 1.96 * se if band else None, lc + 1.96 * se if band else None, run["id"],
                   s.get("n_total"), "±1.96 standard errors" if band else None))


def add_speed(board: Board, store: Store, run: dict, _: dict) -> None:
    rows = (run["summary"] or {}).get("results") or []
    hw = (run["summary"] or {}).get("hardware") or {}
    if not rows or "decode_tokens_per_s" not in rows[0]:
        return
    st = (run["config"] or {}).get("settings", {})
    settings = {k: st.get(k) for k in ("prompt_tokens", "new_tokens", "scheduler")}
    settings["hardware"] = hw.get("gpu") or hw.get("processor") or hw.get("machine")
    where = f" on {settings['hardware']}" if settings["hardware"] else ""
    h, group = _group(board, f"speed {settings['prompt_tokens']}+{settings['new_tokens']} tokens{where}", settings)
    model = model_row(run["provenance"] or {}, run["model"])
    one = next((r for r in rows if r["batch_size"] == 1), None)
    big = max(rows, key=lambda r: r["batch_size"])
    rid = run["id"]

    def col(key: str, label: str, unit: str, higher: bool = True, main: bool = False) -> Column:
        return Column(f"speed:{h}:{key}", group, label, unit, higher, settings, "speed", main)

    if one:
        board.put(model, col("b1", "decode tok/s (batch 1)", "tok/s", main=True), Cell(one["decode_tokens_per_s"], run=rid))
        board.put(model, col("ttft", "TTFT (batch 1)", "s", False), Cell(one["ttft_s"]["median"], run=rid))
    if big is not one:
        board.put(model, col("bmax", f"decode tok/s (batch {big['batch_size']})", "tok/s", main=one is None),
                  Cell(big["decode_tokens_per_s"], run=rid, n=big["batch_size"]))
    board.put(model, col("mem", "peak memory", "MB", False), Cell(max(r.get("peak_rss_mb") or 0 for r in rows) or None, run=rid))


def add_harness(board: Board, store: Store, run: dict, _: dict) -> None:
    """A task YAML's run: a column per metric and filter (shares in percent, with Wilson's
    interval for a 0/1 metric's mean; others as the harness reports them, with ±1.96 stderr)."""
    from lmboard.metrics.paired import wilson

    cfg, s = run["config"] or {}, run["summary"] or {}
    st = cfg.get("settings") or {}
    name = s.get("task") or cfg.get("harness")
    settings = {"task": name, "files": cfg.get("files"), **st}
    base = f"{name} {s.get('shots')}-shot" + (" chat" if s.get("chat") else "")
    h, group = _group(board, base, settings)
    model = model_row(run["provenance"] or {}, run["model"])
    n = s.get("n") or 0
    metrics = s.get("metrics") or {}
    first = True
    for key, value in metrics.items():
        if "_stderr," in key or not isinstance(value, int | float):
            continue
        metric, filt = key.split(",", 1)
        share = metric in ("acc", "acc_norm", "acc_bytes", "exact_match", "f1", "mcc", "math_verify") or \
            metric.startswith("rouge")
        err = metrics.get(f"{metric}_stderr,{filt}")
        binary = metric in ("acc", "acc_norm", "acc_bytes", "exact_match", "math_verify")  # a mean of 0s and 1s
        if binary and n and abs(value * n - round(value * n)) < 1e-6:
            lo, hi = wilson(round(value * n), n)
            cell = Cell(100 * value, 100 * lo, 100 * hi, run["id"], n, f"Wilson, {n} items")
        elif isinstance(err, float):
            k = 100 if share else 1
            cell = Cell(k * value, k * (value - 1.96 * err), k * (value + 1.96 * err), run["id"], n, "±1.96 stderr")
        else:
            cell = Cell(100 * value if share else value, run=run["id"], n=n)
        label = metric + (f" ({filt})" if filt != "none" else "")
        board.put(model, Column(f"task:{h}:{key}", group, label, "%" if share else "score", metric not in ("perplexity", "ter"),
                                settings, "tasks", first), cell)
        first = False


def add_imported(board: Board, store: Store, run: dict, _: dict) -> None:
    s = run["summary"] or {}
    for e in s.get("entries", []):
        model = ModelRow(f"{e['model']} (imported)", e["model"], imported=s.get("file"))
        settings = {"imported": s.get("format")}
        pct = e["unit"] in ("frac", "pct", "%")
        scale = 100 if e["unit"] == "frac" else 1
        v = (lambda x, k=scale: None if x is None else x * k)  # noqa: E731
        board.put(model, Column(f"imp:{settings_key(e['group'], e['label'])}", f"{e['group']} (imported)",
                                e["label"], "%" if pct else e["unit"], settings=settings, family="imported",
                                main=e["label"] in ("win rate", "acc", "acc_norm", "exact_match")),
                  Cell(v(e["value"]), v(e.get("low")), v(e.get("high")), run["id"], e.get("n"),
                       "±1.96 standard errors (from the file)" if e.get("low") is not None else None))


ADD = {"imported": add_imported, "harness": add_harness, "exam": add_exam, "classify": add_classify, "shopbench": add_shopbench, "judge": add_judge,
       "speed": add_speed}


def build(store: Store, models: tuple[str, ...] = ()) -> Board:
    """Every finished run, the newest per model and column (older runs stay in ``runs``)."""
    board = Board()
    runs = sorted((r for r in store.runs() if r["status"] == "done"), key=lambda r: r["updated"])
    generated = _generators(runs)
    for run in runs:
        add = ADD.get(run["kind"])
        if add is None:
            continue
        board.runs[run["id"]] = run_info(run)
        add(board, store, run, generated)
    if models:
        keep = {k for k, m in board.models.items() if m.label in models or k in models}
        board.models = {k: m for k, m in board.models.items() if k in keep}
        board.cells = {k: v for k, v in board.cells.items() if k[0] in keep}
        board.correct = {c: {m: v for m, v in d.items() if m in keep} for c, d in board.correct.items()}
    return board


def _identity(provenance: dict) -> tuple:
    """The model as it ran, whatever its label: backend, weights, adapter and dtype."""
    spec = provenance.get("model_spec") or {}
    return tuple(spec.get(k) for k in ("backend", "name", "gguf_file", "adapter")) + (provenance.get("dtype"),)


def _generators(runs: list[dict]) -> dict[str, ModelRow]:
    """Generator name -> the model row of the one generate run that used that name: the row
    the same model already has from other runs (a label given to tell generators apart does
    not make it another model), else the generate run's own."""
    known: dict[tuple, ModelRow] = {}
    for r in runs:
        if r["kind"] not in ("generate", "judge", "imported") and r.get("provenance"):
            known.setdefault(_identity(r["provenance"]), model_row(r["provenance"], r["model"]))
    seen: dict[str, set[str]] = {}
    rows: dict[str, ModelRow] = {}
    for r in runs:
        if r["kind"] == "generate":
            prov = r.get("provenance") or {}
            row = known.get(_identity(prov)) or model_row(prov, r["model"])
            seen.setdefault(r["model"], set()).add(row.key)
            rows[r["model"]] = row
    return {g: rows[g] for g, keys in seen.items() if len(keys) == 1}


def run_samples(store: Store, board: Board) -> dict[str, dict]:
    """The samples of every run a cell points to, for the page's drill-down: {"rows": [...],
    "prefixes": {...}}. Exam samples get their question and choices from the run's data
    folder when it is still there, and the prompt as asked where it can be rebuilt exactly
    (its hash is the stored one): the few-shot prefix once per subject, the rest per row."""
    used = {c.run for c in board.cells.values() if c.run}
    out = {}
    for rid in sorted(used):
        rows = [{"key": k, **s} for k, s in sorted(store.samples(rid))]
        info = board.runs.get(rid, {})
        prefixes: dict[str, str] = {}
        if info.get("kind") == "exam":
            prefixes = _with_questions(rows, (info.get("config") or {}).get("exam") or {})
        elif info.get("kind") == "classify":
            _with_texts(rows, info)
        out[rid] = {"rows": rows, "prefixes": prefixes}
    return out


def _with_questions(rows: list[dict], exam_cfg: dict) -> dict[str, str]:
    from lmboard.errors import UsageError
    from lmboard.registry import TASKS
    from lmboard.text import stable_hash

    try:
        exam = TASKS.get(exam_cfg["task"])()
        data = Path(exam_cfg["data"])
        found, pools = {}, {}
        for subject in {r.get("subject") for r in rows}:
            test = exam.load_split(data, subject, exam.eval_split) or []
            for q in test:
                found[(subject, q.index)] = q
            pools[subject] = exam.shot_pool(data, subject, test)  # as the run made them (exam_run.load_questions)
    except (UsageError, OSError, KeyError, TypeError, ValueError):
        return {}  # the data moved: the page shows what the store holds
    prefixes: dict[str, str] = {}
    for r in rows:
        q = found.get((r.get("subject"), r.get("index")))
        if q is None:
            continue
        r["question"] = q.question
        r["choices"] = dict(zip(exam.letters, q.choices, strict=False))
        n = r.get("shots")
        if exam_cfg.get("chat") or not isinstance(n, int) or exam.drop_rule != "last" and n != exam_cfg.get("shots"):
            continue  # a chat template's prompt, or shots dropped by length from the middle: not rebuilt
        pool, source = pools[q.subject]
        text, prefix = exam.render(q, exam.shots_for(q, pool, source, n))
        if stable_hash(text) == r.get("prompt_hash"):
            key = f"{q.subject}|{n}"
            prefixes.setdefault(key, prefix)
            r["prompt_prefix"], r["prompt_end"] = key, text[len(prefix):]
    return prefixes


def _with_texts(rows: list[dict], info: dict) -> None:
    """A classification run's texts by line, from its data file when it is still there
    (the columns are in the run's provenance)."""
    from lmboard.io import read_csv_dicts, read_jsonl

    cols = info.get("columns") or {}
    data = Path(str((info.get("config") or {}).get("data")))
    col = cols.get("text", "text")
    try:
        lines = read_jsonl(data) if data.suffix == ".jsonl" else read_csv_dicts(data, (col,))
    except Exception:  # noqa: BLE001 - the data moved or changed: the page shows what the store holds
        return
    text = {str(n): r.get(col) for n, r in lines if isinstance(r, dict)}
    for r in rows:
        t = text.get(str(r["key"]))
        if isinstance(t, str):
            r["text"] = t
