"""Token rate of an OpenAI-compatible endpoint: streaming requests under load.

Load is either a fixed number of requests in flight (``concurrency``) or Poisson
arrivals at ``request_rate`` per second. Per request: TTFT (send to first content
chunk), ITL (gaps between later chunks), TPOT ((latency - TTFT) / (output tokens - 1)),
end-to-end latency. Output token counts come from the server's ``usage`` (requested
with stream_options.include_usage); where a server sends none, the chunk count stands
in and the result says so.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lmboard.lm import GenerationSettings, StreamingLM
from lmboard.metrics.latency import summary


@dataclass(frozen=True)
class LoadSettings:
    num_requests: int = 32
    concurrency: tuple[int, ...] = (1, 4, 16)
    request_rate: float | None = None  # Poisson arrivals instead of fixed concurrency
    prompt_tokens: int = 256
    new_tokens: int = 64
    seed: int = 0


def _prompt_text(settings: LoadSettings, i: int) -> str:
    """A deterministic prompt of about prompt_tokens tokens (the server's usage gives the exact count)."""
    rng = random.Random(settings.seed * 100003 + i)
    words = ["alpha", "river", "cloud", "number", "garden", "signal", "paper", "window", "orbit", "mineral"]
    return "Continue this list: " + " ".join(rng.choice(words) for _ in range(max(1, settings.prompt_tokens - 5)))


def one_request(lm: StreamingLM, text: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    chunks: list[float] = []
    usage: dict[str, int] = {}
    settings = GenerationSettings(max_new_tokens=max_tokens, do_sample=False)
    try:
        for _ in lm.stream([{"role": "user", "content": text}], settings, usage):
            chunks.append(time.perf_counter())
    except Exception as e:  # a failed request counts in the error rate
        return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}", "latency": time.perf_counter() - t0}
    end = time.perf_counter()
    if not chunks:
        return {"ok": False, "error": "no content streamed", "latency": end - t0}
    return {
        "ok": True,
        "ttft": chunks[0] - t0,
        "itl": [b - a for a, b in zip(chunks, chunks[1:], strict=False)],
        "latency": end - t0,
        "output_tokens": usage.get("completion_tokens", len(chunks)),
        "prompt_tokens": usage.get("prompt_tokens"),
        "usage_from_server": bool(usage),
    }


def measure_endpoint(lm: StreamingLM, settings: LoadSettings, progress=None) -> list[dict]:
    levels: list[tuple[str, float]] = (
        [("request_rate", settings.request_rate)] if settings.request_rate else
        [("concurrency", c) for c in settings.concurrency]
    )
    rows = []
    total, done = settings.num_requests * len(levels), 0
    lock = threading.Lock()
    for kind, level in levels:
        texts = [_prompt_text(settings, i) for i in range(settings.num_requests)]
        results: list[dict] = []

        def run(text: str, results: list[dict] = results) -> None:
            nonlocal done
            r = one_request(lm, text, settings.new_tokens)
            with lock:
                results.append(r)
                done += 1
                if progress:
                    progress(done, total)

        t0 = time.perf_counter()
        if kind == "concurrency":
            with ThreadPoolExecutor(max_workers=int(level)) as pool:
                list(pool.map(run, texts))
        else:
            rng = random.Random(settings.seed)
            threads = []
            for text in texts:
                th = threading.Thread(target=run, args=(text,))
                th.start()
                threads.append(th)
                time.sleep(rng.expovariate(level))  # Poisson arrivals
            for th in threads:
                th.join()
        wall = time.perf_counter() - t0
        ok = [r for r in results if r["ok"]]
        out_tokens = sum(r["output_tokens"] for r in ok)
        tpot = [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
        itl = [g for r in ok for g in r["itl"]]
        rows.append({
            kind: level,
            "requests": len(results),
            "error_rate": 1 - len(ok) / max(len(results), 1),
            "errors": sorted({r["error"] for r in results if not r["ok"]})[:3],
            "ttft_s": summary([r["ttft"] for r in ok]) if ok else None,
            "itl_s": summary(itl) if itl else None,
            "tpot_s": summary(tpot) if tpot else None,
            "latency_s": summary([r["latency"] for r in ok]) if ok else None,
            "request_throughput_per_s": len(ok) / wall,
            "output_tokens_per_s": out_tokens / wall,
            "output_tokens": out_tokens,
            "usage_from_server": all(r["usage_from_server"] for r in ok) if ok else False,
        })
    return rows

