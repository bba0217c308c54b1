"""Token rate of a local transformers model, measured on exact work.

Each measurement generates exactly ``new_tokens`` tokens greedily from synthetic prompts
of exactly ``prompt_tokens`` tokens (end-of-sequence ignored: min_new_tokens =
max_new_tokens), after warm-up runs, ``repeats`` times per batch size. A streamer
timestamps every token as generate() produces it; device work is synchronized before
each clock read on a GPU.

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

from lmboard.engine.generation import generate_exactly, prefill
from lmboard.lm import LocalLM
from lmboard.metrics.latency import summary


@dataclass(frozen=True)
class SpeedSettings:
    prompt_tokens: int = 256
    new_tokens: int = 64
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    warmup: int = 2
    repeats: int = 5
    seed: int = 0
    scheduler: str = "continuous"  # the engine timed: lmboard generate's default, or static (transformers' generate)


def synthetic_prompts(tokenizer, n_tokens: int, batch: int, seed: int) -> list[list[int]]:
    """Deterministic prompts of exactly n_tokens ids: ordinary (non-special) tokens drawn
    with a seeded generator, one row per sequence."""
    import random

    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(min(len(tokenizer), 32000)) if i not in special][200:]
    rng = random.Random(seed)
    return [[rng.choice(vocab) for _ in range(n_tokens)] for _ in range(batch)]


class _Clock:
    """A generate() streamer that timestamps each new token."""

    def __init__(self, sync):
        self.sync = sync
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands the streamer the prompt
            self._prompt_seen = True
            return
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Run:
    ttft: float
    latency: float
    itl: list[float] = field(default_factory=list)
    tokens: int = 0


def _timed(lm: LocalLM, ids, mask, new_tokens: int, sync, scheduler: str = "continuous") -> tuple[float, Run]:
    """(prefill time, one timed generation of exactly ``new_tokens``)."""
    import torch

    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        prefill(lm, ids, mask)
        sync()
        t_prefill = time.perf_counter() - t0
        clock = _Clock(sync)
        sync()
        t0 = time.perf_counter()
        out = generate_exactly(lm, ids, mask, new_tokens, clock, scheduler)
        sync()
        t_end = time.perf_counter()
    n = out.shape[1] - ids.shape[1]
    if n != new_tokens:
        raise RuntimeError(f"generated {n} tokens, expected exactly {new_tokens}")
    ts = clock.times
    return t_prefill, Run(ts[0] - t0, t_end - t0, [b2 - a for a, b2 in zip(ts, ts[1:], strict=False)], n)


def _row(b: int, settings: SpeedSettings, runs: list[Run], prefill_s: list[float]) -> dict:
    n = settings.new_tokens
    lat = [r.latency for r in runs]
    tpot = [(r.latency - r.ttft) / (n - 1) for r in runs] if n > 1 else [float("nan")]
    itl = [statistics.fmean(r.itl) for r in runs if r.itl]
    return {
        "batch_size": b,
        "prompt_tokens": settings.prompt_tokens,
        "new_tokens": n,
        "scheduler": settings.scheduler,
        "prefill_latency_s": summary(prefill_s),
        "prefill_tokens_per_s": b * settings.prompt_tokens / statistics.median(prefill_s),
        "ttft_s": summary([r.ttft for r in runs]),
        "tpot_s": summary(tpot),
        "itl_s": summary(itl) if itl else None,
        "latency_s": summary(lat),
        "decode_tokens_per_s": b * (n - 1) / statistics.median([r.latency - r.ttft for r in runs]),
        "throughput_tokens_per_s": b * n / statistics.median(lat),
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_local(lm: LocalLM, settings: SpeedSettings, progress=None) -> list[dict]:
    import torch

    cuda = lm.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    steps, done = len(settings.batch_sizes) * (settings.warmup + settings.repeats), 0
    for b in settings.batch_sizes:
        ids = torch.tensor(synthetic_prompts(lm.tokenizer, settings.prompt_tokens, b, settings.seed), device=lm.device)
        mask = torch.ones_like(ids)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        reset_peak_rss()
        runs: list[Run] = []
        prefill_s: list[float] = []
        for rep in range(settings.warmup + settings.repeats):
            t_prefill, run = _timed(lm, ids, mask, settings.new_tokens, sync, settings.scheduler)
            if rep >= settings.warmup:
                runs.append(run)
                prefill_s.append(t_prefill)
            done += 1
            if progress:
                progress(done, steps)
        row = _row(b, settings, runs, prefill_s)
        if cuda:
            row["max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            row["max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        rows.append(row)
    return rows


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    return vals[3] + vals[4], sum(vals)


def busy_share(cores: int, seconds: float = 0.5) -> float:
    """The share of this process's cores that other processes kept busy over ``seconds``
    (this process sleeps meanwhile); 0 where /proc/stat cannot be read."""
    try:
        idle0, total0 = _cpu_times()
        time.sleep(seconds)
        idle1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return 0.0
    machine = os.cpu_count() or cores
    busy_cpus = (1 - (idle1 - idle0) / max(total1 - total0, 1)) * machine
    return max(0.0, min(1.0, busy_cpus / max(cores, 1)))


def hardware() -> dict:
    import platform

    import torch

    info = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
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
