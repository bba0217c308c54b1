"""Task-file results: ``results.json`` in lm-evaluation-harness's shape (``results``,
``groups``, ``group_subtasks``, ``configs``, ``versions``, ``n-shot``, ``higher_is_better``,
``n-samples``, stderr beside each metric) so that tools reading lm-eval output read it,
with lmboard's provenance under ``lmboard``; and ``samples_TASK.jsonl``: per document and
filter, the rendered prompt, the raw responses (or log-likelihoods), the filtered answer,
the target and each metric."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmboard.tasks.harness.config import GroupSpec, TaskSpec


def _plain(x: Any) -> Any:
    """A config value as JSON: a !function as its module and name."""
    if callable(x):
        return f"!function {getattr(x, '__module__', '?')}.{getattr(x, '__name__', '?')}"
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _groups(entry: TaskSpec | GroupSpec, out: dict[str, list[str]]) -> None:
    if isinstance(entry, GroupSpec):
        out[entry.name] = [m.name for m in entry.tasks]
        for m in entry.tasks:
            _groups(m, out)


def results_doc(entries: list[TaskSpec | GroupSpec], tasks: dict[str, dict], groups: dict[str, dict],
                model: str, settings: dict) -> dict:
    results, configs, versions, nshot, better, nsamples = {}, {}, {}, {}, {}, {}
    for name, r in tasks.items():
        p = r["prepared"]
        results[name] = {"alias": p.task.cfg.get("task_alias") or name, **r["metrics"]}
        configs[name] = {**_plain(p.task.cfg), "num_fewshot": p.shots}
        versions[name] = ((p.task.cfg.get("metadata") or {}).get("version"))
        nshot[name] = p.shots
        better[name] = {m["metric"]: m["higher_is_better"] for m in p.metrics}
        nsamples[name] = {"original": len(p.task.docs.rows), "effective": p.n_docs}
    subtasks: dict[str, list[str]] = {}
    for e in entries:
        _groups(e, subtasks)
    for g, res in groups.items():
        results[g] = res
        versions[g] = None
    return {
        "results": results,
        "groups": {g: res for g, res in groups.items() if len(res) > 2},
        "group_subtasks": subtasks,
        "configs": configs,
        "versions": versions,
        "n-shot": nshot,
        "higher_is_better": better,
        "n-samples": nsamples,
        "config": {"model": "lmboard", "model_args": model, **settings},
        "date": time.time(),
        "lmboard": {name: {"run_id": r["run_id"], "provenance": r["provenance"], "seconds": r["seconds"]}
                    for name, r in tasks.items()},
    }


def write_harness_files(doc: dict, tasks: dict[str, dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    for name, r in tasks.items():
        p = r["prepared"]
        with open(out / f"samples_{name}.jsonl", "w", encoding="utf-8") as f:
            for s in r["samples"]:
                doc_row = p.task.docs.rows[s["doc_id"]]
                for fname, fr in s["filters"].items():
                    line = {"doc_id": s["doc_id"], "doc": doc_row, "target": s["target"], "prompt": s["prompt"],
                            **({"resps": s["resps"]} if "resps" in s else {"loglikelihoods": s["lls"]}),
                            "filter": fname, "filtered_resps": fr["filtered"], "metrics": list(fr["metrics"]),
                            **fr["metrics"]}
                    f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
    return path


def harness_table(doc: dict):
    from rich.table import Table

    t = Table(title="results", title_justify="left")
    for c in ("task", "filter", "n-shot", "metric", "value", "stderr"):
        t.add_column(c, justify="left" if c in ("task", "filter", "metric") else "right")
    for name, res in doc["results"].items():
        for key, v in res.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            err = res.get(f"{metric}_stderr,{filt}")
            t.add_row(name, filt, str(doc["n-shot"].get(name, "")), metric, f"{v:.4f}",
                      f"{err:.4f}" if isinstance(err, float) else str(err or ""))
    return t
