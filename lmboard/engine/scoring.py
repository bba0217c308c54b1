"""Fast scoring of prompts at their last position, with few-shot prefix KV reuse.

What it saves against the usual loop (one full forward per prompt, full-vocabulary
log-softmax at every position):
- prompts that share a prefix (the header and the k shots of a subject) compute its
  KV cache once; only each question's own tokens run on top of it, in batches;
- only the last real position goes through the LM head, and only the target
  columns (the answer letters) leave the engine;
- batches are packed by a token budget, longest first, so padding stays small.

Exactness: the token ids run are always exactly those of the full prompt. The prefix
text is tokenized alone and compared, token by token, with each full prompt's ids;
the shared part is the longest common run (a BPE merge across the boundary, such as
"\n\n" + "The" tokenizing as "\n" "\n" "The", trims it by a token). A question whose
ids share too little with its prefix runs its full prompt (a counted fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmboard.engine.batching import auto_budget, pack, run_with_backoff
from lmboard.engine.kv import extend_kv, forward_on_prefix, prefix_kv, slice_kv

KEEP_CACHES = 8  # prefix caches kept for reuse by later prefixes (a trie, flattened)
MIN_SHARED = 16  # tokens in common worth reusing


@dataclass
class ScoreItem:
    key: str
    ids: list[int]  # the full prompt's token ids
    prefix: str = ""  # items with the same prefix text share its KV cache


@dataclass
class EngineStats:
    items: int = 0
    batches: int = 0
    prefix_groups: int = 0
    prefix_tokens_reused: int = 0  # tokens not run compared with running every full prompt
    tokens_run: int = 0  # tokens actually run through the model (incl. prefixes once)
    padded_tokens: int = 0
    boundary_trimmed: int = 0  # items whose shared part was cut by a boundary merge
    fallbacks: int = 0  # items run as full prompts
    oom_backoffs: int = 0
    batch_tokens: int = 0
    prefix_reuse: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Group:
    shared: list[int]  # ids computed once (may be empty)
    members: list[tuple[ScoreItem, list[int]]]  # (item, suffix ids)


def plan_groups(lm, items: Sequence[ScoreItem], reuse: bool, stats: EngineStats) -> list[_Group]:
    """Group items by prefix and find, with the real tokenizer, how much each shares."""
    by_prefix: dict[str, list[ScoreItem]] = {}
    for it in items:
        by_prefix.setdefault(it.prefix if reuse else "", []).append(it)
    groups: list[_Group] = []
    loose: list[ScoreItem] = []
    for prefix, members in by_prefix.items():
        if not prefix:
            loose.extend(members)
            continue
        pids = lm.tokenizer(prefix, add_special_tokens=True).input_ids
        # Special tokens the tokenizer appends at the end (an EOS) would never match.
        lcps = [common_prefix_len(m.ids, pids) for m in members]
        keep = [(m, n) for m, n in zip(members, lcps, strict=True) if n >= max(1, len(pids) - 8)]
        for m, n in zip(members, lcps, strict=True):
            if n < max(1, len(pids) - 8):
                loose.append(m)
                stats.fallbacks += 1
        if not keep:
            continue
        shared = min(min(n for _, n in keep), min(len(m.ids) for m, _ in keep) - 1)
        stats.boundary_trimmed += sum(1 for _, n in keep if n < len(pids))
        groups.append(_Group(list(pids[:shared]), [(m, m.ids[shared:]) for m, _ in keep]))
    if loose:
        groups.append(_Group([], [(m, m.ids) for m in loose]))
    return groups


def plan_reuse(groups: list[_Group]) -> tuple[list[int | None], list[int]]:
    """For each group, the earlier group whose prefix cache it grows from, and how many
    tokens it takes from it (None, 0: computed from scratch)."""
    base: list[int | None] = []
    reuse: list[int] = []
    for j, g in enumerate(groups):
        best, m = None, 0
        for i in range(max(0, j - KEEP_CACHES), j):
            n = common_prefix_len(groups[i].shared, g.shared)
            if n > m:
                best, m = i, n
        if best is None or m < MIN_SHARED or not g.shared:
            best, m = None, 0
        base.append(best)
        reuse.append(m)
    return base, reuse


def score_last(
    lm,
    items: Sequence[ScoreItem],
    target_ids: Sequence[int],
    *,
    batch_tokens: int | None = None,
    prefix_reuse: bool = True,
    skip: Callable[[str], bool] = lambda key: False,
    on_batch: Callable[[list[tuple[str, list[float]]]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    oom_guard: Callable[[int], None] | None = None,
) -> EngineStats:
    """Logits of ``target_ids`` at each item's last position.

    Results go to ``on_batch([(key, logits), ...])`` as each batch finishes (in the
    batch's order; callers restore their own). Batches whose items all ``skip``
    (already stored) are not run; batch composition depends only on the items and
    the budget, so a resumed run computes exactly what the interrupted one would have.
    ``oom_guard(tokens)`` lets tests inject a memory limit.
    """
    import torch

    stats = EngineStats(items=len(items), prefix_reuse=prefix_reuse)
    if getattr(lm, "prefix_reuse_supported", True) is False:
        prefix_reuse = False
        stats.prefix_reuse = False
        stats.notes.append("prefix reuse off: sliding-window cache")
    cfg = lm.model.config.get_text_config()
    bytes_per_token = 4 * cfg.hidden_size * (8 + 4 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size) // cfg.hidden_size)
    budget = batch_tokens or auto_budget(str(lm.device), bytes_per_token)
    stats.batch_tokens = budget
    targets = torch.tensor(list(target_ids), device=lm.device)
    groups = plan_groups(lm, items, prefix_reuse, stats)
    stats.prefix_groups = sum(1 for g in groups if g.shared)

    def halve() -> None:
        nonlocal budget
        budget = max(1, budget // 2)
        stats.batch_tokens = budget
        stats.oom_backoffs += 1

    # Largest groups first: the main prefix of a subject is computed before its variants.
    groups = sorted(groups, key=lambda g: -len(g.members))
    batches_of = [pack([len(s) for _, s in g.members], budget) for g in groups]
    has_todo = [any(not all(skip(g.members[i][0].key) for i in b) for b in bs) for g, bs in zip(groups, batches_of, strict=True)]
    base, reuse = plan_reuse(groups)
    need = list(has_todo)
    for j in reversed(range(len(groups))):  # a cache others grow from is needed too
        if need[j] and base[j] is not None:
            need[base[j]] = True
    last_use = {b: j for j, b in enumerate(base) if b is not None and need[j]}
    kvs: dict[int, list] = {}

    def kv_for(j: int):
        """Group j's prefix cache, grown from the earlier cache it shares the most tokens
        with (with first_n shots from the test split, question i's shots skip row i, so
        its prefix shares the header and the rows before i with the subject's main one).
        The plan depends only on the items, so a resumed run computes the same numbers."""
        shared, b, m = groups[j].shared, base[j], reuse[j]
        if b is None:
            kv = prefix_kv(lm, shared)
        elif m == len(shared):
            kv = slice_kv(kvs[b], m)
        else:
            kv = extend_kv(lm, slice_kv(kvs[b], m), m, shared[m:])
        stats.tokens_run += len(shared) - m
        stats.prefix_tokens_reused -= len(shared) - m  # its members add len(shared) each
        return kv

    with torch.inference_mode():
        for j, g in enumerate(groups):
            if not need[j]:
                if progress:
                    progress(len(g.members))
                continue
            kv = kvs[j] = kv_for(j) if g.shared else None
            for k in [k for k in kvs if k != j and last_use.get(k, -1) <= j]:
                del kvs[k]  # no later group grows from it
            batches = batches_of[j]
            todo = [b for b in batches if not all(skip(g.members[i][0].key) for i in b)]
            for b in batches:
                if b not in todo:
                    if progress:
                        progress(len(b))
                    continue

                def run(idx: list[int], g=g, kv=kv) -> None:
                    suffixes = [g.members[i][1] for i in idx]
                    n = len(suffixes) * max(map(len, suffixes))
                    if oom_guard:
                        oom_guard(n)
                    logits = forward_on_prefix(lm, kv, len(g.shared), suffixes, targets)
                    stats.batches += 1
                    stats.tokens_run += sum(map(len, suffixes))
                    stats.padded_tokens += n - sum(map(len, suffixes))
                    stats.prefix_tokens_reused += len(g.shared) * len(idx)
                    out = [(g.members[i][0].key, row) for i, row in zip(idx, logits.tolist(), strict=True)]
                    if on_batch:
                        on_batch(out)
                    if progress:
                        progress(len(idx))

                run_with_backoff(b, run, on_oom=halve)
    return stats

