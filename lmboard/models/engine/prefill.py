"""Prefill without padding: a batch's prompts are computed on top of their common start
(packed end to end on the scoring engine's packed forward where it applies, else one
forward a row), then laid into one left-padded cache that ``generate`` decodes from.

A batch of left-padded prompts spends most of its prefill on pad tokens when the
prompts' lengths differ (ShopBench's 96 development rows: 22,591 prompt tokens, 43,190
once padded into batches). On a CPU a single prompt of a few hundred tokens already
makes matrix products large enough, so computing each row alone costs only its own
tokens; the tokens every row of the batch starts with (a system prompt, the chat
template's header) are computed once. Each row's cache is exactly what it would have
alone (causal attention, its own positions), so decoding sees what an unpadded run sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmboard.models.engine import transformers_api
from lmboard.models.engine.arch import has_sliding_window, text_config
from lmboard.models.engine.kv import KV, extend_kv, prefix_kv
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.packed import packed_for
from lmboard.models.engine.packed_runner import PackedRunner
from lmboard.models.engine.plan import in_order
from lmboard.models.engine.scoring import default_budget


def applies(lm: LocalLM, rows: Sequence[Sequence[int]]) -> bool:
    """On a CPU, for models whose cache keeps every position, and prompts of 2+ tokens."""
    return (lm.device.type == "cpu" and not has_sliding_window(text_config(lm.model))
            and min(len(r) for r in rows) >= 2)


def common_start(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row shares, leaving each row at least its last token."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def row_caches(lm: LocalLM, rows: Sequence[Sequence[int]]) -> tuple[list[KV], int]:
    """Each row's cache of all its tokens but the last; and the shared start's length.
    On the packed forward (Llama-family models on a CPU) many rows run in one forward,
    without padding, by the scoring engine's token budget; elsewhere one forward a row."""
    n = common_start(rows)
    pm, _ = packed_for(lm.model, lm.device)
    if pm is not None:
        return _packed_caches(lm, pm, rows, n), n
    base = prefix_kv(lm, rows[0][:n]) if n else None
    out = []
    for r in rows:
        rest = r[n:-1]
        if base is None:
            out.append(prefix_kv(lm, rest))
        else:
            out.append(extend_kv(lm, base, n, rest) if rest else base)
    return out, n


def _packed_caches(lm: LocalLM, pm: Any, rows: Sequence[Sequence[int]], n: int) -> list[KV]:
    runner = PackedRunner(lm, pm)
    base = runner.prefixes([(None, 0, rows[0][:n])])[0] if n else None
    caches: list[Any] = [base] * len(rows)
    todo = [i for i, r in enumerate(rows) if len(r) - 1 > n]
    for chunk in in_order([len(rows[i]) - 1 - n for i in todo], default_budget(lm)):
        idx = [todo[c] for c in chunk]
        for i, kv in zip(idx, runner.prefixes([(base, n, rows[i][n:-1]) for i in idx]), strict=True):
            caches[i] = kv
    dt = lm.model.dtype  # the packed forward may keep keys and values in float32
    return [[(k.unsqueeze(0).to(dt), v.unsqueeze(0).to(dt)) for k, v in zip(c.k, c.v, strict=True)] for c in caches]


def padded_cache(lm: LocalLM, rows: Sequence[Sequence[int]]) -> tuple[Any, int]:
    """A cache for ``generate``: every row's prompt but its last token, right-aligned in
    ``max(len) - 1`` slots (the left-padded input's layout; pad slots are masked). Returns
    (cache, tokens shared by all rows and computed once)."""
    import torch

    kvs, shared = row_caches(lm, rows)
    width = max(len(r) for r in rows) - 1
    layers = []
    for layer in range(len(kvs[0])):
        k0 = kvs[0][layer][0]
        keys = torch.zeros((len(rows), k0.shape[1], width, k0.shape[3]), dtype=k0.dtype, device=k0.device)
        values = torch.zeros_like(keys)
        for i, kv in enumerate(kvs):
            k, v = kv[layer]
            keys[i, :, width - k.shape[2]:] = k[0]
            values[i, :, width - v.shape[2]:] = v[0]
        layers.append((keys, values))
    return transformers_api.fill_cache(transformers_api.new_cache(lm.model), layers, len(rows)), shared
