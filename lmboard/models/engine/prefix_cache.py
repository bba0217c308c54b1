"""The prefix caches of one scoring run: computed when a batch first needs them, freed
after the last batch that does.

A cache is computed after the one it grows from, in rounds; the caches of one round are
packed by the token budget into shared forwards (many one-review prefixes per forward
rather than one each), and a forward that runs out of memory is split in halves.
"""

from __future__ import annotations

from collections.abc import Callable

from lmboard.models.engine.batching import run_with_backoff
from lmboard.models.engine.plan import Plan, in_order
from lmboard.models.engine.runner import Cache, Runner
from lmboard.models.engine.stats import Budget, EngineStats


class PrefixCaches:
    def __init__(self, plan: Plan, runner: Runner, budget: Budget, stats: EngineStats,
                 oom_guard: Callable[[int], None] | None = None, float32_twin: bool = False):
        self.plan, self.runner, self.float32_twin = plan, runner, float32_twin
        self.budget, self.stats, self.oom_guard = budget, stats, oom_guard
        self.held: dict[int, Cache] = {}

    def ensure(self, js: list[int]) -> None:
        """Compute the caches ``js`` need (and those they grow from) that are not held yet."""
        base = self.plan.base
        need: list[int] = []

        def add(j: int) -> None:
            if j not in self.held and j not in need:
                if base[j] is not None:
                    add(base[j])
                need.append(j)

        for j in js:
            add(j)
        while need:
            ready = [j for j in need if base[j] is None or base[j] in self.held]
            for part in in_order([self.plan.fresh(j) for j in ready], self.budget.tokens):
                run_with_backoff([ready[k] for k in part], self._compute, on_oom=self.budget.halve)
            need = [j for j in need if j not in self.held]

    def _compute(self, chunk: list[int]) -> None:
        p = self.plan
        if self.oom_guard:
            self.oom_guard(sum(map(p.fresh, chunk)))
        reqs = [(self.held[p.base[c]] if p.base[c] is not None else None, p.reuse[c], p.groups[c].shared[p.reuse[c]:])
                for c in chunk]
        for c, kv in zip(chunk, self.runner.prefixes(reqs), strict=True):
            self.held[c] = kv
            self.stats.tokens_run += p.fresh(c)
            self.stats.float32_tokens += p.fresh(c) if self.float32_twin else 0
            self.stats.prefix_tokens_reused -= p.fresh(c)

    def views(self, idx: list[int]) -> dict[tuple[int, int], Cache]:
        """The cache each of these segments runs on, keyed by its (group, tokens) reference."""
        segs = self.plan.segs
        self.ensure(sorted({segs[i].ref[0] for i in idx if segs[i].ref is not None}))
        views: dict[tuple[int, int], Cache] = {}
        for i in idx:
            ref = segs[i].ref
            if ref is not None and ref not in views:
                c = self.held[ref[0]]
                views[ref] = c if ref[1] == len(self.plan.groups[ref[0]].shared) else self.runner.sliced(c, ref[1])
        return views

    def release(self, batch_index: int, keep: set[int]) -> None:
        """Free the caches no batch after ``batch_index`` needs (except ``keep``)."""
        for j in [j for j in self.held if self.plan.last_need.get(j, -1) <= batch_index and j not in keep]:
            del self.held[j]
