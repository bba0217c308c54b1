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

from lmboard.engine.batching import auto_budget, run_with_backoff

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
    forward: str = ""  # packed or transformers
    recheck_margin: float = 0.0  # close calls (top-2 target logits closer than this) rerun in float32
    rechecked: int = 0
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


@dataclass
class _Seg:
    item: ScoreItem
    ref: tuple[int, int] | None  # (group whose cache it runs on, tokens of that cache)
    ids: list[int]  # the tokens it runs


def plan_segments(groups: list[_Group], base: list[int | None], reuse: list[int]) -> tuple[list[_Seg], set[int]]:
    """What runs: each item's segment and the groups whose caches are computed.

    A group's cache is computed when several items share it or a later group grows
    from it; a group of one item (with first_n shots, questions 0-4 of a subject) runs
    its item on the cache it would have grown from, its own prefix part included."""
    parents = {b for b in base if b is not None}
    cached = {j for j, g in enumerate(groups) if g.shared and (len(g.members) > 1 or j in parents)}
    segs: list[_Seg] = []
    for j, g in enumerate(groups):
        members = sorted(g.members, key=lambda m: -len(m[1]))  # stable: short suffix rectangles
        for item, suffix in members:
            if j in cached:
                segs.append(_Seg(item, (j, len(g.shared)), list(suffix)))
            elif base[j] is not None:
                segs.append(_Seg(item, (base[j], reuse[j]), g.shared[reuse[j]:] + list(suffix)))
            else:
                segs.append(_Seg(item, None, g.shared + list(suffix)))
    return segs, cached


