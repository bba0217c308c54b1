"""`lmboard speed`: token rate, latency and memory of a local model or an endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from lmboard.cli import app, load_lm, model_spec, out, progress_bar
from lmboard.config import stable_hash
from lmboard.errors import UsageError


def int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        vals = ()
    if not vals or any(v <= 0 for v in vals):
        raise UsageError(f"{flag} must be positive integers separated by commas (got {text!r})")
    return vals


def _ms(d: dict | None, key: str = "median") -> str:
    return "-" if not d else f"{d[key] * 1000:.1f}"


def local_table(rows: list[dict], title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in ("batch", "prefill tok/s", "TTFT ms (p50/p90)", "TPOT ms", "decode tok/s", "latency s (p50/p99)", "peak RSS MB"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["batch_size"]), f"{r['prefill_tokens_per_s']:.0f}",
                  f"{_ms(r['ttft_s'])}/{_ms(r['ttft_s'], 'p90')}", _ms(r["tpot_s"]), f"{r['decode_tokens_per_s']:.1f}",
                  f"{r['latency_s']['median']:.2f}/{r['latency_s']['p99']:.2f}", f"{r['peak_rss_mb']:.0f}")
    return t


def endpoint_table(rows: list[dict], title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in ("load", "req/s", "out tok/s", "TTFT ms (p50/p99)", "ITL ms", "TPOT ms", "latency s (p50/p99)", "errors"):
        t.add_column(c, justify="right")
    for r in rows:
        load = f"c={r['concurrency']}" if "concurrency" in r else f"rate={r['request_rate']}/s"
        lat = r["latency_s"]
        t.add_row(load, f"{r['request_throughput_per_s']:.2f}", f"{r['output_tokens_per_s']:.1f}",
                  f"{_ms(r['ttft_s'])}/{_ms(r['ttft_s'], 'p99')}", _ms(r["itl_s"]), _ms(r["tpot_s"]),
                  "-" if not lat else f"{lat['median']:.2f}/{lat['p99']:.2f}", f"{r['error_rate']:.0%}")
    return t


def plot(rows: list[dict], path: Path, x_key: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("--plot needs matplotlib: pip install matplotlib") from e
    xs = [r[x_key] for r in rows]
    tput = [r.get("decode_tokens_per_s") or r.get("output_tokens_per_s") for r in rows]
    ttft = [(r["ttft_s"] or {}).get("median", float("nan")) * 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, tput, "o-", color="tab:blue")
    ax.set_xlabel(x_key.replace("_", " "))
    ax.set_ylabel("output tokens/s", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax2 = ax.twinx()
    ax2.plot(xs, ttft, "s--", color="tab:red")
    ax2.set_ylabel("TTFT (ms, median)", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command("speed")
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
    out_file: Path | None = typer.Option(None, "--out", help="Write the results as JSON"),
    plot_file: Path | None = typer.Option(None, "--plot", help="Write a PNG: throughput and TTFT"),
    db: Path | None = typer.Option(None, help="SQLite store"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Measure TTFT, TPOT, throughput and memory the way performance benchmarks do."""
    from lmboard.speed.local import SpeedSettings, hardware, measure_local
    from lmboard.store import Store

    if prompt_tokens <= 0 or new_tokens <= 1:
        raise UsageError("--prompt-tokens must be >= 1 and --new-tokens >= 2")
    if warmup < 0 or repeats < 1:
        raise UsageError("--warmup must be >= 0 and --repeats >= 1")
    spec = model_spec(model, dtype)
    if spec.backend == "openai":
        from lmboard.speed.endpoint import LoadSettings, measure_endpoint

        if request_rate is not None and request_rate <= 0:
            raise UsageError(f"--request-rate must be positive (got {request_rate})")
        settings = LoadSettings(num_requests, int_list(concurrency, "--concurrency"), request_rate, prompt_tokens,
                                new_tokens)
        lm = load_lm(spec, quiet)
        lm.check_reachable()  # an unreachable endpoint is one line, not a table of errors
        with progress_bar(f"speed {spec.display_name}", quiet) as update:
            rows = measure_endpoint(lm, settings, update)
        x_key, kind = ("request_rate" if request_rate else "concurrency"), "endpoint"
        table = endpoint_table(rows, f"{spec.display_name} at {spec.base_url}")
    else:
        settings = SpeedSettings(prompt_tokens, new_tokens, int_list(batch_sizes, "--batch-sizes"), warmup, repeats)
        lm = load_lm(spec, quiet)
        with progress_bar(f"speed {spec.display_name}", quiet) as update:
            rows = measure_local(lm, settings, update)
        x_key, kind = "batch_size", "local"
        table = local_table(rows, f"{spec.display_name} ({lm.dtype_name}, {lm.device})")
    record = {
        "kind": kind,
        "model": spec.display_name,
        "settings": settings.__dict__,
        "results": rows,
        "hardware": hardware(),
        "provenance": lm.info(),
        "time": time.time(),
    }
    store = Store(db)
    run_id = f"speed-{stable_hash([spec.canonical(), settings.__dict__, record['time']], 12)}"
    store.open_run(run_id, "speed", spec.display_name, {"model": spec.canonical(), "settings": settings.__dict__},
                   record["provenance"])
    store.finish_run(run_id, {"results": rows, "hardware": record["hardware"]})
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record, indent=2, default=str))
    if plot_file:
        plot(rows, plot_file, x_key, f"{spec.display_name}: throughput and TTFT")
    if not quiet:
        out.print(table)
