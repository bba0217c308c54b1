"""Token rate of a model that does exact work on token ids (Capability.TIMING: the hf
backend's runtime, as ``lmboard generate`` runs it).

Each measurement generates exactly ``new_tokens`` tokens greedily from synthetic prompts
of exactly ``prompt_tokens`` tokens (end-of-sequence ignored), after warm-up runs,
``repeats`` times per batch size. Every step is timestamped as the backend produces it;
device work is synchronized before each clock read.

Definitions (per request; the README's glossary has them all):
- TTFT: start of generate() to the first new token (prefill + one step);
- TPOT: (latency - TTFT) / (n - 1);
- ITL: the mean gap between successive tokens, measured;
- decode tokens/s: batch x (n - 1) / (latency - TTFT);
- prefill tokens/s: batch x prompt tokens / prefill time (one forward, timed apart).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

from lmboard.lm import TimingLM
from lmboard.metrics.latency import summary


@dataclass(frozen=True)
class SpeedSettings:
    prompt_tokens: int = 256
    new_tokens: int = 64
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    warmup: int = 2
    repeats: int = 5
    seed: int = 0


def synthetic_prompts(lm: TimingLM, n_tokens: int, batch: int, seed: int) -> list[list[int]]:
    """Deterministic prompts of exactly n_tokens ids: ordinary (non-special) tokens drawn
    with a seeded generator, one row per sequence."""
    import random

    vocab = [i for i in lm.plain_token_ids() if i < 32000][200:]
    rng = random.Random(seed)
    return [[rng.choice(vocab) for _ in range(n_tokens)] for _ in range(batch)]


@dataclass
class Run:
    ttft: float
    latency: float
    itl: list[float] = field(default_factory=list)
    tokens: int = 0


def _timed(lm: TimingLM, ids: list[list[int]], new_tokens: int) -> tuple[float, Run]:
    """(prefill time, one timed generation of exactly ``new_tokens``)."""
    lm.synchronize()
    t0 = time.perf_counter()
    lm.prefill(ids)
    lm.synchronize()
    t_prefill = time.perf_counter() - t0
    times: list[float] = []

    def step() -> None:
        lm.synchronize()
        times.append(time.perf_counter())

    t0 = time.perf_counter()
    out = lm.decode_exactly(ids, new_tokens, step)
    lm.synchronize()
    t_end = time.perf_counter()
    n = len(out[0])
    if n != new_tokens:
        raise RuntimeError(f"generated {n} tokens, expected exactly {new_tokens}")
    return t_prefill, Run(times[0] - t0, t_end - t0, [b2 - a for a, b2 in zip(times, times[1:], strict=False)], n)


def _row(b: int, settings: SpeedSettings, runs: list[Run], prefill_s: list[float], memory: dict) -> dict:
    n = settings.new_tokens
    lat = [r.latency for r in runs]
    tpot = [(r.latency - r.ttft) / (n - 1) for r in runs] if n > 1 else [float("nan")]
    itl = [statistics.fmean(r.itl) for r in runs if r.itl]
    return {
        "batch_size": b,
        "prompt_tokens": settings.prompt_tokens,
        "new_tokens": n,
        "prefill_latency_s": summary(prefill_s),
        "prefill_tokens_per_s": b * settings.prompt_tokens / statistics.median(prefill_s),
        "ttft_s": summary([r.ttft for r in runs]),
        "tpot_s": summary(tpot),
        "itl_s": summary(itl) if itl else None,
        "latency_s": summary(lat),
        "decode_tokens_per_s": b * (n - 1) / statistics.median([r.latency - r.ttft for r in runs]),
        "throughput_tokens_per_s": b * n / statistics.median(lat),
        **memory,
    }


def measure_local(lm: TimingLM, settings: SpeedSettings, progress=None) -> list[dict]:
    rows = []
    steps, done = len(settings.batch_sizes) * (settings.warmup + settings.repeats), 0
    for b in settings.batch_sizes:
        ids = synthetic_prompts(lm, settings.prompt_tokens, b, settings.seed)
        lm.memory(reset=True)
        runs: list[Run] = []
        prefill_s: list[float] = []
        for rep in range(settings.warmup + settings.repeats):
            t_prefill, run = _timed(lm, ids, settings.new_tokens)
            if rep >= settings.warmup:
                runs.append(run)
                prefill_s.append(t_prefill)
            done += 1
            if progress:
                progress(done, steps)
        rows.append(_row(b, settings, runs, prefill_s, lm.memory()))
    return rows


def hardware(provenance: dict) -> dict:
    """The machine, and what the backend says of its threads and GPU."""
    import platform

    info = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": provenance.get("threads"),
        "load_average_1m": os.getloadavg()[0],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    if provenance.get("gpu"):
        info["gpu"] = provenance["gpu"]
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()
