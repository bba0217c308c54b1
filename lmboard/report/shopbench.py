"""ShopBench result files and the terminal table.

- ``scores.json``: per task (name, type, metric label, the rows' metrics, rows, score),
  per track (marked as such), overall; the parser, routes and provenance;
- ``samples.jsonl``: one line per row (index, task, type, metric, route, raw response,
  parsed answer, truth, score).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table


def write_shopbench_files(result: dict, out: Path) -> None:
    doc = {k: v for k, v in result.items() if k != "samples"}
    (out / "scores.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=float), encoding="utf-8")
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in result["samples"]:
            f.write(json.dumps(s, ensure_ascii=False, default=float) + "\n")


def shopbench_table(result: dict) -> Table:
    t = Table(title=f"{result['model']}: ShopBench ({result['parse']} parser, multiple choice by {result['mc_by']})",
              title_justify="left")
    for name, justify in (("task", "left"), ("type", "left"), ("metric", "left"), ("rows", "right"),
                          ("score", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for task in result["tasks"]:
        label = task["metric"] + (" *" if task.get("note") else "")
        t.add_row(task["task"], task["type"], label, str(task["n"]), f"{task['score']:.4f}")
    for name, tr in result["tracks"].items():
        t.add_row(f"track: {name.removeprefix('amazon-kdd-cup-24-')}", "", "mean of its tasks", str(tr["tasks"]),
                  f"{tr['score']:.4f}", style="dim")
    t.add_row("overall", "", "mean of task scores", str(sum(x["n"] for x in result["tasks"])),
              f"{result['overall']:.4f}", style="bold")
    notes = [f"* {x['task']}: {x['note']}" for x in result["tasks"] if x.get("note")]
    if notes:
        t.caption = "\n".join(notes)
        t.caption_justify = "left"
    return t
