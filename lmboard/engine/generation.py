"""Generation: one entry point for every model, and batched generation for local ones.

Local models generate with continuous batching (scheduler.py, on the packed forward)
where the packed forward runs the model; ``scheduler="static"`` (and models it does not
run) take the static path below: batches planned up front, ``model.generate`` per batch.

``generate`` and ``stream`` take any model: a local one (Capability.LOGITS) runs here,
an endpoint or a plugin answers itself (Capability.GENERATE / STREAM); a model that can
do neither is a one-line error naming the capability.

Local prompts are rendered with the model's chat template (add_generation_prompt=True)
unless raw, sorted longest first, batched with LEFT padding and an attention mask (right
padding would put pad tokens between the prompt and the answer), and generated with
every end-of-turn id as a stop. The answer excludes the prompt and special tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lmboard.engine import transformers_api
from lmboard.engine.batching import pack, run_with_backoff
from lmboard.engine.continuous import continuous_groups, generate_continuous
from lmboard.engine.genbase import effective_settings, finish_answer, generation_config, render
from lmboard.engine.packed import packed_for
from lmboard.engine.prefill import applies as unpadded_applies
from lmboard.engine.prefill import padded_cache
from lmboard.engine.sampling import SamplingConfig
from lmboard.engine.scheduler import DecodeJob, SchedulerSettings, run_continuous
from lmboard.lm import (
    LM,
    Capability,
    GeneratingLM,
    GenerationSettings,
    GenRequest,
    GenResult,
    LocalLM,
    StreamingLM,
    capability_error,
)

# Tokens of work (prompt + new tokens, summed over the batch) per generate call on a
# CPU; on this class of machine decode throughput stops growing past ~32 sequences.
CPU_GEN_BUDGET = 32 * 640
MAX_BATCH = 64


SCHEDULERS = ("continuous", "static")


def generate(lm: LM, requests: Sequence[GenRequest], settings: GenerationSettings, batch_size: int | None = None,
             concurrency: int = 8, skip: Callable[[str], bool] | None = None,
             scheduler: str = "continuous") -> Iterator[GenResult]:
    """Answers to ``requests`` from any model, yielded as they complete (match by key).
    ``batch_size``: sequences in flight (continuous) or prompts per batch (static) for a
    local model (None: from memory / a token budget); ``concurrency``: requests in flight
    for an endpoint; ``skip``: keys already answered (the static path still plans its
    batches over every request, so a resumed run batches as an uninterrupted one)."""
    if Capability.LOGITS in lm.capabilities:
        yield from generate_batched(lm, requests, settings, batch_size, skip, scheduler)  # type: ignore[arg-type]
    elif Capability.GENERATE in lm.capabilities:
        gen: GeneratingLM = lm  # type: ignore[assignment]
        todo = [r for r in requests if skip is None or not skip(r.key)]
        yield from gen.generate(todo, settings, concurrency)
    else:
        raise capability_error(lm.spec, lm.capabilities, Capability.GENERATE, "generation")


def stream(lm: LM, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
    """One chat answer, piece by piece, from any model that can stream one."""
    if Capability.LOGITS in lm.capabilities:
        yield from stream_one(lm, messages, settings)  # type: ignore[arg-type]
    elif Capability.STREAM in lm.capabilities:
        streaming: StreamingLM = lm  # type: ignore[assignment]
        yield from streaming.stream(messages, settings)
    else:
        raise capability_error(lm.spec, lm.capabilities, Capability.STREAM, "a streamed chat")


def _batches(lm: LocalLM, ids: list[list[int]], settings: GenerationSettings, batch_size: int | None) -> list[list[int]]:
    if batch_size:
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    budget = CPU_GEN_BUDGET if lm.device.type == "cpu" else 64 * 4096
    return pack([len(i) + settings.max_new_tokens for i in ids], budget, max_batch=MAX_BATCH)


def _left_padded(ids: list[list[int]], pad: int):
    import torch

    width = max(len(i) for i in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        x[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return x, mask


def generate_batched(lm: LocalLM, requests: Sequence[GenRequest], settings: GenerationSettings,
                     batch_size: int | None = None, skip: Callable[[str], bool] | None = None,
                     scheduler: str = "continuous", sched: SchedulerSettings | None = None) -> Iterator[GenResult]:
    """Continuous batching where the packed forward runs the model, else static batches."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    pm, _ = packed_for(lm.model, lm.device) if scheduler == "continuous" else (None, None)
    if pm is not None and requests:
        yield from generate_continuous(lm, pm, requests, settings, skip,
                                       sched or SchedulerSettings(max_batch=batch_size))
    else:
        yield from generate_static(lm, requests, settings, batch_size, skip)


