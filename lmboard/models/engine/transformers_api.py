"""Every call the engines make into transformers' internals, in one place.

Tested at both ends of pyproject.toml's range: 5.24 (CI's main environment) and 5.19 (its
vLLM environment). The cache's name is the one difference between them so far: 5.19's
forward takes and returns ``past_key_values``; 5.24's ``cache`` (``past_key_values`` is
deprecated there and goes in 5.40). When transformers renames something, this module is
the one to change.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


@functools.cache
def _cache_name(forward: Callable[..., Any]) -> str:
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_name(module: Any) -> str:
    """The name ``module``'s forward gives its cache: ``cache`` (5.2x) or ``past_key_values`` (5.19)."""
    return _cache_name(type(module).forward)


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """Per layer (keys, values) of a DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def fill_cache(cache: Any, kv: list[tuple[Any, Any]], batch: int) -> Any:
    """Make each layer of ``cache`` view ``kv`` expanded to ``batch`` rows (no copy)."""
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys = k.expand(batch, -1, -1, -1)
        layer.values = v.expand(batch, -1, -1, -1)
    return cache


def model_forward(model: Any, input_ids: Any, logits_to_keep: int = 1) -> Any:
    """The causal LM's forward with a new cache; returns (output, its cache)."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=logits_to_keep)
    return out, getattr(out, cache_name(model))


def decoder_forward(model: Any, input_ids: Any, position_ids: Any, cache: Any = None) -> Any:
    """The decoder stack (no LM head); with ``cache`` it is extended in place."""
    decoder = model.get_decoder()
    return decoder(input_ids=input_ids, position_ids=position_ids, use_cache=cache is not None,
                   **{cache_name(decoder): cache})


def register_attention(name: str, fn: Callable[..., Any]) -> None:
    """Register an attention function (and SDPA's mask for it) under ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, sdpa_mask)


def sdpa_attention(*args: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def text_streamer(tokenizer: Any) -> Any:
    from transformers import TextIteratorStreamer

    return TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def stop_when(event: Any) -> Any:
    """Stopping criteria for ``generate``: stop once ``event`` (a threading.Event) is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def detach_gguf_quantizer(model: Any) -> None:
    """A GGUF file is unpacked into plain tensors of the model's dtype at load, but
    transformers keeps its GGUF quantizer attached: Trainer then refuses to train the
    model and save_pretrained to save it. Nothing is quantized any more; detach it."""
    q = getattr(model, "hf_quantizer", None)
    if q is None or str(getattr(q.quantization_config, "quant_method", "")).lower().split(".")[-1] != "gguf":
        return
    model.hf_quantizer = None
    if "is_quantized" in model.__dict__:
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
