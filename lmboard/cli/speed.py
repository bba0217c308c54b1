"""`lmboard speed`: token rate, latency and memory of a local model or an endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmboard.cli.common import (
    DB,
    QUIET,
    THREADS,
    check_out_file,
    check_positive,
    err,
    int_list,
    load_lm,
    model_spec,
    open_store,
    out,
    progress_bar,
)
from lmboard.errors import UsageError
from lmboard.lm import Capability
from lmboard.models.registry import backend_capabilities

BUSY = 0.25  # warn when other processes took more than this share of the CPUs just before a run


def speed_cmd(
    model: str = typer.Argument("smollm2"),
    prompt_tokens: int = typer.Option(256, help="Prompt length in tokens (exact for local models)"),
    new_tokens: int = typer.Option(64, help="Tokens generated per request (exactly, EOS ignored)"),
    batch_sizes: str = typer.Option("1,4,16", help="Local: batch sizes"),
    warmup: int = typer.Option(2, help="Local: warm-up runs per batch size"),
    repeats: int = typer.Option(5, help="Local: measured runs per batch size"),
    concurrency: str = typer.Option("1,4,16", help="Endpoint: requests in flight"),
    request_rate: float | None = typer.Option(None, help="Endpoint: Poisson arrivals per second instead"),
    num_requests: int = typer.Option(32, help="Endpoint: requests per load level"),
    dtype: str | None = typer.Option(None, help="Local: dtype (overrides the spec)"),
    scheduler: str | None = typer.Option(None, help="Local: the generation path timed, as the spec's scheduler= "
                                         "(continuous, or static: transformers' generate)"),
    out_file: Path | None = typer.Option(None, "--out", help="Write the results as JSON"),
    plot_file: Path | None = typer.Option(None, "--plot", help="Write a PNG: throughput and TTFT"),
    db: Path | None = DB,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Measure TTFT, TPOT, throughput and memory the way performance benchmarks do."""
    from lmboard.report.speed import endpoint_table, local_table, plot
    from lmboard.speed.endpoint import LoadSettings
    from lmboard.speed.local import SpeedSettings
    from lmboard.speed.run import run_speed

    if prompt_tokens <= 0 or new_tokens <= 1:
        raise UsageError("--prompt-tokens must be >= 1 and --new-tokens >= 2")
    if warmup < 0 or repeats < 1:
        raise UsageError("--warmup must be >= 0 and --repeats >= 1")
    if request_rate is not None and request_rate <= 0:
        raise UsageError(f"--request-rate must be positive (got {request_rate})")
    check_positive(num_requests, "--num-requests")
    check_positive(threads, "--threads")
    for path, flag in ((out_file, "--out"), (plot_file, "--plot")):
        if path is not None:
            check_out_file(path, flag)
    spec = model_spec(model, dtype, scheduler=scheduler)
    local = Capability.TIMING in backend_capabilities(spec)
    settings = (SpeedSettings(prompt_tokens, new_tokens, int_list(batch_sizes, "--batch-sizes"), warmup, repeats)
                if local else
                LoadSettings(num_requests, int_list(concurrency, "--concurrency"), request_rate, prompt_tokens, new_tokens))
    store = open_store(db, quiet)
    from lmboard import cpu

    busy = min(1.0, cpu.busy_others(0.5) / cpu.available_cores())  # the share of our cores others took
    lm = load_lm(spec, quiet, threads)  # checked: an unreachable endpoint is one line, not a table of errors
    if local and prompt_tokens + new_tokens > lm.max_length:
        raise UsageError(f"--prompt-tokens {prompt_tokens} + --new-tokens {new_tokens} exceed the model's context "
                         f"of {lm.max_length} tokens")
    if busy > BUSY:
        err.print(f"warning: the machine is busy ({busy:.0%} of its CPU time went to other processes just before "
                  "this run): timings will be slower than the model is", markup=False)
    with progress_bar(f"speed {spec.display_name}", quiet) as update:
        record = run_speed(lm, settings, store, update, busy)
    rows = record["results"]
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record, indent=2, default=str))
    if plot_file:
        x_key = "batch_size" if local else "request_rate" if request_rate else "concurrency"
        plot(rows, plot_file, x_key, f"{spec.display_name}: throughput and TTFT")
    if not quiet:
        where = f"({record['provenance'].get('dtype')}, {record['provenance'].get('device')})" if local \
            else f"at {spec.option('base_url')}"
        out.print((local_table if local else endpoint_table)(rows, f"{spec.display_name} {where}"))
