"""The generic runtime's generation: transformers' own continuous batching (the manager
behind ``model.generate_batch``, paged attention), for any architecture on any device.

Plain greedy requests (no sampling, repetition penalty or minimum length) go to the
manager, each with its own answer limit; an answer is handed on the moment it finishes.
The manager ignores stop strings: an answer is cut at its first stop string afterwards
(greedy tokens before a stop do not depend on what follows, so the text is the one a
stop would have given; the tokens after it were wasted work). Sampled requests take the
static path (generation.py), whose seeded batches reproduce.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from lmboard.lm import GenerationSettings, GenRequest, GenResult
from lmboard.models.engine.genbase import effective_settings, finish_answer, generation_config, render
from lmboard.models.engine.generation import generate_static
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.prefix_attention import plain_attention

PAGE = 32  # tokens per page of the paged cache
MAX_IN_FLIGHT = 64  # sequences in flight when the caller does not say


def plain_greedy(gc) -> bool:
    return not gc.do_sample and (gc.repetition_penalty in (None, 1.0)) and not gc.min_new_tokens


def generate_cb(lm: LocalLM, groups: Sequence[tuple[Sequence[GenRequest], GenerationSettings]],
                skip: Callable[[str], bool] | None, batch_size: int | None) -> Iterator[GenResult]:
    items = []  # (its group's settings, its generation config, request, prompt text, ids)
    for reqs, st in groups:
        gc = generation_config(lm, st)
        if not plain_greedy(gc):
            yield from generate_static(lm, reqs, st, batch_size, skip)
            continue
        for r in reqs:
            if skip is None or not skip(r.key):
                text, special = render(lm, r, st)
                items.append((st, gc, r, text, lm.encode(text, special)))
    if items:
        yield from _on_manager(lm, items, batch_size)


def _on_manager(lm: LocalLM, items: list, batch_size: int | None) -> Iterator[GenResult]:
    import torch
    from transformers.generation import ContinuousBatchingConfig

    n = min(len(items), batch_size or MAX_IN_FLIGHT)
    longest = max(len(ids) + gc.max_new_tokens for _, gc, _, _, ids in items)
    # the cache: the sequences in flight at their longest, not a share of free memory
    cb = ContinuousBatchingConfig(page_size=PAGE, num_blocks=n * -(-longest // PAGE), max_batch_tokens=2048,
                                  max_requests_per_batch=n)
    eos = lm.eos_token_ids()
    t0 = time.perf_counter()
    with torch.inference_mode(), plain_attention(lm.model), lm.model.continuous_batching_context_manager(
            generation_config=items[0][1], continuous_batching_config=cb, block=True, timeout=5,
            warmup=False) as manager:
        for i, (_, gc, _, _, ids) in enumerate(items):
            manager.add_request(ids, request_id=str(i), max_new_tokens=gc.max_new_tokens, eos_token_id=eos)
        left = len(items)
        while left:
            out = manager.get_result(timeout=1)
            if out is None:
                if not manager.is_running():
                    raise RuntimeError("transformers' continuous batching stopped before every answer was made")
                continue
            if not out.is_finished():
                continue
            if out.error:
                raise RuntimeError(f"transformers' continuous batching: {out.error}")
            left -= 1
            yield _result(lm, items[int(out.request_id)], list(out.generated_tokens), time.perf_counter() - t0, n)


def _result(lm: LocalLM, item: tuple, tokens: list[int], latency: float, slots: int) -> GenResult:
    st, gc, req, text, ids = item
    if st.stop:
        tokens = tokens[: _stop_at(lm, tokens, st.stop)]
    out, n, finish = finish_answer(lm, tokens, set(gc.eos_token_id or []), st)
    return GenResult(req.key, out, text, len(ids), n, latency, finish,
                     {**effective_settings(gc, st), "scheduler": "transformers-continuous", "max_batch": slots})


def _stop_at(lm: LocalLM, tokens: list[int], stops: Sequence[str]) -> int:
    """The fewest tokens whose text holds a stop string (all of them if none does): a
    binary search, as holding one only grows with more tokens."""

    def holds(k: int) -> bool:
        text = lm.tokenizer.decode(tokens[:k], skip_special_tokens=True)
        return any(s and s in text for s in stops)

    if not holds(len(tokens)):
        return len(tokens)
    lo, hi = 1, len(tokens)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
    return lo
