"""The scoring plan: pure bookkeeping, no model. Given the items (token ids and the
prefix text they share), decide what runs where:

1. ``plan_groups``: items grouped by prefix text; with the real tokenizer, how many
   leading ids each group shares exactly (a BPE merge across the boundary trims it; too
   little in common falls back to the full prompt);
2. ``plan_reuse``: groups in trie order, each growing its cache from the kept earlier
   group it shares the most with (with ``first_n`` shots, question i's shots skip row i);
3. ``plan_segments``: the tokens each item runs and the cache it runs on;
4. ``pack_segments``: consecutive segments in batches of a token budget;
5. ``last_need``: the last batch that needs each cache (caches are freed after it).

Deterministic: the same items and budget always give the same plan, so a resumed run
computes exactly what the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

KEEP_CACHES = 8  # prefix caches kept for reuse by later prefixes (a trie, flattened)
MIN_SHARED = 16  # tokens in common worth reusing
BOUNDARY_SLACK = 8  # ids a prefix may lose at its end to a merge (or an appended special token)
MAX_CACHES = 8  # prefix caches one batch may run on (each is held, whole, while it runs)


@dataclass
class ScoreItem:
    key: str
    ids: list[int]  # the full prompt's token ids
    # items with the same prefix share its KV cache: its text (its ids found with the
    # real tokenizer), or its ids themselves
    prefix: str | tuple[int, ...] = ""


@dataclass
class Group:
    shared: list[int]  # ids computed once (may be empty)
    members: list[tuple[ScoreItem, list[int]]]  # (item, suffix ids)


@dataclass
class Segment:
    item: ScoreItem
    ref: tuple[int, int] | None  # (group whose cache it runs on, tokens of that cache)
    ids: list[int]  # the tokens it runs


@dataclass
class PlanCounts:
    boundary_trimmed: int = 0  # items whose shared part was cut by a boundary merge
    fallbacks: int = 0  # items run as full prompts


@dataclass
class Plan:
    groups: list[Group]
    base: list[int | None]  # the group each group's cache grows from
    reuse: list[int]  # tokens taken from that cache
    segs: list[Segment]
    cached: set[int]  # groups whose caches are computed and held
    batches: list[list[int]]  # segment indices
    last_need: dict[int, int] = field(default_factory=dict)  # group -> last batch that needs its cache
    counts: PlanCounts = field(default_factory=PlanCounts)

    def fresh(self, j: int) -> int:
        """The tokens cache j runs beyond the one it grows from."""
        return len(self.groups[j].shared) - self.reuse[j]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_groups(encode: Callable[[str], list[int]], items: Sequence[ScoreItem], reuse: bool,
                counts: PlanCounts) -> list[Group]:
    """Group items by prefix and find, with the real tokenizer, how much each shares."""
    by_prefix: dict[str | tuple[int, ...], list[ScoreItem]] = {}
    for it in items:
        by_prefix.setdefault(it.prefix if reuse else "", []).append(it)
    groups: list[Group] = []
    loose: list[ScoreItem] = []
    for prefix, members in by_prefix.items():
        if not prefix:
            loose.extend(members)
            continue
        pids = list(prefix) if isinstance(prefix, tuple) else encode(prefix)
        lcps = [common_prefix_len(m.ids, pids) for m in members]
        enough = max(1, len(pids) - BOUNDARY_SLACK)
        keep = [(m, n) for m, n in zip(members, lcps, strict=True) if n >= enough]
        fell = [m for m, n in zip(members, lcps, strict=True) if n < enough]
        loose.extend(fell)
        counts.fallbacks += len(fell)
        if not keep:
            continue
        shared = min(min(n for _, n in keep), min(len(m.ids) for m, _ in keep) - 1)
        counts.boundary_trimmed += sum(1 for _, n in keep if n < len(pids))
        groups.append(Group(list(pids[:shared]), [(m, m.ids[shared:]) for m, _ in keep]))
    if loose:
        groups.append(Group([], [(m, m.ids) for m in loose]))
    # Sorted by their ids, the groups of one subject sit together and each grows from its
    # neighbour with the longest common run (a trie walk); items without a prefix go last.
    return sorted(groups, key=lambda g: (not g.shared, g.shared))


def plan_reuse(groups: list[Group]) -> tuple[list[int | None], list[int]]:
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


def plan_segments(groups: list[Group], base: list[int | None], reuse: list[int]) -> tuple[list[Segment], set[int]]:
    """What runs: each item's segment and the groups whose caches are computed.

    A group's cache is computed when several items share it or a later group grows
    from it; a group of one item (with first_n shots, questions 0-4 of a subject) runs
    its item on the cache it would have grown from, its own prefix part included."""
    parents = {b for b in base if b is not None}
    cached = {j for j, g in enumerate(groups) if g.shared and (len(g.members) > 1 or j in parents)}
    segs: list[Segment] = []
    for j, g in enumerate(groups):
        members = sorted(g.members, key=lambda m: -len(m[1]))  # stable: short suffix rectangles
        for item, suffix in members:
            if j in cached:
                segs.append(Segment(item, (j, len(g.shared)), list(suffix)))
            elif base[j] is not None:
                segs.append(Segment(item, (base[j], reuse[j]), g.shared[reuse[j]:] + list(suffix)))
            else:
                segs.append(Segment(item, None, g.shared + list(suffix)))
    return segs, cached


def _capped(lengths: Sequence[int], caches: Sequence[int | None], budget: int) -> list[list[int]]:
    """``in_order``, a batch also closed before it would hold more than MAX_CACHES caches."""
    batches: list[list[int]] = []
    cur: list[int] = []
    held: set[int] = set()
    total = 0
    for i, (n, c) in enumerate(zip(lengths, caches, strict=True)):
        more = c is not None and c not in held
        if cur and (total + n > budget or (more and len(held) >= MAX_CACHES)):
            batches.append(cur)
            cur, held, total = [], set(), 0
        cur.append(i)
        total += n
        if c is not None:
            held.add(c)
    if cur:
        batches.append(cur)
    return batches


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


def pack_segments(segs: list[Segment], budget: int, one_prefix: bool) -> list[list[int]]:
    """Consecutive segments in batches of at most ``budget`` tokens (padded tokens when
    the runner pads: count x longest, and one prefix per batch) and of at most
    MAX_CACHES prefix caches: a batch's caches are all held while it runs, and a
    classification's label tokens (a few tokens on each review's own prompt) once packed
    hundreds of reviews' caches into one batch (5.2 GB for 60 reviews of SmolLM2)."""
    if not one_prefix:
        return _capped([len(s.ids) for s in segs], [s.ref[0] if s.ref else None for s in segs], budget)
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


