"""`lmboard board`: every finished run in the store, models side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from lmboard.cli.common import DB, QUIET, check_out_file, err, out, split_list
from lmboard.errors import UsageError

FORMATS = ("html", "csv", "json", "md")


def board_cmd(
    db: Path | None = DB,
    out_file: Path | None = typer.Option(None, "--out", help="Write the board here (default: a table in the terminal)"),
    models: str | None = typer.Option(None, help="Comma-separated models (labels or row names) to show"),
    fmt: str | None = typer.Option(None, "--format", help="html, csv, json or md (default: from --out's suffix)"),
    open_page: bool = typer.Option(False, "--open", help="Open the HTML board in the browser"),
    imports: list[Path] = typer.Option([], "--import", help="lm-eval results_*.json or alpaca_eval leaderboard CSV "
                                       "to add to the store (repeatable); shown as imported"),
    quiet: bool = QUIET,
) -> None:
    """The leaderboard: exams, classification, ShopBench, judged win rates and speed per model."""
    from lmboard.report.board_collect import build, run_samples
    from lmboard.report.board_text import terminal_tables, to_csv, to_json, to_markdown
    from lmboard.store import Store, default_db_path

    path = db or default_db_path()
    if not Path(path).is_file() and not imports:
        raise UsageError(f"--db: no store at {path} (run lmboard eval, judge or speed first)")
    kind = fmt or (out_file.suffix.lstrip(".").lower() if out_file else None)
    if kind == "htm":
        kind = "html"
    if kind is not None and kind not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)} (got {kind!r})")
    if out_file is not None:
        check_out_file(out_file, "--out")
    store = Store(path)
    if imports:
        from lmboard.report.board_import import import_file

        for f in imports:
            rid, n = import_file(store, f)
            if not quiet:
                err.print(f"imported {f}: {n} values (run {rid})", markup=False)
    board = build(store, split_list(models))
    if not board.models:
        raise UsageError(f"--db {path}: no finished run" + (f" of {models}" if models else "") + " to show")
    if kind is None:
        _print_tables(terminal_tables(board, _width()))
        return
    if kind == "html":
        from lmboard.report.board_html import render

        text = render(board, board.comparisons(), run_samples(store, board), str(path))
    else:
        text = {"csv": to_csv, "md": to_markdown}[kind](board) if kind != "json" else to_json(board, board.comparisons())
    if out_file is None:
        print(text, end="")
        return
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_file)
    if not quiet:
        out.print(f"board: {out_file} ({len(board.models)} models, {len(board.columns)} columns, "
                  f"{out_file.stat().st_size / 1e6:.1f} MB)", markup=False)
    if open_page and kind == "html":
        import webbrowser

        webbrowser.open(out_file.resolve().as_uri())


def _width() -> int:
    """The terminal's width; piped, $COLUMNS or 120 (a log or a pager reads that well)."""
    import os
    import sys

    if sys.stdout.isatty():
        return out.width
    try:
        return max(60, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 120


def _print_tables(tables: list) -> None:
    from rich.console import Console

    console = Console(width=_width(), highlight=False)
    for t in tables:
        console.print(t)
