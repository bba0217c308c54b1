"""The leaderboard: alpaca_eval's columns in its order, then lmboard's.

Inputs: generator outputs (lmboard generate's output.json or any alpaca_eval outputs
file) judged against a reference, or existing alpaca_eval annotation files.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmboard.errors import UsageError
from lmboard.io import read_json_list
from lmboard.judge.stats import bootstrap_ci, head2head, length_controlled

ALPACA_COLUMNS = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                  "discrete_win_rate", "mode", "avg_length", "length_controlled_winrate", "lc_standard_error"]
OUR_COLUMNS = ["win_rate_ci_low", "win_rate_ci_high", "n_invalid", "judge", "consistency"]
# the length-controlled rate is lmboard's own offline fit (judge/stats.py), not alpaca_eval's
# published one (which uses instruction difficulties fitted on its whole leaderboard): the CSV
# says so in the columns' names
CSV_NAMES = {"length_controlled_winrate": "lmboard_length_controlled_winrate",
             "lc_standard_error": "lmboard_lc_standard_error"}


@dataclass
class GeneratorResult:
    name: str
    instructions: list[str]
    outputs: list[str]
    references: list[str]
    preferences: list[float | None]  # in [1, 2]; None = invalid judgment
    judge: str = ""
    consistency: float | None = None
    reference: str = ""  # the reference's generator (alpaca_eval's generator_1)
    extra: dict = field(default_factory=dict)


def read_outputs(paths: list[Path]) -> dict[str, dict[str, str]]:
    """generator -> {instruction: output}; every entry must name its generator."""
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        for i, e in enumerate(read_json_list(path)):
            if not isinstance(e, dict):
                raise UsageError(f"{path}: entry {i}: expected an object")
            for k in ("generator", "instruction", "output"):
                if not isinstance(e.get(k), str):
                    raise UsageError(f"{path}: entry {i}: missing field {k!r}")
            out.setdefault(e["generator"], {})[e["instruction"]] = e["output"]
    return out


def read_reference(path: Path) -> tuple[str, dict[str, str]]:
    entries = read_json_list(path)
    ref: dict[str, str] = {}
    names = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("instruction"), str) or not isinstance(e.get("output"), str):
            raise UsageError(f"{path}: entry {i}: needs 'instruction' and 'output'")
        ref[e["instruction"]] = e["output"]
        names.add(e.get("generator", path.stem))
    return (names.pop() if len(names) == 1 else path.stem), ref


def match(outputs: dict[str, str], reference: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(instructions on both sides in the outputs' order, only in outputs, only in reference)."""
    both = [i for i in outputs if i in reference]
    return both, [i for i in outputs if i not in reference], [i for i in reference if i not in outputs]


def read_annotations(paths: list[Path]) -> list[GeneratorResult]:
    """alpaca_eval annotation files: preference (1..2), output_1 (reference), output_2, generator_2.

    A row is named after the file when the file holds one generator (alpaca_eval names
    leaderboard rows after the results folder, not the generator field), else after
    generator_2.
    """
    results: dict[str, GeneratorResult] = {}
    for path in paths:
        entries = read_json_list(path)
        if not entries:
            raise UsageError(f"{path}: no annotations (an empty list)")
        gens = {e.get("generator_2") for e in entries if isinstance(e, dict)}
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise UsageError(f"{path}: entry {i}: expected an object")
            for k in ("instruction", "output_1", "output_2", "generator_2"):
                if not isinstance(e.get(k), str):
                    raise UsageError(f"{path}: entry {i}: missing or malformed field {k!r}")
            pref = e.get("preference")
            if pref is not None and (not isinstance(pref, int | float) or isinstance(pref, bool)):
                raise UsageError(f"{path}: entry {i}: preference must be a number in [1, 2] or null (got {pref!r})")
            name = path.stem if len(gens) == 1 else e["generator_2"]
            r = results.setdefault(name, GeneratorResult(name, [], [], [], [], judge=str(e.get("annotator", "")),
                                                         reference=str(e.get("generator_1") or "")))
            r.instructions.append(e["instruction"])
            r.outputs.append(e["output_2"])
            r.references.append(e["output_1"])
            r.preferences.append(None if pref is None or (isinstance(pref, float) and math.isnan(pref)) else float(pref))
    return list(results.values())


def build_board(results: list[GeneratorResult], seed: int = 0, n_boot: int = 2000, mode: str = "lmboard") -> list[dict]:
    """One row per generator; length control fitted jointly over the whole board.

    ``mode`` fills alpaca_eval's column of that name (there: community, verified, minimal):
    ``lmboard`` for judgments made here, ``annotations`` for a board built from files."""
    index: dict[str, int] = {}
    lc_rows: dict[str, list[tuple[int, float, float]]] = {}
    for r in results:
        rows = []
        for ins, out, ref, p in zip(r.instructions, r.outputs, r.references, r.preferences, strict=True):
            if p is None or not 1 <= p <= 2:
                continue
            p = 1.5 if p == 0 else p
            rows.append((index.setdefault(ins, len(index)), float(len(ref) - len(out)), p - 1))
        if rows:
            lc_rows[r.name] = rows
    lc = length_controlled(lc_rows, max(len(index), 1)) if lc_rows else None
    board = []
    for r in results:
        h = head2head(r.preferences)
        lo, hi = bootstrap_ci(r.preferences, n_boot, seed)
        board.append({
            "name": r.name,
            **{k: h[k] for k in ALPACA_COLUMNS[:7]},
            "mode": mode,
            "avg_length": int(np.mean([len(o) for o in r.outputs])) if r.outputs else 0,
            "length_controlled_winrate": lc.win_rate.get(r.name, float("nan")) if lc else float("nan"),
            "lc_standard_error": lc.standard_error.get(r.name, float("nan")) if lc else float("nan"),
            "win_rate_ci_low": lo,
            "win_rate_ci_high": hi,
            "n_invalid": sum(1 for p in r.preferences if p is None),
            "judge": r.judge,
            "consistency": r.consistency,
        })
    board.sort(key=lambda row: -(row["length_controlled_winrate"] if not math.isnan(row["length_controlled_winrate"]) else -1))
    return board


def write_board_csv(board: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", *(CSV_NAMES.get(c, c) for c in ALPACA_COLUMNS), *OUR_COLUMNS])
        for row in board:
            w.writerow([row["name"], *[_fmt(row[c]) for c in ALPACA_COLUMNS + OUR_COLUMNS]])
    tmp.replace(path)


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def board_table(board: list[dict], title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("generator", "LC win rate (lmboard fit)", "win rate", "95% CI", "n", "invalid", "avg len"):
        t.add_column(col, justify="left" if col == "generator" else "right")
    for r in board:
        t.add_row(r["name"], f"{r['length_controlled_winrate']:.1f}", f"{r['win_rate']:.1f}",
                  f"{r['win_rate_ci_low']:.1f}-{r['win_rate_ci_high']:.1f}", str(r["n_total"]), str(r["n_invalid"]),
                  str(r["avg_length"]))
    return t
