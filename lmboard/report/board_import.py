"""Results made elsewhere, on the same board: lm-evaluation-harness ``results_*.json``
files and alpaca_eval leaderboard CSVs. Each file becomes one finished run of kind
``imported`` in the store (its rows marked as imported on the board), keyed by the file's
hash, so importing it again changes nothing."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.io import need_file, read_csv_dicts, read_json
from lmboard.store import Store

LM_EVAL_METRICS = ("acc", "acc_norm", "exact_match", "f1", "mcc")
ALPACA = ("win_rate", "standard_error", "length_controlled_winrate", "lc_standard_error", "n_total")


def _num(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _interval(v: float | None, se: float | None) -> tuple[float | None, float | None]:
    return (v - 1.96 * se, v + 1.96 * se) if v is not None and se is not None else (None, None)


def lm_eval_entries(path: Path, doc: dict) -> list[dict]:
    cfg = doc.get("config") or {}
    args = str(cfg.get("model_args") or "")
    pretrained = next((a.split("=", 1)[1] for a in args.split(",") if a.startswith("pretrained=")), None)
    model = doc.get("model_name") or pretrained or path.stem
    nshot = doc.get("n-shot") or {}
    out = []
    for task, res in (doc.get("results") or {}).items():
        if not isinstance(res, dict):
            continue
        for metric in LM_EVAL_METRICS:
            key = next((k for k in res if k == metric or k.startswith(metric + ",")), None)
            if key is None:
                continue
            value = _num(res[key])
            stderr = _num(res.get(key.replace(metric, metric + "_stderr", 1)))
            low, high = _interval(value, stderr)
            out.append({"model": model, "group": f"lm-eval {task} {nshot.get(task, '?')}-shot", "label": metric,
                        "unit": "frac", "value": value, "low": low, "high": high})
            break
    if not out:
        raise UsageError(f"{path}: an lm-evaluation-harness results file with no task result in it")
    return out


def alpaca_entries(path: Path) -> list[dict]:
    rows = read_csv_dicts(path, ("win_rate",))
    out = []
    for n, r in rows:
        name = r.get("") or r.get("name") or r.get("Unnamed: 0")
        if not name:
            raise UsageError(f"{path}:{n}: a leaderboard row without a model name (the first column)")
        win, se = _num(r.get("win_rate")), _num(r.get("standard_error"))
        # alpaca_eval's published fit, or the one lmboard's judge wrote (named as lmboard's)
        ours = "lmboard_length_controlled_winrate" in r
        lc = _num(r.get("lmboard_length_controlled_winrate" if ours else "length_controlled_winrate"))
        lse = _num(r.get("lmboard_lc_standard_error" if ours else "lc_standard_error"))
        group = "alpaca_eval leaderboard"
        out.append({"model": name, "group": group, "label": "win rate", "unit": "pct", "value": win,
                    "low": _interval(win, se)[0], "high": _interval(win, se)[1], "n": _num(r.get("n_total"))})
        out.append({"model": name, "group": group, "unit": "pct", "value": lc,
                    "label": "LC win rate (lmboard fit)" if ours else "LC win rate (alpaca_eval)",
                    "low": _interval(lc, lse)[0], "high": _interval(lc, lse)[1], "n": _num(r.get("n_total"))})
    return out


def import_file(store: Store, path: Path) -> tuple[str, int]:
    """(run id, entries) of one imported file."""
    path = Path(path)
    need_file(path, "--import")
    if path.suffix == ".json":
        doc = read_json(path)
        if not isinstance(doc, dict) or "results" not in doc:
            raise UsageError(f"--import: {path}: not an lm-evaluation-harness results file (no 'results')")
        entries, fmt = lm_eval_entries(path, doc), "lm-eval"
    elif path.suffix == ".csv":
        entries, fmt = alpaca_entries(path), "alpaca_eval"
    else:
        raise UsageError(f"--import: {path}: expected an lm-eval results .json or an alpaca_eval leaderboard .csv")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rid = f"import-{digest[:12]}"
    store.open_run(rid, "imported", path.name, {"file": str(path.resolve()), "sha256": digest, "format": fmt}, {})
    store.finish_run(rid, {"entries": entries, "file": str(path.resolve()), "format": fmt})
    return rid, len(entries)
