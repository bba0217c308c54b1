"""The board as a terminal table, CSV, JSON or Markdown. A missing value is shown as
missing (an empty CSV field, null in JSON, "—" in tables), never as 0."""

from __future__ import annotations

import csv
import io
import json

from lmboard.report.board_data import Board, Cell, Column

MISSING = "—"


def ordered_columns(board: Board) -> list[Column]:
    return sorted(board.columns.values(), key=lambda c: (c.group, c.key))


def fmt(col: Column, cell: Cell | None, interval: bool = True) -> str:
    if cell is None or cell.value is None:
        return MISSING
    scale = 100 if col.unit == "frac" else 1
    digits = 2 if col.unit == "s" else 1

    def f(x: float) -> str:
        return f"{x * scale:.{digits}f}"

    text = f(cell.value)
    if interval and cell.low is not None and cell.high is not None and cell.low == cell.low:
        text += f" [{f(cell.low)}, {f(cell.high)}]"
    return text


def header(col: Column) -> str:
    unit = " %" if col.unit in ("frac", "pct") else ""
    return f"{col.group}: {col.label}{unit}"


def rows(board: Board) -> tuple[list[str], list[list[str]]]:
    cols = ordered_columns(board)
    head = ["model", "dtype", "adapter", *(header(c) for c in cols)]
    body = []
    for key, m in sorted(board.models.items()):
        body.append([m.label, m.dtype or MISSING, m.adapter or MISSING,
                     *(fmt(c, board.cells.get((key, c.key))) for c in cols)])
    return head, body


def to_markdown(board: Board) -> str:
    head, body = rows(board)
    esc = [[x.replace("|", "\\|") for x in r] for r in [head, *body]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]]) + "\n"


def to_csv(board: Board) -> str:
    cols = ordered_columns(board)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "dtype", "adapter", *(x for c in cols for x in (header(c), f"{header(c)} low",
                                                                         f"{header(c)} high"))])
    for key, m in sorted(board.models.items()):
        vals = []
        for c in cols:
            cell = board.cells.get((key, c.key))
            vals += ["" if cell is None or v is None else v for v in
                     ((cell.value, cell.low, cell.high) if cell else (None, None, None))]
        w.writerow([m.label, m.dtype or "", m.adapter or "", *vals])
    return buf.getvalue()


def clean(x: object) -> object:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(x, float) and x != x or x in (float("inf"), float("-inf")):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    return x


def board_dict(board: Board, comparisons: dict) -> dict:
    """The board as plain data: the JSON format and the page's data block."""
    return clean({
        "models": [m.__dict__ for _, m in sorted(board.models.items())],
        "columns": [c.__dict__ for c in ordered_columns(board)],
        "cells": [{"model": m, "column": c, **cell.__dict__} for (m, c), cell in sorted(board.cells.items())],
        "comparisons": comparisons,
        "runs": board.runs,
    })


def to_json(board: Board, comparisons: dict) -> str:
    return json.dumps(board_dict(board, comparisons), indent=1, ensure_ascii=False, default=str)


def terminal_table(board: Board):
    from rich.table import Table

    head, body = rows(board)
    t = Table(title="lmboard")
    for h in head:
        t.add_column(h, overflow="fold")
    for r in body:
        t.add_row(*r)
    return t