def generate_groups(lm: LM, groups: Sequence[tuple[Sequence[GenRequest], GenerationSettings]],
                    skip: Callable[[str], bool] | None = None, concurrency: int = 8,
                    recheck: float = 0.0) -> Iterator[GenResult]:
    """Several request sets, each with its own settings (a routed benchmark's routes).
    Where the continuous scheduler runs the model, the sets that sample alike decode in
    one job: a set's short answers free their slots for the others' long ones, instead
    of each set draining its own batch to a few sequences; shared starts run once, across
    sets too (scheduler.py's trie). Elsewhere each set is one ``generate`` call.

    ``recheck`` (greedy, in a reduced dtype): an answer one of whose decisions came
    within this many logits of a tie (its two best tokens, their logits recomputed in
    float32) is decoded again on the float32 model, so that it is float32's answer."""
    pm = None
    if Capability.LOGITS in lm.capabilities:
        pm, _ = packed_for(lm.model, lm.device)  # type: ignore[attr-defined]
    if pm is None:
        for reqs, settings in groups:
            yield from generate(lm, reqs, settings, concurrency=concurrency, skip=skip)
        return
    yield from continuous_groups(lm, pm, groups, skip, SchedulerSettings(), recheck)  # type: ignore[arg-type]


def generate_static(lm: LocalLM, requests: Sequence[GenRequest], settings: GenerationSettings,
                    batch_size: int | None = None, skip: Callable[[str], bool] | None = None) -> Iterator[GenResult]:
    """Batches planned over every request (longest first); a batch whose requests all
    ``skip`` does not run, a batch with any left runs whole (its composition, and so its
    answers, are those of an uninterrupted run)."""
    import torch

    gc = generation_config(lm, settings)
    eff = effective_settings(gc, settings)
    rendered = [render(lm, r, settings) for r in requests]
    ids = [lm.encode(t, s) for t, s in rendered]
    eos = set(gc.eos_token_id or [])
    results: list[GenResult] = []

    def run(idx: list[int]) -> None:
        rows = [ids[i] for i in idx]
        x, mask = _left_padded(rows, lm.tokenizer.pad_token_id)
        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            # On a CPU the prompts are prefilled without padding (engine/prefill.py), their shared start once.
            cache = {"cache": padded_cache(lm, rows)[0]} if unpadded_applies(lm, rows) else {}
            out = lm.model.generate(input_ids=x.to(lm.device), attention_mask=mask.to(lm.device), generation_config=gc,
                                    stop_strings=list(settings.stop) or None,
                                    tokenizer=lm.tokenizer if settings.stop else None, **cache)
        latency = time.perf_counter() - t0
        for row, i in enumerate(idx):
            text, n, finish = finish_answer(lm, out[row, x.shape[1]:].tolist(), eos, settings)
            results.append(GenResult(requests[i].key, text, rendered[i][0], len(ids[i]), n, latency, finish,
                                     {**eff, "scheduler": "static", "batch_size": len(idx)}))

    for b in _batches(lm, ids, settings, batch_size):
        if skip is not None and all(skip(requests[i].key) for i in b):
            continue
        run_with_backoff(b, run)
        yield from results
        results.clear()


def stream_one(lm: LocalLM, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
    """One chat answer, streamed piece by piece (for `lmboard chat`)."""
    import torch

    text, special = render(lm, GenRequest("chat", tuple(messages)), settings)
    x = lm.tokenizer(text, add_special_tokens=special, return_tensors="pt").to(lm.device)
    streamer = transformers_api.text_streamer(lm.tokenizer)
    gc = generation_config(lm, settings)
    torch.manual_seed(settings.seed)

    def work() -> None:
        with torch.inference_mode():
            lm.model.generate(**x, generation_config=gc, streamer=streamer)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    yield from streamer
    th.join()


def prefill(lm: LocalLM, ids: Any, mask: Any) -> None:
    """One forward over a batch of prompts (timed alone by ``lmboard speed``)."""
    lm.model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)


def generate_exactly(lm: LocalLM, ids: Any, mask: Any, new_tokens: int, streamer: Any,
                     scheduler: str = "continuous") -> Any:
    """Greedy, exactly ``new_tokens`` per row (end-of-sequence ignored), on the engine
    ``lmboard generate`` uses; ``streamer.put`` sees the prompt, then each step's tokens.
    Returns the prompt and new tokens, (rows, prompt + new_tokens)."""
    import torch

    pm, _ = packed_for(lm.model, lm.device) if scheduler == "continuous" else (None, None)
    if pm is None:
        return lm.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            streamer=streamer, eos_token_id=None, pad_token_id=lm.tokenizer.pad_token_id,
            temperature=None, top_p=None, top_k=None, generation_config=lm.model.generation_config,
        )
    rows = ids.tolist()
    streamer.put(ids)
    job = DecodeJob(rows, [str(i) for i in range(len(rows))], new_tokens, SamplingConfig(False))
    sched = SchedulerSettings(max_batch=len(rows), prefill_tokens=sum(map(len, rows)),
                              on_tokens=lambda n: streamer.put(None), speculate=False)
    new = {f.index: f.tokens for f in run_continuous(pm, lm.model.get_output_embeddings(), job, sched)}
    return torch.cat([ids, torch.tensor([new[i] for i in range(len(rows))], device=ids.device)], dim=1)
