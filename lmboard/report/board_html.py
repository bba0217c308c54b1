"""The board as one self-contained HTML file: styles, scripts and plotly.js inlined, a
Content-Security-Policy that forbids every remote load, the data as JSON blocks (each
run's samples in its own block, parsed only when opened). Everything the page shows is
set with textContent; names in plots have their angle brackets replaced."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from lmboard.errors import MissingDependency
from lmboard.report.board_data import Board, Column
from lmboard.report.board_text import board_dict, clean, ordered_columns

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")


def _json(obj: object) -> str:
    """JSON safe inside a <script> block: no '<', '>' or '&' survives literally."""
    s = json.dumps(obj, ensure_ascii=False, default=str, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def plotly_js() -> str:
    try:
        import plotly
    except ImportError as e:
        raise MissingDependency("plotly (its plotly.js bundle is inlined into the board)", "plotly") from e
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def _label(name: str) -> str:
    return name.replace("<", "‹").replace(">", "›")


def _first(board: Board, pred) -> Column | None:
    cols = [c for c in ordered_columns(board) if pred(c)]
    return max(cols, key=lambda c: sum(1 for (_, k) in board.cells if k == c.key), default=None)


def _pareto(points: list[tuple[float, float, str]], x_higher: bool) -> list[tuple[float, float, str]]:
    pts = sorted(points, key=lambda p: (-p[0] if x_higher else p[0], -p[1]))
    front, best = [], float("-inf")
    for p in pts:
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def _scatter(board: Board, score: Column, other: Column, fid: str, x_higher: bool) -> dict | None:
    pts = []
    for m in board.models:
        a, b = board.cells.get((m, score.key)), board.cells.get((m, other.key))
        if a and b and a.value is not None and b.value is not None:
            pts.append((b.value, a.value, _label(m)))
    if not pts:
        return None
    front = _pareto(pts, x_higher)
    return {"id": fid, "data": [
        {"type": "scatter", "mode": "markers+text", "x": [p[0] for p in pts], "y": [p[1] for p in pts],
         "text": [p[2] for p in pts], "textposition": "top center", "name": "models"},
        {"type": "scatter", "mode": "lines", "x": [p[0] for p in front], "y": [p[1] for p in front],
         "name": "Pareto front", "line": {"dash": "dot"}}],
        "layout": {"title": {"text": _label(f"{score.group} {score.label} vs {other.label}")},
                   "xaxis": {"title": {"text": other.label}}, "yaxis": {"title": {"text": score.label}}}}


def figures(board: Board) -> list[dict]:
    out: list[dict | None] = []
    speed = _first(board, lambda c: c.label.startswith("decode tok/s"))
    mem = _first(board, lambda c: c.label == "peak memory MB")
    timed = {m for (m, k) in board.cells if speed and k == speed.key}
    # the accuracy column most of the timed models have (else the most common one)
    scores = [c for c in ordered_columns(board) if c.label == "accuracy"] or [
        c for c in ordered_columns(board) if c.unit in ("frac", "pct")]
    score = max(scores, key=lambda c: (sum(1 for (m, k) in board.cells if k == c.key and m in timed),
                                       sum(1 for (_, k) in board.cells if k == c.key)), default=None)
    if score and speed:
        out.append(_scatter(board, score, speed, "plot-speed", True))
    if score and mem:
        out.append(_scatter(board, score, mem, "plot-memory", False))
    for c in (c for c in ordered_columns(board) if c.label == "win rate"):
        ms = [(m, board.cells[(m, c.key)]) for m in board.models if (m, c.key) in board.cells]
        out.append({"id": f"plot-win-{c.key}", "data": [{
            "type": "bar", "x": [_label(m) for m, _ in ms], "y": [x.value for _, x in ms],
            "error_y": {"type": "data", "symmetric": False,
                        "array": [(x.high or x.value) - x.value for _, x in ms],
                        "arrayminus": [x.value - (x.low or x.value) for _, x in ms]}}],
            "layout": {"title": {"text": _label(c.group)}, "yaxis": {"title": {"text": "win rate % (95% interval)"}}}})
    cats = [c for c in ordered_columns(board) if c.key.startswith("exam:") and ":cat:" in c.key]
    if cats:
        models = sorted({m for (m, k) in board.cells if k in {c.key for c in cats}})
        z = [[(board.cells[(m, c.key)].value if (m, c.key) in board.cells else None) for c in cats] for m in models]
        out.append({"id": "plot-categories", "data": [{"type": "heatmap", "z": z, "x": [_label(f"{c.group}: {c.label}")
                                                                                       for c in cats],
                                                         "y": [_label(m) for m in models], "colorscale": "Viridis"}],
                    "layout": {"title": {"text": "accuracy by category"}, "margin": {"l": 200}}})
    return [f for f in out if f]


def render(board: Board, comparisons: dict, samples: dict[str, list[dict]], source: str) -> str:
    assets = resources.files("lmboard.report").joinpath("assets")
    data = {**board_dict(board, comparisons), "figures": clean(figures(board))}
    blocks = "".join(f'<script type="application/json" id="run-{rid}">{_json(clean(rows))}</script>\n'
                     for rid, rows in samples.items())
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n<title>lmboard</title>\n'
            f'<style>{assets.joinpath("board.css").read_text(encoding="utf-8")}</style>\n'
            f'<script>{plotly_js()}</script>\n</head><body>\n<h1>lmboard</h1>\n'
            f'<p class="muted" id="source"></p>\n'
            '<p><input id="filter" placeholder="filter models"> Click a column to sort, a value to open its run. '
            'Intervals: 95%, exams by a cluster bootstrap over subjects (2,000 resamples).</p>\n'
            '<table id="board"></table>\n<h2>Plots</h2><div class="plots" id="plots"></div>\n'
            '<h2>Paired comparisons</h2><div id="compare"></div>\n<div id="drill"></div>\n'
            f'<script type="application/json" id="board-data">{_json(data)}</script>\n{blocks}'
            f'<script type="application/json" id="board-source">{_json(f"{source}, built {made}")}</script>\n'
            f'<script>{assets.joinpath("board.js").read_text(encoding="utf-8")}</script>\n</body></html>\n')
