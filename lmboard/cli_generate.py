"""`lmboard generate` and `lmboard chat`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lmboard.cli import app, err, load_lm, model_spec, out, progress_bar
from lmboard.config import GenerationSettings, stable_hash
from lmboard.errors import UsageError


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


@app.command("generate")
def generate_cmd(
    models: list[str] = typer.Option(..., "--models", "-m", help="Model specs (repeat or space-separate)"),
    prompts: Path = typer.Option(..., help="Prompt file: .txt, .jsonl or alpaca_eval .json"),
    out_dir: Path = typer.Option(Path("results/generate"), "--out", help="Output folder"),
    raw: bool = typer.Option(False, "--raw", help="Send plain text, no chat template"),
    batch_size: str = typer.Option("auto", help="Prompts per batch for local models, or auto"),
    concurrency: int = typer.Option(8, help="Requests in flight for endpoints"),
    plugins: list[Path] = typer.Option([], "--plugins", help="Python files/folders registering inference functions"),
    db: Path | None = typer.Option(None, help="SQLite store"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
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
    from lmboard.store import Store
    from lmboard.tasks.open_ended import load_prompts, run_generation, write_outputs

    settings = generation_settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, do_sample,
                                   seed, stop, system, raw)
    if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise UsageError(f"--batch-size must be auto or a positive integer (got {batch_size!r})")
    if plugins:
        load_plugin_paths(plugins)
    items = load_prompts(prompts)
    specs = [model_spec(t) for m in models for t in m.split()]
    names = [s.display_name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--models: two models share a name ({', '.join(names)}); add label=NAME to one")
    prompts_id = stable_hash([p.key for p in items])
    store = Store(db)
    per_model = {}
    for spec in specs:
        lm = load_lm(spec, quiet)
        if hasattr(lm, "concurrency"):
            lm.concurrency = concurrency
        if batch_size != "auto" and hasattr(lm, "gen_batch_size"):
            lm.gen_batch_size = int(batch_size)
        with progress_bar(f"generate {spec.display_name}", quiet) as update:
            per_model[spec.display_name] = run_generation(lm, items, settings, store, prompts_id, update)
        del lm
    write_outputs(out_dir, items, per_model)
    if not quiet:
        out.print(f"{len(items)} prompts x {len(specs)} models -> {out_dir / 'output.json'}")


@app.command("chat")
def chat_cmd(
    model: str = typer.Argument("smollm2"),
    system: str | None = typer.Option(None, help="System prompt"),
    max_new_tokens: int = typer.Option(512),
    temperature: float | None = GEN_OPTS["temperature"],
    do_sample: bool | None = GEN_OPTS["do_sample"],
    seed: int = GEN_OPTS["seed"],
) -> None:
    """Interactive multi-turn chat: /reset, /system TEXT, /exit."""
    lm = load_lm(model_spec(model), quiet=True)
    settings = generation_settings(max_new_tokens, temperature, None, None, None, do_sample, seed, None, None, False)
    if not hasattr(lm, "stream"):
        raise UsageError(f"model {model}: this backend cannot stream a chat")
    history: list[dict[str, str]] = []
    err.print("chat ready: /reset, /system TEXT, /exit", markup=False)
    while True:
        sys.stdout.write("> ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history.clear()
            print("(history cleared)")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; history cleared)")
            continue
        history.append({"role": "user", "content": text})
        msgs = ([{"role": "system", "content": system}] if system else []) + history
        answer = []
        for piece in lm.stream(msgs, settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
            answer.append(piece)
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(answer)})
