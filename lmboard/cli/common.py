"""What the commands share: consoles, the progress bar, text -> typed values, model loading.

Text such as ``hf:PATH,dtype=bfloat16``, ``1,4,16`` or ``auto`` becomes typed values
here (and in models/spec.py for model specs), never in the library.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from lmboard.errors import UsageError
from lmboard.lm import LM, Capability, GenerationSettings, ModelSpec
from lmboard.models.registry import load_model
from lmboard.models.spec import parse_model_spec

# Piped output is not cut at 80 columns: tables and help are as wide as they need to be
# (up to WIDE) when nobody's terminal sets the width.
WIDE = 200
err = Console(stderr=True, width=None if sys.stderr.isatty() else WIDE)
out = Console(width=None if sys.stdout.isatty() else WIDE)

Update = Callable[..., None]  # update(done, total[, status])


def builtin_data(task: str) -> Path:
    """The small samples the package ships for the quickstart."""
    return Path(str(resources.files("lmboard.data").joinpath(task)))


def model_spec(text: str, dtype: str | None = None, **options: object) -> ModelSpec:
    """A model spec from the command line; ``--dtype`` and the flags that stand for a
    backend option (``--scheduler`` for ``scheduler=``...) override the spec's own. A flag
    left unset changes nothing; one the backend does not have is a one-line error."""
    spec = parse_model_spec(text)
    if dtype:
        spec = spec.with_options("--dtype", dtype=dtype)
    for name, value in options.items():
        if value is not None:
            spec = spec.with_options(f"--{name.replace('_', '-')}", **{name: value})
    return spec


def choose_threads(threads: int | None) -> tuple[int, str | None]:
    """Torch's intra-op threads: ``--threads``, else one for each core this process may use
    that other processes leave idle (lmboard/cpu.py: a thread waiting at a barrier for a
    core another process holds makes the whole run crawl); under torchrun the node's cores
    are split between its ranks."""
    from lmboard import cpu
    from lmboard.parallel import threads_per_rank, world

    n, note = threads, None
    if n is None:
        cores = cpu.available_cores()
        n = threads_per_rank(cores)
        if not world().parallel:  # ranks measure each other as busy: they split the node instead
            busy = cpu.busy_others()
            n = cpu.idle_cores(cores, busy)
            if n < cores:
                note = (f"note: other processes keep {busy:.1f} of this process's {cores} cores busy: running on "
                        f"{n} thread{'s' if n > 1 else ''} (--threads N to choose)")
    if n < 1:
        raise UsageError(f"--threads must be >= 1 (got {n})")
    import torch

    torch.set_num_threads(n)
    return n, note


def load_lm(spec: ModelSpec, quiet: bool, threads: int | None = None, needs: Sequence[Capability] = ()) -> LM:
    """The model, loaded and checked: an endpoint that does not answer is one line here,
    before any work (not one retried request after another). ``needs``: what the job will
    ask of it, checked by the backend's ``check_for`` where it has one (a server's probe)."""
    if quiet or not err.is_terminal:  # transformers' GGUF conversion and weight-loading bars (not in a log)
        os.environ["TQDM_DISABLE"] = "1"
        if "transformers" in sys.modules:  # already imported: the variable is read at import
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    _, note = choose_threads(threads)
    lm = load_model(spec)
    lm.check()
    check_for = getattr(lm, "check_for", None)
    if needs and check_for is not None:
        check_for(frozenset(needs))
    if note and not quiet:  # after the checks: a bad spec's error stays one line
        err.print(note, markup=False, highlight=False)
    if not quiet and Capability.TIMING in lm.capabilities:  # weights in this process: its peak matters
        _PEAK_LINE[0] = True
    return lm


_PEAK_LINE = [False]


def forget_peak_line() -> None:
    _PEAK_LINE[0] = False


def say_peak_memory() -> None:
    """At the end of a command that ran a local model (not --quiet): the process's peak memory."""
    if _PEAK_LINE[0]:
        from lmboard.peak import describe, peak_memory

        err.print(describe(peak_memory()), markup=False, highlight=False)


