"""`lmboard finetune`: LoRA supervised fine-tuning with exact loss masking, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from lmboard.cli.common import (
    DB,
    QUIET,
    THREADS,
    check_out_dir,
    check_out_file,
    check_positive,
    load_lm,
    model_spec,
    open_store,
    out,
    parse_labels,
    progress_bar,
    split_list,
)
from lmboard.errors import MissingDependency, UsageError

DATA = "Data (prompt/response columns, chat messages, or classification rows)"
TRAIN = "Training"


def finetune_cmd(
    model: str = typer.Argument(..., help="Base model spec: smollm2, hf:PATH[,k=v...]"),
    data: Path = typer.Option(..., help="Training data: JSONL, JSON list or CSV", rich_help_panel=DATA),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the adapter, tokenizer, checkpoints, provenance"),
    template: str | None = typer.Option(None, help="alpaca, chatglm, llama2, chat, raw, or a text with {instruction}/"
                                        "{input} (classification: a text with {text} and {labels})"),
    prompt_column: str = typer.Option("prompt", rich_help_panel=DATA),
    response_column: str = typer.Option("response", rich_help_panel=DATA),
    instruction_column: str | None = typer.Option(None, rich_help_panel=DATA),
    text_column: str = typer.Option("text", help="Classification: the text column", rich_help_panel=DATA),
    label_column: str = typer.Option("label", help="Classification: the label column", rich_help_panel=DATA),
    labels: str | None = typer.Option(None, help='Classification labels "0=负面,1=正面" (as lmboard eval)',
                                      rich_help_panel=DATA),
    split: float | None = typer.Option(None, help="Classification: train on this share of eval's seeded split",
                                       rich_help_panel=DATA),
    seed: int = typer.Option(123, help="Split seed (as lmboard eval --seed)", rich_help_panel=DATA),
    max_length: int = typer.Option(1024, help="Tokens per example; the prompt is cut from the left", rich_help_panel=DATA),
    epochs: float = typer.Option(1.0, rich_help_panel=TRAIN),
    max_steps: int = typer.Option(-1, help="Optimizer steps (overrides --epochs)", rich_help_panel=TRAIN),
    lr: float = typer.Option(2e-4, rich_help_panel=TRAIN),
    batch_size: int = typer.Option(8, help="Examples per batch (grouped by length)", rich_help_panel=TRAIN),
    grad_accum: int = typer.Option(1, help="Batches per optimizer step", rich_help_panel=TRAIN),
    micro_tokens: int | None = typer.Option(None, help="Padded tokens one forward/backward holds: a batch runs in "
                                            "parts of this size, gradients summed (default: from free memory, "
                                            "4096 at most on a CPU)", rich_help_panel=TRAIN),
    warmup: float = typer.Option(0.03, help="Warm-up share of the steps", rich_help_panel=TRAIN),
    lora_r: int = typer.Option(16, rich_help_panel=TRAIN),
    lora_alpha: int = typer.Option(32, rich_help_panel=TRAIN),
    lora_dropout: float = typer.Option(0.0, help="LoRA dropout (off by default: its random masks cost a third "
                                       "of a CPU step)", rich_help_panel=TRAIN),
    lora_targets: str | None = typer.Option(None, help="Module names (default: by architecture)", rich_help_panel=TRAIN),
    train_seed: int = typer.Option(0, help="Seed of the LoRA init, dropout and data order", rich_help_panel=TRAIN),
    save_steps: int = typer.Option(50, help="Checkpoint every N steps (a killed run resumes there)",
                                   rich_help_panel=TRAIN),
    init_adapter: Path | None = typer.Option(None, help="Continue training this adapter (its rank and targets hold)",
                                             rich_help_panel=TRAIN),
    keep_checkpoints: int = typer.Option(2, help="Newest checkpoints kept (0: all)", rich_help_panel=TRAIN),
    dtype: str | None = typer.Option(None, help="auto (bfloat16 where the CPU/GPU computes it), float32, bfloat16"),
    merge: bool = typer.Option(False, "--merge", help="Also write base + adapter as one model in OUT/merged"),
    show: int | None = typer.Option(None, help="Print N tokenized examples, trained tokens marked, and exit"),
    plot: Path | None = typer.Option(None, help="Write the loss curve to this PNG"),
    db: Path | None = DB,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Fine-tune a LoRA adapter; evaluate it with lmboard eval 'MODEL,adapter=OUT'."""
    from lmboard.finetune.data import DataSpec, load_train_data
    from lmboard.finetune.run import FinetuneJob
    from lmboard.finetune.templates import check_template
    from lmboard.finetune.train import LoraSettings, TrainSettings

    spec = model_spec(model, dtype)
    for v, flag in ((max_length, "--max-length"), (batch_size, "--batch-size"), (grad_accum, "--grad-accum"),
                    (lora_r, "--lora-r"), (lora_alpha, "--lora-alpha"), (save_steps, "--save-steps"), (show, "--show"),
                    (micro_tokens, "--micro-tokens")):
        check_positive(v, flag)
    check_positive(keep_checkpoints, "--keep-checkpoints", 0)
    if init_adapter is not None and not (init_adapter / "adapter_config.json").is_file():
        raise UsageError(f"--init-adapter: {init_adapter} holds no adapter (no adapter_config.json)")
    if not 0 <= lora_dropout < 1 or not 0 <= warmup < 1 or lr <= 0 or epochs <= 0:
        raise UsageError("--lora-dropout and --warmup must be in [0, 1), --lr and --epochs positive")
    classify = _classify_settings(labels, template, seed) if labels else None
    if classify is None:
        if split is not None:
            raise UsageError("--split applies to classification data (--labels)")
        template = check_template(template or "alpaca")
    ds = DataSpec(data, prompt_column, response_column, instruction_column, "messages", classify, text_column,
                  label_column, split)
    train_data = load_train_data(ds)  # bad data fails here, before the model loads
    if plot is not None:
        check_out_file(plot, "--plot")
    check_out_dir(out_dir)
    lora = LoraSettings(lora_r, lora_alpha, lora_dropout, split_list(lora_targets))
    ts = TrainSettings(lora, epochs, max_steps, lr, batch_size, grad_accum, warmup, 0.0, train_seed, save_steps,
                       keep_checkpoints, str(init_adapter.resolve()) if init_adapter else None, micro_tokens)
    job = FinetuneJob(ds, "raw" if classify else template, max_length, ts, out_dir, merge, model)
    _run(spec, job, train_data, show, plot, db, quiet, threads)


