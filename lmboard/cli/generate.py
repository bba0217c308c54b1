"""`lmboard generate`: answer one prompt set with several models, in alpaca_eval's format."""

from __future__ import annotations

from pathlib import Path

import typer

from lmboard.cli.common import (
    DB,
    GEN_OPTS,
    QUIET,
    THREADS,
    check_out_dir,
    check_positive,
    generation_settings,
    load_lm,
    model_spec,
    open_store,
    out,
    progress_bar,
)
from lmboard.errors import UsageError
from lmboard.parallel import world


def generate_cmd(
    models: list[str] = typer.Option(..., "--models", "-m", help="Model specs (repeat or space-separate)"),
    prompts: Path = typer.Option(..., help="Prompt file: .txt, .jsonl or alpaca_eval .json"),
    out_dir: Path = typer.Option(Path("results/generate"), "--out", help="Output folder"),
    raw: bool = typer.Option(False, "--raw", help="Send plain text, no chat template"),
    batch_size: str | None = typer.Option(None, help="Local models: sequences in flight (continuous) or prompts per "
                                          "batch (static), or auto (from memory): the spec's batch_size="),
    scheduler: str | None = typer.Option(None, help="Local models: continuous (batching per token) or static "
                                         "(fixed batches through transformers' generate): the spec's scheduler="),
    concurrency: int = typer.Option(8, help="Requests in flight for endpoints"),
    plugins: list[Path] = typer.Option([], "--plugins", help="Python files/folders registering inference functions"),
    db: Path | None = DB,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
    max_new_tokens: int = GEN_OPTS["max_new_tokens"],
    temperature: float | None = GEN_OPTS["temperature"],
    top_p: float | None = GEN_OPTS["top_p"],
    top_k: int | None = GEN_OPTS["top_k"],
    repetition_penalty: float | None = GEN_OPTS["repetition_penalty"],
    do_sample: bool | None = GEN_OPTS["do_sample"],
    seed: int = GEN_OPTS["seed"],
    stop: list[str] | None = GEN_OPTS["stop"],
    system: str | None = GEN_OPTS["system"],
) -> None:
    """Answer one prompt set with several models; write alpaca_eval's output.json."""
    from lmboard.models.registry import load_plugin_paths
    from lmboard.tasks.open_ended import load_prompts, run_generation, write_outputs
    from lmboard.text import stable_hash

    settings = generation_settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, do_sample,
                                   seed, stop, system, raw)
    if batch_size not in (None, "auto") and not (batch_size.isdigit() and int(batch_size) > 0):
        raise UsageError(f"--batch-size must be auto or a positive integer (got {batch_size!r})")
    check_positive(concurrency, "--concurrency")
    check_positive(threads, "--threads")
    if plugins:
        load_plugin_paths(plugins)
    items = load_prompts(prompts)
    size = None if batch_size in (None, "auto") else int(batch_size)
    specs = [model_spec(t) for m in models for t in m.split()]
    # --batch-size and --scheduler: the local models' options (endpoints have neither)
    local = {k: v for k, v in (("batch_size", size), ("scheduler", scheduler)) if v is not None}
    specs = [s.with_options("--batch-size/--scheduler", **{k: v for k, v in local.items() if s.has_option(k)})
             for s in specs]
    names = [s.display_name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--models: two models share a name ({', '.join(names)}); add label=NAME to one")
    prompts_id = stable_hash([p.key for p in items])
    main = world().main  # under torchrun, rank 0 alone opens the store and writes files
    if main:
        check_out_dir(out_dir)
    store = open_store(db, quiet) if main else None
    per_model = {}
    for spec in specs:
        lm = load_lm(spec, quiet, threads)
        with progress_bar(f"generate {spec.display_name}", quiet or not main) as update:
            per_model[spec.display_name] = run_generation(lm, items, settings, store, prompts_id, update, concurrency)
        del lm
    if not main:
        return
    write_outputs(out_dir, items, per_model)
    if not quiet:
        out.print(f"{len(items)} prompts x {len(specs)} models -> {out_dir / 'output.json'}")