def last_need(plan: Plan) -> dict[int, int]:
    """The last batch that needs each cache. A cache others grow from lives until the
    last of them is computed (their first batch; the copy they grew is their own), not
    as long as they do: kept until its children's last batches, every review's cache of a
    classification stayed alive through the run (a chain of eight-back parents)."""
    need: dict[int, int] = {}
    first: dict[int, int] = {}
    for bi, batch in enumerate(plan.batches):
        for i in batch:
            if plan.segs[i].ref is not None:
                need[plan.segs[i].ref[0]] = bi
                first.setdefault(plan.segs[i].ref[0], bi)
    for j in reversed(range(len(plan.groups))):  # a parent comes before its children
        b = plan.base[j]
        if b is not None and j in plan.cached and j in first:
            first[b] = min(first.get(b, first[j]), first[j])  # computed by the time its child is
            need[b] = max(need.get(b, 0), first[j])
    return need


def make_plan(encode: Callable[[str], list[int]], items: Sequence[ScoreItem], reuse: bool, budget: int,
              one_prefix: bool) -> Plan:
    counts = PlanCounts()
    groups = plan_groups(encode, items, reuse, counts)
    base, reuse_n = plan_reuse(groups)
    segs, cached = plan_segments(groups, base, reuse_n)
    plan = Plan(groups, base, reuse_n, segs, cached, pack_segments(segs, budget, one_prefix), counts=counts)
    plan.last_need = last_need(plan)
    return plan
