"""Generation on a loaded model: the static path (batches planned up front, transformers'
``generate`` per batch), a streamed chat answer, and exact work for timing.

The CPU runtime's continuous scheduler is continuous.py and scheduler.py; transformers'
continuous batching is generic.py; runtime.py chooses.

Prompts are rendered with the model's chat template (add_generation_prompt=True) unless
raw, sorted longest first, batched with LEFT padding and an attention mask (right
padding would put pad tokens between the prompt and the answer), and generated with
every end-of-turn id as a stop. The answer excludes the prompt and special tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lmboard.lm import GenerationSettings, GenRequest, GenResult
from lmboard.models.engine import transformers_api
from lmboard.models.engine.batching import pack, run_with_backoff
from lmboard.models.engine.genbase import effective_settings, finish_answer, generation_config, render
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.prefill import applies as unpadded_applies
from lmboard.models.engine.prefill import padded_cache
from lmboard.models.engine.sampling import SamplingConfig
from lmboard.models.engine.scheduler import DecodeJob, SchedulerSettings, run_continuous

# Tokens of work (prompt + new tokens, summed over the batch) per generate call on a
# CPU; on this class of machine decode throughput stops growing past ~32 sequences.
CPU_GEN_BUDGET = 32 * 640
MAX_BATCH = 64


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
            cache = {transformers_api.cache_name(lm.model): padded_cache(lm, rows)[0]} if unpadded_applies(lm, rows) else {}
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
    """One chat answer, streamed piece by piece (for `lmboard chat`). Left early (the
    reader stops, or Ctrl-C reaches it), the answer stops at its next token."""
    import torch

    text, special = render(lm, GenRequest("chat", tuple(messages)), settings)
    x = lm.tokenizer(text, add_special_tokens=special, return_tensors="pt").to(lm.device)
    streamer = transformers_api.text_streamer(lm.tokenizer)
    gc = generation_config(lm, settings)
    torch.manual_seed(settings.seed)
    stop = threading.Event()

    def work() -> None:
        with torch.inference_mode():
            lm.model.generate(**x, generation_config=gc, streamer=streamer,
                              stopping_criteria=transformers_api.stop_when(stop))

    th = threading.Thread(target=work, daemon=True)
    th.start()
    try:
        yield from streamer
    finally:
        stop.set()
        th.join()


def prefill_ids(lm: LocalLM, pm: Any, ids: Sequence[Sequence[int]]) -> None:
    """One forward over equal-length prompts, keys and values kept (timed alone by
    ``lmboard speed``), on the forward that ``decode_exactly`` prefills with: the packed
    model ``pm``, or transformers'. (On transformers' forward while decoding ran packed,
    the prefill timed alone took longer than the first token of a whole generation.)"""
    import torch

    with torch.inference_mode():
        if pm is not None:
            from lmboard.models.engine.packed import Segment

            pm.forward([Segment(list(r), None) for r in ids], kv_out=True)
            return
        x = torch.tensor([list(r) for r in ids], device=lm.device)
        lm.model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True, logits_to_keep=1)


class _StepStreamer:
    """transformers' streamer protocol: the prompt first, then each step's tokens."""

    def __init__(self, on_step: Callable[[], None]):
        self.on_step, self.seen_prompt = on_step, False

    def put(self, value: Any) -> None:
        if self.seen_prompt:
            self.on_step()
        self.seen_prompt = True

    def end(self) -> None:
        pass


def decode_exactly(lm: LocalLM, pm: Any, ids: Sequence[Sequence[int]], new_tokens: int,
                   on_step: Callable[[], None]) -> list[list[int]]:
    """Greedy, exactly ``new_tokens`` per row (end-of-sequence ignored): on the packed
    model ``pm``'s continuous scheduler (one token per step: no speculation), or
    transformers' ``generate`` without it. ``on_step`` after each step."""
    import torch

    rows = [list(r) for r in ids]
    if pm is None:
        x = torch.tensor(rows, device=lm.device)
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                do_sample=False, streamer=_StepStreamer(on_step), eos_token_id=None,
                pad_token_id=lm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                generation_config=lm.model.generation_config)
        return out[:, x.shape[1]:].tolist()
    job = DecodeJob(rows, [str(i) for i in range(len(rows))], new_tokens, SamplingConfig(False))
    sched = SchedulerSettings(max_batch=len(rows), prefill_tokens=sum(map(len, rows)),
                              on_tokens=lambda n: on_step(), speculate=False)
    with torch.inference_mode():
        new = {f.index: f.tokens for f in run_continuous(pm, lm.model.get_output_embeddings(), job, sched)}
    return [new[i] for i in range(len(rows))]
