"""The float32 recheck of close calls, a resumable stage of its own.

In reduced precision, an item whose two best target logits are closer than the margin
is a close call. It is handed on at once as provisional (the caller stores it as
pending, so a kill loses nothing), and rescored in float32 with the other close calls
of its group of ``GROUP`` consecutive batches once the group's last batch has run; its
float32 row is then handed on as final. Groups are fixed by the plan, and a resumed run
queues the close calls it finds stored as pending into the same groups, so it rechecks
exactly the forwards an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmboard.engine.plan import Plan, pack_segments
from lmboard.engine.prefix_cache import PrefixCaches
from lmboard.engine.runner import Runner
from lmboard.engine.stats import Budget, EngineStats
from lmboard.faults import fault

GROUP = 8  # batches whose close calls are rechecked together


class Recheck:
    def __init__(self, checker: Runner, margin: float, plan: Plan, caches: PrefixCaches, targets: Any,
                 budget: Budget, stats: EngineStats, emit: Callable[[list[int], Any], None]):
        self.checker, self.margin, self.plan, self.caches = checker, margin, plan, caches
        self.targets, self.budget, self.stats, self.emit = targets, budget, stats, emit
        self.pending: dict[int, list[int]] = {}  # group -> segment indices of its close calls

    def close_rows(self, bi: int, idx: list[int], logits: Any) -> list[int]:
        """The rows of this batch that are close calls; they are queued for the recheck."""
        top2 = logits.topk(2, dim=-1).values
        rows = [r for r in range(len(idx)) if float(top2[r, 0] - top2[r, 1]) < self.margin]
        self.pending.setdefault(bi // GROUP, []).extend(idx[r] for r in rows)
        return rows

    def add_stored(self, bi: int, idx: list[int]) -> None:
        """Close calls a killed run stored as pending (found by a resumed run)."""
        if idx:
            self.pending.setdefault(bi // GROUP, []).extend(idx)

    def waiting(self) -> set[int]:
        """The caches the queued close calls still need."""
        segs = self.plan.segs
        return {segs[i].ref[0] for idx in self.pending.values() for i in idx if segs[i].ref is not None}

    def after_batch(self, bi: int) -> None:
        """Recheck every group whose last batch has now run."""
        last = bi == len(self.plan.batches) - 1
        for g in sorted(self.pending):
            if last or g < (bi + 1) // GROUP:
                self._recheck(sorted(self.pending.pop(g)))

    def _recheck(self, idx: list[int]) -> None:
        segs = self.plan.segs
        for chunk in pack_segments([segs[i] for i in idx], self.budget.tokens, False):
            sub = [idx[c] for c in chunk]
            views = self.caches.views(sub)
            exact = self.checker.score([(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids)
                                        for i in sub], self.targets)
            self.stats.rechecked += len(sub)
            self.stats.tokens_run += sum(len(segs[i].ids) for i in sub)
            fault("recheck")
            self.emit(sub, exact)
