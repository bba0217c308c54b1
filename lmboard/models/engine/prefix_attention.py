"""Attention against a shared prefix without copying it per row (CPU).

The plain way to run B questions on one few-shot prefix expands the prefix's KV cache to
B rows, concatenates each layer's suffix keys onto it, and runs masked attention over
B separate (prefix + suffix) problems. Here the suffix runs without a cache, and this
attention function (registered with transformers' AttentionInterface; plain SDPA
whenever no prefix is active) splits each query's attention in two fused, unmasked
kernels whose log-sum-exps merge them exactly:

    prefix: all rows' queries stacked against the one prefix (no copy, no mask)
    suffix: each row against its own tokens, causal
    out = o_p * exp(lse_p - lse) + o_s * exp(lse_s - lse),  lse = logaddexp(lse_p, lse_s)

Right-padded suffixes need no mask: pads come after every real token.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any

from lmboard.models.engine import transformers_api
from lmboard.models.engine.arch import attention_softcap, has_sliding_window, text_config

NAME = "lmboard_prefix"
_state = threading.local()
_registered = False
_enabled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> whether it runs this attention


def prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    import torch

    prefix = getattr(_state, "kv", None)
    if prefix is None:
        return transformers_api.sdpa_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    kp, vp = prefix[module.layer_idx]  # (1, H, P, D), already repeated to the query heads
    b, h, n, d = query.shape
    if key.shape[1] != h:  # grouped-query attention: each KV head serves h / kv query heads
        key = key.repeat_interleave(h // key.shape[1], dim=1)
        value = value.repeat_interleave(h // value.shape[1], dim=1)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    qs = query.transpose(0, 1).reshape(1, h, b * n, d)
    o_p, l_p = flash(qs, kp, vp, 0.0, False, scale=scaling)[:2]
    o_p = o_p.reshape(h, b, n, d).transpose(0, 1)
    l_p = l_p.reshape(h, b, n).transpose(0, 1)
    o_s, l_s = flash(query, key, value, 0.0, True, scale=scaling)[:2]
    lse = torch.logaddexp(l_p, l_s)
    out = o_p.float() * torch.exp(l_p - lse).unsqueeze(-1) + o_s.float() * torch.exp(l_s - lse).unsqueeze(-1)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def prefix_attention_enabled(model: Any, device: Any) -> bool:
    """Whether ``model`` runs this attention, switching it on the first time it fits
    (a CPU SDPA decoder with no sliding window and no soft-capping)."""
    if model not in _enabled:
        _enabled[model] = _enable(model, device)
    return _enabled[model]


def _enable(model: Any, device: Any) -> bool:
    global _registered
    import torch

    cfg = text_config(model)
    if device.type != "cpu" or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    if has_sliding_window(cfg) or attention_softcap(cfg):
        return False
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return False
    if not _registered:
        transformers_api.register_attention(NAME, prefix_attention)
        _registered = True
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError, KeyError):
        return False
    return True


@contextmanager
def shared_prefix(kv, n_heads: int):
    """Attend to ``kv`` (per layer (1, kv_heads, P, D)) as the prefix of every row."""
    rep = [(k.repeat_interleave(n_heads // k.shape[1], dim=1), v.repeat_interleave(n_heads // v.shape[1], dim=1))
           for k, v in kv]
    _state.kv = rep
    try:
        yield
    finally:
        _state.kv = None


@contextmanager
def plain_attention(model: Any):
    """The model on transformers' own SDPA while inside (transformers' continuous batching
    accepts no other), back on this attention after."""
    cfg = text_config(model)
    was = getattr(cfg, "_attn_implementation", None)
    if was == NAME:
        model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if was == NAME:
            model.set_attn_implementation(NAME)