def open_store(db: Path | None, quiet: bool):
    """The store, checked before any work; its notes (resumed, new run, waiting) on stderr."""
    from lmboard.store import Store

    return Store(db, notify=None if quiet else (lambda note: err.print(note, markup=False, highlight=False)))


def check_positive(value: int | float | None, flag: str, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum:g} (got {value})")


def check_out_dir(path: Path, flag: str = "--out") -> None:
    """A folder the results can go to: made now, so a bad path fails before the work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own: ranks under torchrun check the same folder at once
        # (one shared name let one rank delete the other's probe: "No such file")
        fd, probe = tempfile.mkstemp(prefix=".lmboard-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{flag}: cannot write to {path} ({e.strerror or e})") from e


def check_out_file(path: Path, flag: str) -> None:
    """A file the results can be written to later (its folder exists or can be made)."""
    if path.is_dir():
        raise UsageError(f"{flag}: {path} is a folder, not a file")
    check_out_dir(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag}: cannot write to {path} (permission denied)")


def parse_budget(text: str | None) -> int | None:
    """--batch-tokens: auto or unset (None: the largest that fits), or a positive integer."""
    if text is None or text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise UsageError(f"--batch-tokens must be auto or a positive integer (got {text!r})")
    return n


def parse_margin(text: str | None) -> float | None:
    """--recheck-margin: auto or unset (None: the backend's own rule), or a number >= 0 (0: off)."""
    if text is None or text == "auto":
        return None
    try:
        m = float(text)
    except ValueError:
        m = -1.0
    if not m >= 0:
        raise UsageError(f"--recheck-margin must be auto or a number >= 0 (got {text!r})")
    return m


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
    check_positive(top_k, "--top-k")
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise UsageError(f"--repetition-penalty must be positive (got {repetition_penalty})")
    return GenerationSettings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
        repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()), system=system, raw=raw,
    )


THREADS = typer.Option(None, "--threads", help="CPU threads for the model (default: the cores this process may use)")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or table")
DB = typer.Option(None, "--db", help="SQLite store (default $LMBOARD_DB or ~/.lmboard/lmboard.db)")

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


class LogLines:
    """Progress as plain lines, for a log (stderr not a terminal: nohup, Slurm, CI): one
    when the work starts, then one every ``LMBOARD_PROGRESS_EVERY`` seconds (default 30)
    while it goes on, and one at the end."""

    def __init__(self, description: str):
        import time

        self.description, self.clock = description, time.monotonic
        self.start = self.last = self.clock()
        self.every = float(os.environ.get("LMBOARD_PROGRESS_EVERY", "30"))
        self.done, self.total, self.status = 0, 0, ""
        self.said: tuple | None = None  # what the last line said

    def __call__(self, done: int, total: int, status: str = "") -> None:
        self.done, self.total, self.status = done, total, status
        if self.said is None or self.clock() - self.last >= self.every:
            self.line()

    def line(self) -> None:
        """A line, unless it would say what the last one said."""
        if self.said == (self.done, self.total, self.status):
            return
        now = self.clock()
        elapsed, share = now - self.start, self.done / self.total if self.total else 0.0
        eta = f", about {elapsed / share - elapsed:.0f} s left" if 0 < share < 1 else ""
        err.print(f"{self.description}: {self.done}/{self.total or '?'} ({share:.0%}) after {elapsed:.0f} s{eta}"
                  + (f"; {self.status}" if self.status else ""), markup=False, highlight=False, soft_wrap=True)
        self.last, self.said = now, (self.done, self.total, self.status)


@contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Update]:
    """Yields ``update(done, total, status="")``: a rich progress bar on stderr, or lines for
    a log where stderr is not a terminal; nothing with --quiet."""
    if quiet:
        yield lambda done, total, status="": None
        return
    if not err.is_terminal:
        lines = LogLines(description)
        yield lines
        if lines.total:
            lines.line()  # the end
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[status]}"), console=err, transient=False) as p:
        task = p.add_task(description, total=None, status="")

        def update(done: int, total: int, status: str = "") -> None:
            p.update(task, completed=done, total=total, status=status)

        yield update


# Options that take several values (`--models a b c`): typer wants the option repeated.
MULTI = ("--models", "-m", "--outputs", "--annotations", "--plugins", "--import")


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
