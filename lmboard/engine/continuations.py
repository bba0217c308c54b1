"""Log-likelihood of several continuations (labels) after one prompt.

The prompt's KV cache is computed once per example and shared by all its labels: the
cache holds the prompt minus its last token, and each label runs as
[last prompt token, label tokens except the last], so that position j predicts label
token j. Tokenization follows lm-evaluation-harness: the label's tokens are those the
tokenizer gives prompt + label beyond the prompt's own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmboard.engine.kv import head_logits, hidden_on_prefix, prefix_kv


def continuation_ids(tokenizer, prompt: str, conts: Sequence[str], special: bool = True) -> tuple[list[int], list[list[int]]]:
    ctx = tokenizer(prompt, add_special_tokens=special).input_ids
    out = []
    for c in conts:
        whole = tokenizer(prompt + c, add_special_tokens=special).input_ids
        cont = whole[len(ctx):]
        if not cont:  # the label merged into the prompt's last token: score its own tokens
            cont = tokenizer(c, add_special_tokens=False).input_ids
        out.append(cont)
    return ctx, out


def label_logprobs(lm, prompt_ids: list[int], label_ids: Sequence[Sequence[int]]) -> list[float]:
    """Summed log-probability of each label's tokens after the prompt."""
    import torch

    with torch.inference_mode():
        kv = prefix_kv(lm, prompt_ids[:-1]) if len(prompt_ids) > 1 else None
        suffixes = [[prompt_ids[-1], *lab[:-1]] for lab in label_ids]
        h = hidden_on_prefix(lm, kv, len(prompt_ids) - 1, suffixes)
        logp = torch.log_softmax(head_logits(lm, h), dim=-1)
        out = []
        for row, lab in enumerate(label_ids):
            idx = torch.tensor(list(lab), device=logp.device)
            out.append(float(logp[row, torch.arange(len(lab), device=logp.device), idx].sum()))
    return out
