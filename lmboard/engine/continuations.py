"""Log-likelihood of several continuations (labels) after a prompt.

``label_logprobs`` is the reference for one prompt: the prompt's KV cache is computed
once and shared by all its labels; each label runs as [last prompt token, label tokens
except the last], so that position j predicts label token j. ``score_labels`` does the
same for many prompts on the scoring engine (prefix reuse across prompts, packed
batches). Tokenization is ``LocalLM.encode_pair``: the label's tokens are those the
tokenizer gives prompt + label beyond the prompt's own tokens (as lm-evaluation-harness).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from lmboard.engine.kv import head_logits, hidden_on_prefix, prefix_kv
from lmboard.engine.scoring import EngineSettings, EngineStats, ScoreHooks, ScoreItem, score_last
from lmboard.lm import LocalLM


def continuation_ids(lm: LocalLM, prompt: str, conts: Sequence[str], special: bool = True) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, each continuation's ids after it)."""
    ctx: list[int] = []
    out = []
    for c in conts:
        ctx, ids = lm.encode_pair(prompt, c, special)
        out.append(ids)
    return ctx, out


def label_logprobs(lm: LocalLM, prompt_ids: list[int], label_ids: Sequence[Sequence[int]]) -> list[float]:
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


@dataclass
class LabelItem:
    key: str
    prompt: str  # its text: examples whose prompts share a start (the shots) share its KV
    ids: list[int]  # the prompt's ids
    labels: list[list[int]]  # each label's ids after this prompt


def score_labels(
    lm: LocalLM,
    items: Sequence[LabelItem],
    engine: EngineSettings,
    on_item: Callable[[str, list[float]], None],
    skip: Callable[[str], bool] = lambda key: False,
    progress: Callable[[int], None] | None = None,
) -> EngineStats:
    """Summed log-probability of each label after each prompt, on the scoring engine.

    Label token j of an item is one engine item: the prompt plus the label's first j
    tokens, scored at its last position (that token's column and the vocabulary's
    log-sum-exp). An item's engine items share its prompt as their prefix, so its KV is
    computed once (and grows from a neighbour's: the shots are computed once per run);
    the label tokens of many items run together in packed batches.
    """
    targets = sorted({t for it in items for lab in it.labels for t in lab})
    col = {t: i for i, t in enumerate(targets)}
    parts: list[ScoreItem] = []
    left: dict[str, int] = {}
    sums: dict[str, list[float]] = {}
    # Every item is planned, stored ones too: the batches are then those of an
    # uninterrupted run (a batch of only stored items does not run).
    for it in items:
        sums[it.key] = [0.0] * len(it.labels)
        left[it.key] = sum(len(lab) for lab in it.labels)
        for li, lab in enumerate(it.labels):
            parts.extend(ScoreItem(f"{it.key}\x1f{li}\x1f{j}", it.ids + lab[:j], it.prompt) for j in range(len(lab)))
    by_key = {it.key: it for it in items}

    def on_batch(rows: list[tuple[str, list[float]]]) -> None:
        for part, row in rows:
            key, li, j = part.rsplit("\x1f", 2)
            tok = by_key[key].labels[int(li)][int(j)]
            sums[key][int(li)] += row[col[tok]] - row[-1]
            left[key] -= 1
            if left[key] == 0 and not skip(key):
                on_item(key, sums[key])
                if progress:
                    progress(1)

    # label log-likelihoods have no close-call recheck (lse rows): exact dtype is the caller's choice
    hooks = ScoreHooks(skip=lambda part: skip(part.split("\x1f", 1)[0]), on_batch=on_batch)
    return score_last(lm, parts, targets, replace(engine, recheck_margin=0.0), hooks, lse=True)
