"""Batched generation for local transformers models.

Prompts are rendered with the model's chat template (add_generation_prompt=True) unless
raw, sorted longest first, batched with LEFT padding and an attention mask (right
padding would put pad tokens between the prompt and the answer), and generated with
every end-of-turn id as a stop. The answer excludes the prompt and special tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from lmboard.config import GenerationSettings
from lmboard.engine.batching import pack, run_with_backoff
from lmboard.models.base import GenRequest, GenResult

# Tokens of work (prompt + new tokens, summed over the batch) per generate call on a
# CPU; on this class of machine decode throughput stops growing past ~32 sequences.
CPU_GEN_BUDGET = 32 * 640
MAX_BATCH = 64


def render(lm, req: GenRequest, settings: GenerationSettings) -> tuple[str, bool]:
    """(prompt text, whether the tokenizer should add its special tokens)."""
    if settings.raw or req.text is not None and not req.messages:
        text = req.text if req.text is not None else "\n\n".join(m["content"] for m in req.messages)
        return text, True
    messages = list(req.messages)
    if settings.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": settings.system})
    # The template already holds BOS and the turn markers.
    return lm.render_chat(messages), False


def generation_config(lm, settings: GenerationSettings):
    """The model's own generation_config, overridden only where the user spoke."""
    import copy

    gc = copy.deepcopy(lm.model.generation_config)
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


def generate_batched(
    lm, requests: Sequence[GenRequest], settings: GenerationSettings, batch_size: int | None = None
) -> Iterator[GenResult]:
    import torch

    tok = lm.tokenizer
    gc = generation_config(lm, settings)
    eff = effective_settings(gc, settings)
    rendered = [render(lm, r, settings) for r in requests]
    ids = [tok(t, add_special_tokens=s).input_ids for t, s in rendered]
    lengths = [len(i) + settings.max_new_tokens for i in ids]
    if batch_size:
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        budget = CPU_GEN_BUDGET if lm.device.type == "cpu" else 64 * 4096
        batches = pack(lengths, budget, max_batch=MAX_BATCH)
    eos = set(gc.eos_token_id or [])
    results: list[GenResult] = []

    def run(idx: list[int]) -> None:
        width = max(len(ids[i]) for i in idx)
        pad = tok.pad_token_id
        x = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding
            x[row, width - len(ids[i]) :] = torch.tensor(ids[i])
            mask[row, width - len(ids[i]) :] = 1
        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=x.to(lm.device),
                attention_mask=mask.to(lm.device),
                generation_config=gc,
                stop_strings=list(settings.stop) or None,
                tokenizer=tok if settings.stop else None,
            )
        latency = time.perf_counter() - t0
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            n, hit_eos = len(new), False
            for j, t in enumerate(new):
                if t in eos:
                    n, hit_eos = j, True
                    break
            text = tok.decode(new[:n], skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, settings.stop)
            if not hit_eos and n == len(new) and n < settings.max_new_tokens:
                hit_stop = True  # generation ended early: a stop string matched
            results.append(
                GenResult(
                    key=requests[i].key,
                    output=text,
                    prompt=rendered[i][0],
                    prompt_tokens=len(ids[i]),
                    output_tokens=n,
                    latency_s=latency,
                    finish_reason="stop" if hit_eos or hit_stop else "length",
                    settings={**eff, "batch_size": len(idx)},
                )
            )

    for b in batches:
        run_with_backoff(b, run)
        yield from results
        results.clear()


def stream_one(lm, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
    """One chat answer, streamed piece by piece (for `lmboard chat`)."""
    import torch
    from transformers import TextIteratorStreamer

    text, special = render(lm, GenRequest("chat", tuple(messages)), settings)
    x = lm.tokenizer(text, add_special_tokens=special, return_tensors="pt").to(lm.device)
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    gc = generation_config(lm, settings)
    torch.manual_seed(settings.seed)

    def work() -> None:
        with torch.inference_mode():
            lm.model.generate(**x, generation_config=gc, streamer=streamer)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    yield from streamer
    th.join()
