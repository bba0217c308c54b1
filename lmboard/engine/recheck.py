"""The float32 recheck of close calls.

In reduced precision, an item whose two best target logits are closer than the margin
is held back with its batch; once the held close calls fill half a batch (or the run
ends) they are scored again together in float32 on the exact twin of the runner, their
rows replaced, and the held batches emitted in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmboard.engine.plan import Plan, pack_segments
from lmboard.engine.prefix_cache import PrefixCaches
from lmboard.engine.runner import Runner
from lmboard.engine.stats import Budget, EngineStats


class Recheck:
    def __init__(self, checker: Runner, margin: float, plan: Plan, caches: PrefixCaches, targets: Any,
                 budget: Budget, stats: EngineStats, emit: Callable[[list[int], Any], None]):
        self.checker, self.margin, self.plan, self.caches = checker, margin, plan, caches
        self.targets, self.budget, self.stats, self.emit = targets, budget, stats, emit
        self.held: list[tuple[list[int], Any]] = []  # (segment indices, logits) of batches waiting
        self.pending: list[tuple[int, int]] = []  # (held batch, row) of close calls

    def add(self, idx: list[int], logits: Any) -> None:
        top2 = logits.topk(2, dim=-1).values
        self.pending.extend((len(self.held), r) for r in range(len(idx))
                            if float(top2[r, 0] - top2[r, 1]) < self.margin)
        self.held.append((idx, logits.clone()))

    def _pending_segments(self) -> list[int]:
        return [self.held[h][0][r] for h, r in self.pending]

    def due(self, last: bool) -> bool:
        tokens = sum(len(self.plan.segs[i].ids) for i in self._pending_segments())
        return bool(self.held) and (last or tokens >= self.budget.tokens // 2)

    def waiting(self) -> set[int]:
        """The caches the pending close calls still need."""
        segs = self.plan.segs
        return {segs[i].ref[0] for i in self._pending_segments() if segs[i].ref is not None}

    def flush(self, batch_index: int) -> None:
        segs = self.plan.segs
        for chunk in pack_segments([segs[i] for i in self._pending_segments()], self.budget.tokens, False):
            rows = [self.pending[c] for c in chunk]
            sub = [self.held[h][0][r] for h, r in rows]
            views = self.caches.views(sub)
            exact = self.checker.score([(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids)
                                        for i in sub], self.targets)
            for (h, r), row in zip(rows, exact, strict=True):
                self.held[h][1][r] = row
            self.stats.rechecked += len(sub)
            self.stats.tokens_run += sum(len(segs[i].ids) for i in sub)
        for idx, logits in self.held:
            self.emit(idx, logits)
        self.held.clear()
        self.pending.clear()
        self.caches.release(batch_index, set())