def in_order(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive indices in batches of at most ``budget`` tokens in all (one over-long item runs alone)."""
    batches: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i, n in enumerate(lengths):
        if cur and total + n > budget:
            batches.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    if cur:
        batches.append(cur)
    return batches


def pack_segments(segs: list[_Seg], budget: int, one_prefix: bool) -> list[list[int]]:
    """Consecutive segments in batches of at most ``budget`` tokens (padded tokens when
    the runner pads: count x longest). Deterministic: a resumed run gets the same batches."""
    if not one_prefix:
        return in_order([len(s.ids) for s in segs], budget)
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, s in enumerate(segs):
        n = len(s.ids)
        if cur and ((len(cur) + 1) * max(longest, n) > budget or s.ref != segs[cur[0]].ref):
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


def make_runner(lm, packed: bool, stats: EngineStats):
    from lmboard.engine.kv import HFRunner

    if packed:
        from lmboard.engine.packed import PackedRunner, packed_for

        pm, why = packed_for(lm)
        if pm is not None:
            stats.forward = "packed"
            return PackedRunner(lm, pm)
        stats.notes.append(f"packed forward off: {why}")
    stats.forward = "transformers"
    return HFRunner(lm)


def score_last(
    lm,
    items: Sequence[ScoreItem],
    target_ids: Sequence[int],
    *,
    batch_tokens: int | None = None,
    prefix_reuse: bool = True,
    packed: bool = True,
    recheck_margin: float = 0.0,
    lse: bool = False,
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
    ``packed`` uses the packed forward where the model allows it (engine/packed.py).
    ``recheck_margin``: an item whose two best targets' logits are closer than this in
    reduced precision is scored again in float32 (its prefix too), and that result kept.
    ``lse``: each row ends with one more column, the log-sum-exp over the whole
    vocabulary (log-probabilities of the targets are their logits minus it).
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
    runner = make_runner(lm, packed, stats)
    checker = runner.exact_twin() if recheck_margin > 0 and len(target_ids) > 1 and not lse else None
    stats.recheck_margin = recheck_margin if checker else 0.0
    if checker is not None:  # prefixes computed once, in float32, serve both passes
        runner.exact_prefix = True
    # Sorted by their ids, the groups of one subject sit together and each grows from its
    # neighbour with the longest common run (a trie walk); items without a prefix go last.
    groups = sorted(plan_groups(lm, items, prefix_reuse, stats), key=lambda g: (not g.shared, g.shared))
    stats.prefix_groups = sum(1 for g in groups if g.shared)
    base, reuse = plan_reuse(groups)
    segs, cached = plan_segments(groups, base, reuse)
    batches = pack_segments(segs, budget, runner.one_prefix_per_batch)
    last_need: dict[int, int] = {}
    for bi, batch in enumerate(batches):
        for i in batch:
            if segs[i].ref is not None:
                last_need[segs[i].ref[0]] = bi
    for j in reversed(range(len(groups))):  # a cache others grow from lives as long as they do
        if base[j] is not None and j in cached:
            last_need[base[j]] = max(last_need.get(base[j], 0), last_need.get(j, 0))
    caches: dict[int, object] = {}
    exact_caches = caches if runner.exact_prefix else {}

    def ensure(js, exact: bool = False) -> None:
        """Compute the caches ``js`` need (and those they grow from) that are not held yet:
        in rounds (a cache after the one it grows from), packed by the token budget, so the
        prompts of many one-review groups run together rather than one forward each."""
        store, run_ = (exact_caches, checker) if exact else (caches, runner)
        need: list[int] = []

        def add(j: int) -> None:
            if j not in store and j not in need:
                if base[j] is not None:
                    add(base[j])
                need.append(j)

        for j in js:
            add(j)
        while need:
            ready = [j for j in need if base[j] is None or base[j] in store]
            for part in in_order([fresh(j) for j in ready], budget):
                run_with_backoff([ready[k] for k in part], lambda chunk: compute(chunk, store, run_), on_oom=halve)
            need = [j for j in need if j not in store]

    def fresh(j: int) -> int:  # the tokens cache j runs beyond the one it grows from
        return len(groups[j].shared) - reuse[j]

    def compute(chunk: list[int], store: dict, run_) -> None:
        if oom_guard:
            oom_guard(sum(map(fresh, chunk)))
        outs = run_.prefixes([(store[base[c]] if base[c] is not None else None, reuse[c],
                               groups[c].shared[reuse[c]:]) for c in chunk])
        for c, kv in zip(chunk, outs, strict=True):
            store[c] = kv
            stats.tokens_run += fresh(c)
            if store is caches:
                stats.prefix_tokens_reused -= fresh(c)

    def views_for(idx: list[int], exact: bool = False) -> dict:
        store = exact_caches if exact else caches
        ensure(sorted({segs[i].ref[0] for i in idx if segs[i].ref is not None}), exact)
        views: dict[tuple[int, int], object] = {}
        for i in idx:
            ref = segs[i].ref
            if ref is not None and ref not in views:
                c = store[ref[0]]
                views[ref] = c if ref[1] == len(groups[ref[0]].shared) else runner.sliced(c, ref[1])
        return views

    held: list[tuple[list[int], object]] = []  # batches waiting for their close calls' recheck
    pending: list[tuple[int, int]] = []  # (held batch, row) of close calls

    def flush(bi: int) -> None:
        """Rescore the close calls in float32 (batched across the held batches, whose
        results are emitted after), then free the exact caches no later batch needs."""
        for chunk in pack_segments([segs[held[h][0][r]] for h, r in pending], budget, False):
            rows = [pending[c] for c in chunk]
            sub = [held[h][0][r] for h, r in rows]
            views = views_for(sub, exact=True)
            exact = checker.score([(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids)
                                   for i in sub], targets)
            for (h, r), row in zip(rows, exact, strict=True):
                held[h][1][r] = row
            stats.rechecked += len(sub)
            stats.tokens_run += sum(len(segs[i].ids) for i in sub)
        for idx, logits in held:
            emit(idx, logits)
        held.clear()
        pending.clear()
        for j in [j for j in exact_caches if last_need.get(j, -1) <= bi]:
            del exact_caches[j]

    def emit(idx: list[int], logits) -> None:
        if on_batch:
            on_batch([(segs[i].item.key, row) for i, row in zip(idx, logits.tolist(), strict=True)])

    def halve() -> None:
        nonlocal budget
        budget = max(1, budget // 2)
        stats.batch_tokens = budget
        stats.oom_backoffs += 1

    with torch.inference_mode():
        for bi, batch in enumerate(batches):
            if all(skip(segs[i].item.key) for i in batch):
                if progress:
                    progress(len(batch))
                continue
            views = views_for(batch)

            def run(idx: list[int], views=views) -> None:
                run_segs = [(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids) for i in idx]
                lens = [len(s.ids) for s in (segs[i] for i in idx)]
                n = len(idx) * max(lens) if runner.one_prefix_per_batch else sum(lens)
                if oom_guard:
                    oom_guard(n)
                logits = runner.score(run_segs, targets, lse)
                stats.batches += 1
                stats.tokens_run += sum(lens)
                stats.padded_tokens += n - sum(lens)
                stats.prefix_tokens_reused += sum(len(segs[i].item.ids) - len(segs[i].ids) for i in idx)
                if checker is None:
                    emit(idx, logits)
                else:
                    top2 = logits.topk(2, dim=-1).values
                    pending.extend((len(held), r) for r in range(len(idx))
                                   if float(top2[r, 0] - top2[r, 1]) < recheck_margin)
                    held.append((idx, logits.clone()))
                if progress:
                    progress(len(idx))

            run_with_backoff(batch, run, on_oom=halve)
            if held and (bi == len(batches) - 1 or sum(len(segs[held[h][0][r]].ids) for h, r in pending) >= budget // 2):
                flush(bi)
            waiting = {segs[held[h][0][r]].ref[0] for h, r in pending if segs[held[h][0][r]].ref is not None}
            for j in [j for j in caches if last_need.get(j, -1) <= bi and j not in waiting]:
                del caches[j]
        if held:
            flush(len(batches))
    return stats
