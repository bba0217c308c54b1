"""Log-likelihood of several continuations (labels) after a prompt.

``label_logprobs`` is the reference for one prompt: the prompt's KV cache is computed
once and shared by all its labels; each label runs as [last prompt token, label tokens
except the last], so that position j predicts label token j. ``score_labels`` does the
same for many prompts on the scoring engine (prefix reuse across prompts, packed
batches). Tokenization is ``LocalLM.encode_pair``: the label's tokens are those the
tokenizer gives prompt + label beyond the prompt's own tokens (as lm-evaluation-harness).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

from lmboard.models.engine.kv import head_logits, hidden_on_prefix, prefix_kv
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.scoring import EngineSettings, EngineStats, ScoreItem, score_last


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


Labelled = tuple[str, list[float], list[bool]]  # key, each label's summed log-probability, greedy at every token


@dataclass
class LabelItem:
    key: str
    ids: list[int]  # the prompt's ids (prompts that share a start, the shots, share its KV)
    labels: list[list[int]]  # each label's ids after this prompt


def score_labels(lm: LocalLM, items: Sequence[LabelItem], engine: EngineSettings,
                 skip: Callable[[str], bool] = lambda key: False) -> Generator[list[Labelled], None, EngineStats]:
    """Summed log-probability of each label after each prompt (and whether each label is
    the greedy choice at every one of its tokens), on the scoring engine, handed on in
    batches as items complete.

    Label token j of an item is one engine item: the prompt plus the label's first j
    tokens, scored at its last position (that token's column, the vocabulary's
    log-sum-exp and its largest logit). An item's engine items share its prompt as their
    prefix, so its KV is computed once (and grows from a neighbour's: the shots are
    computed once per run); the label tokens of many items run together in packed batches.
    """
    targets = sorted({t for it in items for lab in it.labels for t in lab})
    col = {t: i for i, t in enumerate(targets)}
    parts: list[ScoreItem] = []
    left: dict[str, int] = {}
    sums: dict[str, list[float]] = {}
    greedy: dict[str, list[bool]] = {}
    # Every item is planned, stored ones too: the batches are then those of an
    # uninterrupted run (a batch of only stored items does not run).
    for it in items:
        sums[it.key] = [0.0] * len(it.labels)
        greedy[it.key] = [True] * len(it.labels)
        left[it.key] = sum(len(lab) for lab in it.labels)
        for li, lab in enumerate(it.labels):
            parts.extend(ScoreItem(f"{it.key}\x1f{li}\x1f{j}", it.ids + lab[:j], tuple(it.ids)) for j in range(len(lab)))
    by_key = {it.key: it for it in items}
    # label log-likelihoods have no close-call recheck (lse rows): exact dtype is the caller's choice
    run = score_last(lm, parts, targets, replace(engine, recheck_margin=0.0),
                     skip=lambda part: skip(part.split("\x1f", 1)[0]), lse=True)
    while True:
        try:
            handed = next(run)
        except StopIteration as end:
            return end.value
        done: list[Labelled] = []
        for part, row in handed.rows:
            key, li, j = part.rsplit("\x1f", 2)
            logit = row[col[by_key[key].labels[int(li)][int(j)]]]
            sums[key][int(li)] += logit - row[-2]
            greedy[key][int(li)] &= logit >= row[-1]
            left[key] -= 1
            if left[key] == 0 and not skip(key):
                done.append((key, sums[key], greedy[key]))
        if done:
            yield done
