"""The lmboard command line: one module per command, registered here explicitly.

Each command parses text into typed configs, calls a job, and prints. A user's mistake
(bad flag, missing file, malformed row, unreachable endpoint, a job the model cannot
do) is one line on stderr and exit code 2, never a traceback. No command imports
another; what they share is in common.py.
"""

from __future__ import annotations

import atexit
import os
import sys

import typer
import typer.rich_utils

from lmboard.cli import board, chat, finetune, generate, judge, speed
from lmboard.cli import eval as eval_
from lmboard.cli.common import WIDE, expand_multi, out
from lmboard.errors import UsageError
from lmboard.version import __version__

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Evaluate and compare LLMs: exams, judged leaderboards, token rate.",
)
app.command("eval")(eval_.eval_cmd)
app.command("generate")(generate.generate_cmd)
app.command("chat")(chat.chat_cmd)
app.command("judge")(judge.judge_cmd)
app.command("speed")(speed.speed_cmd)
app.command("finetune")(finetune.finetune_cmd)
app.command("board")(board.board_cmd)


def _version(value: bool) -> None:
    if value:
        out.print(f"lmboard {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Evaluate and compare LLMs: exams, judged leaderboards, token rate."""


def main(argv: list[str] | None = None) -> int:
    """Run a command; under torchrun every rank runs it, and only rank 0 speaks."""
    from lmboard import cpu, parallel

    cpu.start()  # the clock of the cores other processes keep busy (the default --threads)
    from lmboard.cli.common import forget_peak_line

    forget_peak_line()  # a command in the same process (the tests' in-process CLI) starts afresh
    w = parallel.world()  # under torchrun: every rank joins the job before anything can fail
    code, why = _run(argv)
    parallel.job_over()
    if w.parallel and not w.main:
        if code and why is None:  # typer turned Ctrl-C into an exit code
            why = "interrupted" if code == 130 else f"stopped with exit code {code}"
        parallel.finish_rank(why if code else None)
        parallel.leave(code)
        return code
    if why:
        print(why, file=sys.stderr)
    elif code == 0:
        from lmboard.cli.common import say_peak_memory

        say_peak_memory()
    parallel.leave(code)
    return code


def entry() -> None:
    """The console script (and ``python -m lmboard``): main, then a fast exit. Once a
    command is done, the interpreter's own teardown (freeing every module and tensor one
    by one) took about a second of a 24-second ShopBench run; the stores are closed and
    the exit handlers run first, so nothing written is lost. An unexpected exception
    takes the ordinary way out (its traceback)."""
    code = main()
    from lmboard.store import close_all

    close_all()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> tuple[int, str | None]:
    try:
        code = _main(argv)
        # click turns Ctrl-C into exit code 130 (Abort) before we see it
        return code, _interrupted(argv) if code == 130 else None
    except UsageError as e:
        return 2, f"error: {e}"
    except (typer.Abort, KeyboardInterrupt):
        return 130, _interrupted(argv)
    except Exception as e:
        from lmboard import parallel

        if parallel.world().parallel and not parallel.world().main:  # rank 0 reports it, then the job stops
            parallel.finish_rank(f"{type(e).__name__}: {e}")
        raise


def _interrupted(argv: list[str] | None) -> str:
    import shlex

    again = " ".join(shlex.quote(a) for a in ["lmboard", *(sys.argv[1:] if argv is None else argv)])
    return f"interrupted: what was done is in the store; to go on, run the same command again: {again}"


def _main(argv: list[str] | None = None) -> int:
    argv = expand_multi(list(sys.argv[1:] if argv is None else argv))
    from lmboard import parallel

    if parallel.world().parallel and argv and argv[0] in ("chat", "speed", "finetune", "board"):
        raise UsageError(f"lmboard {argv[0]} does not run under torchrun: eval, generate and judge do (data parallel); "
                         f"run {argv[0]} as one process")
    if not sys.stdout.isatty() and not os.environ.get("TERMINAL_WIDTH"):
        typer.rich_utils.MAX_WIDTH = WIDE  # piped help is not cut at 80 columns
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click_exceptions.NoArgsIsHelpError as e:
        # typer's no_args_is_help raises after printing nothing in non-standalone mode
        out.print(e.ctx.get_help() if e.ctx else str(e), markup=False, highlight=False)
        return 0
    except click_exceptions.UsageError as e:
        raise UsageError(e.format_message()) from None
    except typer.Exit as e:
        return e.exit_code
