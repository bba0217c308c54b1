"""`lmboard judge`: a judged leaderboard against a reference, or one built from annotations."""

from __future__ import annotations

import glob
from pathlib import Path

import typer

from lmboard.cli.common import (
    DB,
    QUIET,
    THREADS,
    check_out_file,
    check_positive,
    err,
    load_lm,
    model_spec,
    open_store,
    out,
    progress_bar,
)
from lmboard.errors import UsageError
from lmboard.parallel import world


def expand(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        matches = sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else [p]
        if not matches:
            raise UsageError(f"{p}: no file matches")
        found += [Path(m) for m in matches]
    return found


def judge_cmd(
    outputs: list[str] = typer.Option([], "--outputs", help="Outputs files or globs (alpaca_eval format)"),
    reference: Path | None = typer.Option(None, help="The reference outputs (alpaca_eval format)"),
    judge: str | None = typer.Option(None, help="The judge's model spec (any backend)"),
    annotations: list[str] = typer.Option([], "--annotations", help="Build the board from alpaca_eval annotations"),
    leaderboard: Path = typer.Option(Path("leaderboard.csv"), help="Where to write the board (CSV)"),
    mode: str = typer.Option("pairwise", help="pairwise (win rate) or single (1-10 grades)"),
    judge_lang: str = typer.Option("auto", help="auto, en or zh"),
    both_orders: bool = typer.Option(False, "--both-orders", help="Judge each pair in both orders"),
    seed: int = typer.Option(0, help="Seed of the order coin and the bootstrap"),
    bootstrap: int = typer.Option(2000, help="Bootstrap resamples for the win-rate interval"),
    concurrency: int = typer.Option(8, help="Judge requests in flight (endpoints)"),
    plugins: list[Path] = typer.Option([], "--plugins", help="Python files/folders registering inference functions"),
    db: Path | None = DB,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Judge outputs against a reference with any LLM judge; write an alpaca_eval-style board."""
    from lmboard.judge.board import board_table, build_board, write_board_csv

    if mode not in ("pairwise", "single"):
        raise UsageError(f"--mode must be pairwise or single (got {mode!r})")
    if judge_lang not in ("auto", "en", "zh"):
        raise UsageError(f"--judge-lang must be auto, en or zh (got {judge_lang!r})")
    if bootstrap < 1000:
        raise UsageError(f"--bootstrap must be at least 1000 (got {bootstrap})")
    check_positive(concurrency, "--concurrency")
    check_positive(threads, "--threads")
    check_out_file(leaderboard, "--leaderboard")
    if plugins:
        from lmboard.models.registry import load_plugin_paths

        load_plugin_paths(plugins)
    if annotations:
        from lmboard.judge.board import read_annotations
        from lmboard.judge.run import record_annotations

        files = expand(annotations)
        results = read_annotations(files)
        store = open_store(db, quiet)
        board = build_board(results, seed, bootstrap, mode="annotations")
        write_board_csv(board, leaderboard)
        ids = record_annotations(store, results, board, files)
        if not quiet:
            out.print(board_table(board, f"leaderboard from {len(results)} annotation sets"))
            out.print(f"stored as {len(ids)} judge runs in {store.path}: lmboard board shows them", markup=False)
        return
    if not outputs or judge is None or (mode == "pairwise" and reference is None):
        raise UsageError("judge needs --outputs and --judge (and --reference in pairwise mode), or --annotations")
    from lmboard.judge.judges import JudgeSettings
    from lmboard.judge.run import judge_outputs

    settings = JudgeSettings(model_spec(judge), mode, judge_lang, seed, both_orders, concurrency)
    files = expand(outputs)  # bad files fail here, before the judge loads
    main = world().main  # under torchrun, rank 0 alone opens the store and writes the board
    board, info = judge_outputs(
        files, reference, settings, open_store(db, quiet) if main else None, leaderboard, bootstrap,
        load=lambda spec: load_lm(spec, quiet, threads), progress=lambda d: progress_bar(d, quiet or not main),
    )
    if not main:
        return
    if not quiet:
        if info["missing"]:
            err.print(f"instructions left out (listed in {info['missing_file']}): {info['missing']}", markup=False)
        if mode == "single":
            for row in board:
                out.print(f"{row['name']}: mean grade {row['mean']:.2f} (95% CI {row['ci_low']:.2f}-{row['ci_high']:.2f}), "
                          f"n={row['n']}, invalid={row['n_invalid']}", markup=False)
        else:
            out.print(board_table(board, f"judged by {info['judge']} against {info['reference']}"))
        out.print(f"judge requests sent: {info['judge_requests']}; board: {leaderboard}", markup=False)
