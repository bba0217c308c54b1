"""What both generation paths share: a request rendered to its prompt, the generation
config (the model's own, overridden only where the user spoke), the effective settings
recorded with each answer, and an answer's tokens cut at its end token or stop string."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lmboard.lm import GenerationSettings, GenRequest
from lmboard.models.engine.local import LocalLM


def render(lm: LocalLM, req: GenRequest, settings: GenerationSettings) -> tuple[str, bool]:
    """(prompt text, whether the tokenizer should add its special tokens)."""
    if settings.raw or req.text is not None and not req.messages:
        text = req.text if req.text is not None else "\n\n".join(m["content"] for m in req.messages)
        return text, True
    messages = list(req.messages)
    if settings.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": settings.system})
    # The template already holds BOS and the turn markers.
    return lm.render_chat(messages), False


def generation_config(lm: LocalLM, settings: GenerationSettings):
    """The model's own generation_config, overridden only where the user spoke."""
    import copy

    gc = copy.deepcopy(lm.generation_config)
    gc.max_new_tokens = settings.max_new_tokens
    gc.max_length = None
    if settings.min_new_tokens is not None:
        gc.min_new_tokens = settings.min_new_tokens
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        v = getattr(settings, name)
        if v is not None:
            setattr(gc, name, v)
    if settings.do_sample is not None:
        gc.do_sample = settings.do_sample
    if not gc.do_sample:  # greedy: sampling knobs do not apply (and transformers warns)
        gc.temperature, gc.top_p, gc.top_k = None, None, None
    gc.eos_token_id = None if settings.ignore_eos else lm.eos_token_ids()
    gc.pad_token_id = lm.tokenizer.pad_token_id
    return gc


def effective_settings(gc, settings: GenerationSettings) -> dict:
    return {
        "max_new_tokens": gc.max_new_tokens,
        "min_new_tokens": getattr(gc, "min_new_tokens", None),
        "do_sample": bool(gc.do_sample),
        "temperature": gc.temperature if gc.do_sample else None,
        "top_p": gc.top_p if gc.do_sample else None,
        "top_k": gc.top_k if gc.do_sample else None,
        "repetition_penalty": gc.repetition_penalty,
        "eos_token_id": gc.eos_token_id,
        "stop": list(settings.stop),
        "seed": settings.seed,
        "system": settings.system,
        "raw": settings.raw,
    }


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    idx = [text.find(s) for s in stops if s and s in text]
    if not idx:
        return text, False
    return text[: min(idx)], True


def finish_answer(lm: LocalLM, new: list[int], eos: set[int], settings: GenerationSettings) -> tuple[str, int, str]:
    """(text, tokens before the stop, finish reason) of one row's new tokens."""
    n, hit_eos = len(new), False
    for j, t in enumerate(new):
        if t in eos:
            n, hit_eos = j, True
            break
    text, hit_stop = cut_at_stop(lm.tokenizer.decode(new[:n], skip_special_tokens=True), settings.stop)
    if not hit_eos and n == len(new) and n < settings.max_new_tokens:
        hit_stop = True  # generation ended early: a stop string matched
    return text, n, "stop" if hit_eos or hit_stop else "length"


def stop_check(lm: LocalLM, stops: Sequence[str]) -> Callable[[list[int]], bool] | None:
    """Whether a stop string has appeared in an answer's tokens: only the tail is decoded
    (each token is at least one character, so the last len(stop) + 8 tokens hold it)."""
    if not stops:
        return None
    width = max(len(s) for s in stops) + 8

    def stopped(new: list[int]) -> bool:
        tail = lm.tokenizer.decode(new[-width:], skip_special_tokens=True)
        return any(s and s in tail for s in stops)

    return stopped

