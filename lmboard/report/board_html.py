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
from lmboard.report.board_data import Board
from lmboard.report.board_text import board_dict, clean

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


def _columnar(run: dict) -> dict:
    """A run's samples as field names and rows of values: the names are not repeated
    100,000 times (a third of a large page), which the browser reads back on demand."""
    rows = run["rows"]
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {"fields": names, "rows": [[r.get(k) for k in names] for r in rows], "prefixes": run.get("prefixes") or {}}


def render(board: Board, comparisons: dict, samples: dict[str, dict], source: str) -> str:
    assets = resources.files("lmboard.report").joinpath("assets")
    data = board_dict(board, comparisons)
    blocks = "".join(f'<script type="application/json" id="run-{rid}">{_json(clean(_columnar(rows)))}</script>\n'
                     for rid, rows in samples.items())
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n<title>lmboard</title>\n'
            f'<style>{assets.joinpath("board.css").read_text(encoding="utf-8")}</style>\n'
            # plotly.js (4.6 MB) is compiled only when a view draws a plot: the table opens first
            f'<script type="text/plain" id="plotly-js">{plotly_js()}</script>\n</head><body>\n<header><h1>lmboard</h1>\n'
            '<p class="muted" id="source"></p></header>\n<nav id="tabs"></nav>\n<main>\n'
            '<section id="table-view"><div class="controls"><input id="filter" placeholder="filter models"></div>\n'
            '<div class="scroll"><table id="board"></table></div>\n<div id="legend"></div></section>\n'
            '<section id="plots-view" hidden><div class="plots" id="plots"></div></section>\n'
            '<section id="compare-view" hidden><div id="compare"></div></section>\n</main>\n'
            '<aside id="drill" hidden></aside>\n'
            f'<script type="application/json" id="board-data">{_json(data)}</script>\n{blocks}'
            f'<script type="application/json" id="board-source">{_json(f"{source}, built {made}")}</script>\n'
            f'<script>{assets.joinpath("board.js").read_text(encoding="utf-8")}</script>\n</body></html>\n')
