"""The board as terminal tables, CSV, JSON or Markdown. A missing value is shown as
missing (an empty CSV field, null in JSON, "—" in tables), never as 0. Every column has
one unit, named in its header; an interval says how it was made."""

from __future__ import annotations

import csv
import io
import json

from lmboard.report.board_data import FAMILIES, UNITS, Board, Cell, Column

MISSING = "—"


def ordered_columns(board: Board) -> list[Column]:
    """Families in their order, then groups by name, the headline column first in each."""
    return sorted(board.columns.values(), key=lambda c: (FAMILIES.index(c.family) if c.family in FAMILIES else 99,
                                                          c.group, not c.main, c.key))


def _digits(col: Column) -> int:
    return 2 if col.unit == "s" else 0 if col.unit == "MB" else 1


def fmt(col: Column, cell: Cell | None, interval: bool = True) -> str:
    if cell is None or cell.value is None:
        return MISSING
    d = _digits(col)
    text = f"{cell.value:.{d}f}"
    if interval and cell.low is not None and cell.high is not None and cell.low == cell.low:
        text += f" [{cell.low:.{d}f}, {cell.high:.{d}f}]"
    return text


def header(col: Column) -> str:
    return f"{col.group}: {col.label} [{col.unit}]"


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
    """One row per model; per column its value, the interval's ends and how the interval
    was made (a column with no interval anywhere has no such fields), all in the unit
    the header names."""
    cols = ordered_columns(board)
    banded = {c.key for c in cols if any(x.low is not None for (m, k), x in board.cells.items() if k == c.key)}
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["model", "dtype", "adapter"]
    for c in cols:
        head.append(header(c))
        if c.key in banded:
            name = f"{c.group}: {c.label}"
            head += [f"{name} 95% low [{c.unit}]", f"{name} 95% high [{c.unit}]", f"{name} interval"]
    w.writerow(head)
    for key, m in sorted(board.models.items()):
        vals: list[object] = []
        for c in cols:
            cell = board.cells.get((key, c.key)) or Cell(None)
            vals.append("" if cell.value is None else cell.value)
            if c.key in banded:
                vals += ["" if cell.low is None else cell.low, "" if cell.high is None else cell.high,
                         cell.interval or ""]
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
    """The board as plain data: the JSON format and the page's data block. Values are in
    their column's unit; comparisons' differences in percentage points."""
    pct = {c: [{**p, **{k: 100 * p[k] for k in ("difference", "low", "high")}} for p in ps]
           for c, ps in comparisons.items()}
    return clean({
        "units": {**UNITS, "comparisons": "percentage points"},
        "models": [m.__dict__ for _, m in sorted(board.models.items())],
        "columns": [c.__dict__ for c in ordered_columns(board)],
        "cells": [{"model": m, "column": c, **cell.__dict__} for (m, c), cell in sorted(board.cells.items())],
        "comparisons": pct,
        "runs": board.runs,
    })


def to_json(board: Board, comparisons: dict) -> str:
    return json.dumps(board_dict(board, comparisons), indent=1, ensure_ascii=False, default=str)


def _blocks(board: Board, width: int) -> list[tuple[str, list[Column]]]:
    """(family, columns) blocks, each narrow enough for ``width`` next to the model column."""
    from rich.cells import cell_len

    model_w = max((cell_len(k) for k in board.models), default=5) + 3
    out: list[tuple[str, list[Column]]] = []
    for fam in dict.fromkeys(c.family for c in ordered_columns(board)):
        block, used = [], model_w
        for c in (c for c in ordered_columns(board) if c.family == fam):
            w = max([cell_len(c.label) + len(c.unit) + 3, min(cell_len(c.group), 16)] +
                    [cell_len(fmt(c, board.cells.get((m, c.key)))) for m in board.models]) + 3
            if block and used + w > width:
                out.append((fam, block))
                block, used = [], model_w
            block.append(c)
            used += w
        if block:
            out.append((fam, block))
    return out


def terminal_tables(board: Board, width: int) -> list:
    """One table per family, wrapped into several where the columns do not fit ``width``:
    the model first in each, the group over its columns, nothing squeezed."""
    from rich.cells import cell_len
    from rich.table import Table

    tables = []
    for fam, cols in _blocks(board, width):
        body = [(key, [fmt(c, board.cells.get((key, c.key))) for c in cols]) for key in sorted(board.models)]
        body = [(k, v) for k, v in body if any(x != MISSING for x in v)]
        if not body:
            continue
        t = Table(title=fam, title_justify="left")
        t.add_column("model", no_wrap=True)
        last = None
        for i, c in enumerate(cols):
            label = f"{c.label} [{c.unit}]"
            w = max([cell_len(label)] + [cell_len(v[i]) for _, v in body])
            # the group over its first column only; a long name wraps within it
            t.add_column(f"{c.group if c.group != last else ''}\n{label}", justify="right", max_width=w, min_width=w)
            last = c.group
        for key, vals in body:
            t.add_row(key, *vals)
        tables.append(t)
    return tables
