"""What the commands share: consoles, the progress bar, text -> typed values, model loading.

Text such as ``hf:PATH,dtype=bfloat16``, ``1,4,16`` or ``auto`` becomes typed values
here (and in models/spec.py for model specs), never in the library.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from lmboard.errors import UsageError
from lmboard.lm import LM, GenerationSettings, ModelSpec
from lmboard.models.registry import load_model
from lmboard.models.spec import parse_model_spec

err = Console(stderr=True)
out = Console()

Update = Callable[[int, int], None]


def builtin_data(task: str) -> Path:
    """The small samples the package ships for the quickstart."""
    return Path(str(resources.files("lmboard.data").joinpath(task)))


def model_spec(text: str, dtype: str | None = None) -> ModelSpec:
    """A model spec from the command line; ``--dtype`` overrides the spec's own."""
    spec = parse_model_spec(text)
    return spec.with_options("--dtype", dtype=dtype) if dtype else spec


def load_lm(spec: ModelSpec, quiet: bool) -> LM:
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF conversion bar
    return load_model(spec)


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


def int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        vals = ()
    if not vals or any(v <= 0 for v in vals):
        raise UsageError(f"{flag} must be positive integers separated by commas (got {text!r})")
    return vals


def parse_labels(text: str | None) -> dict[str, str]:
    """``0=负面,1=正面`` -> {"0": "负面", "1": "正面"}."""
    if not text:
        raise UsageError('--labels is required for --task classify, e.g. --labels "0=负面,1=正面"')
    labels = {}
    for part in text.split(","):
        if "=" not in part:
            raise UsageError(f"--labels: expected value=name, got {part!r}")
        k, v = part.split("=", 1)
        labels[k.strip()] = v.strip()
    return labels


def generation_settings(
    max_new_tokens: int, temperature: float | None, top_p: float | None, top_k: int | None,
    repetition_penalty: float | None, do_sample: bool | None, seed: int, stop: list[str] | None,
    system: str | None, raw: bool,
) -> GenerationSettings:
    if max_new_tokens <= 0:
        raise UsageError(f"--max-new-tokens must be positive (got {max_new_tokens})")
    if temperature is not None and temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (got {temperature})")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {top_p})")
    return GenerationSettings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
        repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()), system=system, raw=raw,
    )


GEN_OPTS = dict(
    max_new_tokens=typer.Option(512, help="New tokens per answer (transformers' default of 20 is never used)"),
    temperature=typer.Option(None, help="Sampling temperature (default: the model's generation_config)"),
    top_p=typer.Option(None, help="Nucleus sampling"),
    top_k=typer.Option(None, help="Top-k sampling"),
    repetition_penalty=typer.Option(None, help="Repetition penalty"),
    do_sample=typer.Option(None, "--do-sample/--greedy", help="Sample, or decode greedily"),
    seed=typer.Option(0, help="Seed for sampling"),
    stop=typer.Option(None, "--stop", help="Stop string (repeatable)"),
    system=typer.Option(None, help="System prompt"),
)


@contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Update]:
    """Yields ``update(done, total)``; a rich progress bar on stderr unless --quiet."""
    if quiet:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as p:
        task = p.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            p.update(task, completed=done, total=total)

        yield update


# Options that take several values (`--models a b c`): typer wants the option repeated.
MULTI = ("--models", "-m", "--outputs", "--annotations", "--plugins")


def expand_multi(argv: list[str]) -> list[str]:
    """`--outputs a.json b.json` -> `--outputs a.json --outputs b.json`."""
    expanded: list[str] = []
    current: str | None = None
    for a in argv:
        if a.startswith("-"):
            current = a if a in MULTI else None
            expanded.append(a)
        elif current is not None and expanded[-1] != current:
            expanded += [current, a]
        else:
            expanded.append(a)
    return expanded
