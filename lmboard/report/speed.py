"""Speed results: terminal tables and the throughput/TTFT plot."""

from __future__ import annotations

from pathlib import Path

from lmboard.errors import UsageError


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
    """Throughput and TTFT against the batch size (or the load), in two panels whose value
    axes start at zero. (One panel with a second axis autoscaled each line to its own
    range: two batch sizes drew both as the same diagonal, whatever the numbers.)"""
    fig = figure(rows, x_key, title)
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def figure(rows: list[dict], x_key: str, title: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("--plot needs matplotlib: pip install matplotlib") from e
    xs = [r[x_key] for r in rows]
    tput = [r.get("decode_tokens_per_s") or r.get("output_tokens_per_s") or 0.0 for r in rows]
    ttft = [(r["ttft_s"] or {}).get("median", float("nan")) * 1000 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    for ax, ys, label, color, fmt in ((left, tput, "output tokens/s", "tab:blue", "{:.0f}"),
                                      (right, ttft, "TTFT, median (ms)", "tab:red", "{:.0f}")):
        ax.plot(xs, ys, "o-", color=color)
        for x, y in zip(xs, ys, strict=True):
            if y == y:  # not NaN
                ax.annotate(fmt.format(y), (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                            fontsize=8)
        ax.set_ylim(bottom=0, top=max([y for y in ys if y == y] or [1]) * 1.2)
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_ylabel(label)
        if len(xs) > 1 and min(xs) > 0:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
