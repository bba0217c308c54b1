"""The board's data: every finished run in the store, one row per model, one column per
measurement and setting (runs with different shots, letter token, template, data,
judge or reference are different columns, never one cell), intervals and paired
comparisons computed from the stored samples.

A model is its spec's label (or name) with the dtype and the adapter: SmolLM2 in float32,
in bfloat16 and with an adapter are three rows. Judged runs name their generator; it is
matched to the `lmboard generate` run that produced it when there is exactly one.

Units: every share is in percent (accuracy, F1, win rate), so the page, the terminal,
CSV and JSON show one unit per column; the others are tok/s, s, MB, or a judge's 1-10
score. A column belongs to a family (the page's views and the terminal's blocks) and a
group (one benchmark with its settings); one column of a group is its headline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmboard.metrics.paired import accuracy_interval, paired_comparison
from lmboard.text import stable_hash

FAMILIES = ("exams", "classification", "shopbench", "tasks", "judged", "speed", "imported")
UNITS = {"%": "percent", "tok/s": "tokens per second", "s": "seconds", "MB": "megabytes",
         "score": "a judge's 1-10 grade, or a task file's metric as it reports it"}


@dataclass
class Cell:
    value: float | None
    low: float | None = None
    high: float | None = None
    run: str | None = None
    n: int | None = None
    interval: str | None = None  # how low and high were made (None: no interval)


@dataclass
class Column:
    key: str
    group: str  # "MMLU 5-shot", "judged vs gpt4_turbo · judge smollm2", "speed 256+64 tokens on ..."
    label: str  # "accuracy", "STEM", "win rate", "decode tok/s (batch 1)"
    unit: str = "%"  # one of UNITS
    higher_better: bool = True
    settings: dict = field(default_factory=dict)
    family: str = "exams"  # one of FAMILIES
    main: bool = False  # the group's headline column (the overview shows these)


@dataclass
class ModelRow:
    key: str
    label: str
    dtype: str | None = None
    adapter: str | None = None
    imported: str | None = None  # the file an imported row came from


@dataclass
class Board:
    models: dict[str, ModelRow] = field(default_factory=dict)
    columns: dict[str, Column] = field(default_factory=dict)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)  # run id -> what produced it
    correct: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)  # column -> model -> key -> right
    clusters: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> key -> cluster (subject)

    def put(self, model: ModelRow, col: Column, cell: Cell) -> None:
        self.models.setdefault(model.key, model)
        self.columns.setdefault(col.key, col)
        self.cells[(model.key, col.key)] = cell

    def comparisons(self, n_resamples: int = 2000) -> dict[str, list[dict]]:
        """Column -> every pair of models, on the questions both answered."""
        out: dict[str, list[dict]] = {}
        for col, by_model in self.correct.items():
            names = sorted(by_model)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    p = paired_comparison(by_model[a], by_model[b], self.clusters.get(col, {}), n_resamples)
                    if p is not None:
                        out.setdefault(col, []).append({"a": a, "b": b, **p.to_dict()})
        return out


def model_row(provenance: dict, fallback: str) -> ModelRow:
    spec = provenance.get("model_spec") or {}
    label = spec.get("label") or Path(str(spec.get("gguf_file") or spec.get("name") or fallback)).name or fallback
    dtype = provenance.get("dtype")
    adapter = spec.get("adapter")
    key = " · ".join(x for x in (label, dtype, f"adapter {Path(adapter).name}" if adapter else None) if x)
    return ModelRow(key, label, dtype, adapter)


def run_info(run: dict) -> dict:
    prov = run.get("provenance") or {}
    return {"id": run["id"], "kind": run["kind"], "model": run["model"], "created": run["created"],
            "spec": prov.get("model_spec") or prov.get("judge_spec"), "dtype": prov.get("dtype"),
            "versions": prov.get("versions"), "template_hash": prov.get("prompt_template_hash"),
            "runtime": prov.get("runtime"), "hardware": prov.get("hardware"), "columns": prov.get("columns"),
            "config": run.get("config")}


def accuracy_cell(board: Board, col: Column, model: ModelRow, run_id: str, correct: dict[str, bool],
                  clusters: dict[str, str]) -> Cell:
    """Accuracy in percent with its interval (metrics/paired.py's rule: a cluster bootstrap
    over enough subjects, else Wilson's); the per-question record kept for pairs."""
    keys = sorted(correct)
    vals = [correct[k] for k in keys]
    lo, hi, how = accuracy_interval(vals, [clusters[k] for k in keys] if clusters else None)
    board.correct.setdefault(col.key, {})[model.key] = correct
    board.clusters.setdefault(col.key, {}).update(clusters)
    if not vals:
        return Cell(None, run=run_id, n=0)
    return Cell(100 * sum(vals) / len(vals), 100 * lo, 100 * hi, run_id, len(vals), how)


def percent(x: float | None) -> float | None:
    return None if x is None or x != x else 100 * x


def settings_key(*parts: object) -> str:
    return stable_hash(json.dumps(parts, sort_keys=True, default=str), 8)