def _classify_settings(labels: str, template: str | None, seed: int):
    from lmboard.tasks.classify import ClassifySettings

    if template is not None and "{text}" not in template:
        raise UsageError("--template: with --labels the prompt is the one lmboard eval --task classify renders; "
                         "give a text with {text} (and {labels}), as eval's --template")
    return ClassifySettings(parse_labels(labels), template, seed=seed)


def _run(spec, job, train_data, show: int | None, plot: Path | None, db: Path | None, quiet: bool,
         threads: int | None) -> None:
    from lmboard.finetune.run import prepare, run_finetune
    from lmboard.lm import Capability
    from lmboard.models.registry import require_backend

    try:
        import peft  # noqa: F401
    except ImportError as e:
        raise MissingDependency("peft (needed for lmboard finetune)", "peft") from e
    require_backend(spec, Capability.TRAIN, "lmboard finetune (trains the model's weights)")
    lm = load_lm(spec, quiet, threads)
    prepared = prepare(lm, job, train_data)
    if show:
        _show(lm, prepared, show)
        return
    store = open_store(db, quiet)
    with progress_bar(f"finetune {spec.display_name}", quiet) as update:
        record = run_finetune(lm, job, store, lambda d, t, s: update(d, t, s), prepared)
    if plot is not None:
        _plot(record, plot)
    if not quiet:
        out.print(f"adapter: {job.out}  final loss {record.get('final_loss'):.4f}, {record.get('steps')} steps, "
                  f"{record.get('tokens_per_s') or 0:.0f} tokens/s", markup=False)
        if record.get("eval_spec"):
            out.print(f"evaluate: {eval_command(record['eval_spec'], job.data)}", markup=False, soft_wrap=True)


def eval_command(spec: str, data) -> str:
    """The eval of the adapter on what it was trained for: a classification's own task,
    data, labels, template and split (its test side, which training never saw)."""
    import shlex

    cmd = ["lmboard", "eval", spec]
    c = data.classify
    if c is not None:
        cmd += ["--task", "classify", "--data", str(data.path), "--text-column", data.text_column,
                "--label-column", data.label_column, "--labels", ",".join(f"{k}={v}" for k, v in c.labels.items()),
                "--seed", str(c.seed)]
        cmd += ["--split", str(data.split)] if data.split is not None else []
        cmd += ["--template", c.template] if c.template else []
    return " ".join(shlex.quote(x) for x in cmd)


def _show(lm, prepared, n: int) -> None:
    from rich.text import Text

    from lmboard.finetune.masking import describe_example

    data, encoded, counts = prepared
    out.print(f"{len(encoded)} examples ({', '.join(f'{v} {k}' for k, v in {**data.skipped, **counts}.items())}); "
              "trained tokens in [brackets], masked text dim", markup=False)
    for enc in encoded[:n]:
        out.print(f"-- line {enc.line}: {len(enc.input_ids)} tokens, {enc.trained} trained, {enc.cut} cut",
                  markup=False)
        out.print(Text.assemble(*describe_example(lm.trainable()[1], enc)))


def _plot(record: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependency("matplotlib (needed for --plot)", "'lmboard[plot]'") from e
    steps, losses = zip(*record["loss_curve"], strict=True) if record.get("loss_curve") else ((), ())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(f"lmboard finetune {record.get('run_id')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
