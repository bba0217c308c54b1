"""The lmboard command line: parses text into typed configs, calls the library, prints.

A user's mistake (bad flag, missing file, malformed row, unreachable endpoint) is one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from lmboard.config import DTYPES, EngineSettings, ExamSettings, ModelSpec, parse_model_spec
from lmboard.errors import UsageError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Evaluate and compare LLMs: exams, judged leaderboards, token rate.",
)
try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx

err = Console(stderr=True)
out = Console()


def builtin_data(task: str) -> Path:
    return Path(str(resources.files("lmboard.data").joinpath(task)))


def model_spec(text: str, dtype: str | None = None) -> ModelSpec:
    spec = parse_model_spec(text)
    if dtype:
        if dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
        spec = dataclasses.replace(spec, dtype=dtype)
    return spec


def parse_budget(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise UsageError(f"--batch-tokens must be auto or a positive integer (got {text!r})")
    return n


def split_list(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


@contextmanager
def progress_bar(description: str, quiet: bool):
    """Yields ``update(done, total)``; a rich progress bar on stderr unless --quiet."""
    if quiet:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as p:
        task = p.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            p.update(task, completed=done, total=total)

        yield update


def load_lm(spec: ModelSpec, quiet: bool):
    import os

    from lmboard.models.registry import load_model

    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF conversion bar
    return load_model(spec)


@app.callback()
def _root() -> None:
    """Evaluate and compare LLMs: exams, judged leaderboards, token rate."""


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument("smollm2", help="Model spec: smollm2, hf:PATH[,k=v...], openai:NAME@URL"),
    task: str = typer.Option("mmlu", help="mmlu, cmmlu, ceval or classify"),
    data: Path | None = typer.Option(None, help="Data folder (or file for classify); default: built-in sample"),
    subjects: str | None = typer.Option(None, help="Comma-separated subjects (default: all)"),
    limit: int | None = typer.Option(None, help="Questions per subject"),
    shots: int = typer.Option(5, help="Few-shot examples per question"),
    letter_token: str = typer.Option("spaced", help='spaced: " A" after the cue; bare: tokenizer("A")[-1]'),
    chat: bool = typer.Option(False, "--chat", help="Render through the model's chat template"),
    dtype: str | None = typer.Option(None, help="auto, float32, bfloat16, float16 (overrides the spec)"),
    batch_tokens: str = typer.Option("auto", "--batch-tokens", "--batch-size", help="Token budget per batch, or auto"),
    prefix_reuse: bool = typer.Option(True, help="Compute each shared few-shot prefix once"),
    packed: bool = typer.Option(True, help="Packed forward for Llama-family models on CPU (off: transformers')"),
    recheck_margin: float = typer.Option(0.05, help="bf16/fp16: rescore in float32 answers whose top two logits are closer (0: off)"),
    max_length: int | None = typer.Option(None, help="Context limit for prompts (default: the model's)"),
    out_dir: Path | None = typer.Option(None, "--out", help="Result folder (default results/<model>/)"),
    db: Path | None = typer.Option(None, help="SQLite store (default ~/.lmboard/lmboard.db)"),
    show_subcategories: bool = typer.Option(False, "--subcategories", help="Show subcategories"),
    show_subjects: bool = typer.Option(False, "--per-subject", help="Show subjects"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table"),
    # classification (--task classify)
    text_column: str = typer.Option("text", help="classify: the text column"),
    label_column: str = typer.Option("label", help="classify: the label column"),
    labels: str | None = typer.Option(None, help='classify: "0=负面,1=正面"'),
    template: str | None = typer.Option(None, help="classify: prompt template with {labels} and {text}"),
    train: Path | None = typer.Option(None, help="classify: training file for the shots"),
    split: float | None = typer.Option(None, help="classify: train share when splitting --data (e.g. 0.8)"),
    test_size: int | None = typer.Option(None, help="classify: cap the test split at N rows"),
    seed: int = typer.Option(123, help="classify: split and shot seed"),
    by: str = typer.Option("loglik", help="classify: loglik or generate"),
    normalize: str = typer.Option("none", help="classify: none, tokens or chars"),
) -> None:
    """Score a model on an exam (MMLU, CMMLU, C-Eval) or a classification task."""
    from lmboard.store import Store

    if shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {shots})")
    if letter_token not in ("spaced", "bare"):
        raise UsageError(f"--letter-token must be spaced or bare (got {letter_token!r})")
    spec = model_spec(model, dtype)
    engine = EngineSettings(parse_budget(batch_tokens), prefix_reuse, max_length, packed, recheck_margin)
    if task == "classify":
        from lmboard.cli_classify import run_classify

        run_classify(locals(), spec, engine)
        return
    from lmboard.report.exam import ensure_writable, write_exam_files
    from lmboard.report.tables import exam_table
    from lmboard.tasks.exam import get_task
    from lmboard.tasks.exam_run import load_questions, run_exam

    if spec.backend != "hf":
        raise UsageError(f"--task {task} scores next-token logits: use a local model (hf:... or an alias), "
                         f"not {spec.backend}:")
    exam = get_task(task)
    data = data or builtin_data(task)
    settings = ExamSettings(task, data, split_list(subjects), limit, shots, letter_token, chat, engine)
    loaded = load_questions(exam, settings)  # bad data fails here, before the model loads
    out_path = out_dir or Path("results") / spec.display_name
    ensure_writable(out_path)
    store = Store(db)
    lm = load_lm(spec, quiet)
    with progress_bar(f"{task} {spec.display_name}", quiet) as update:
        result = run_exam(exam, lm, settings, store, progress=update, loaded=loaded)
    acc = write_exam_files(result, exam, data, out_path)
    store.finish_run(result.run_id, {k: v for k, v in acc.items() if k != "subjects"})
    if not quiet:
        out.print(exam_table(result.model, acc, show_subcategories, show_subjects))
        out.print(f"results: {out_path}  (run {result.run_id}{', resumed' if result.resumed else ''})")


def _register_commands() -> None:
    """Commands defined in their own modules (kept apart to keep this file small)."""
    import importlib

    for name in ("lmboard.cli_generate", "lmboard.cli_judge", "lmboard.cli_speed"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


# Options that take several values (`--models a b c`): typer wants the option repeated.
MULTI = ("--models", "-m", "--outputs", "--annotations", "--plugins")


def expand_multi(argv: list[str]) -> list[str]:
    """`--outputs a.json b.json` -> `--outputs a.json --outputs b.json`."""
    out: list[str] = []
    current: str | None = None
    for a in argv:
        if a.startswith("-"):
            current = a if a in MULTI else None
            out.append(a)
        elif current is not None and out[-1] != current:
            out += [current, a]
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    _register_commands()
    argv = expand_multi(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except cx.NoArgsIsHelpError as e:
        # typer's no_args_is_help raises after printing nothing in non-standalone mode
        out.print(e.ctx.get_help() if e.ctx else str(e), markup=False, highlight=False)
        return 0
    except cx.UsageError as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted: results so far are in the store; the same command resumes", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return e.exit_code


if __name__ == "__main__":  # prefer `python -m lmboard`: commands register on lmboard.cli's app
    from lmboard.cli import main as _main

    sys.exit(_main())
