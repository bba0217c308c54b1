"""Architecture facts the engines need, read from a transformers config."""

from __future__ import annotations

from typing import Any


def text_config(model: Any) -> Any:
    """The language model's config (the text part of a multimodal one)."""
    return model.config.get_text_config()


def has_sliding_window(cfg: Any) -> bool:
    """Some layers attend only to a window: a cache keeps only the window, so a shared
    prefix cannot be reused as is, and the packed forward does not apply."""
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
        return True
    return bool(getattr(cfg, "sliding_window", None)) and getattr(cfg, "use_sliding_window", True) is not False


def final_softcap(cfg: Any) -> float | None:
    """Gemma-style soft-capping of the final logits: tanh(logits / cap) * cap."""
    return getattr(cfg, "final_logit_softcapping", None) or None


def attention_softcap(cfg: Any) -> float | None:
    return getattr(cfg, "attn_logit_softcapping", None) or None
