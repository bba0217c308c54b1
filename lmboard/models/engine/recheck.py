"""The float32 recheck: reduced-precision answers made float32's, a resumable stage.

In bfloat16 every letter logit is off from the float32 model's by a little. For a
question with bfloat16 logits b and float32 logits f, its *gap error* is
``max_j (b_j - f_j) - min_j (b_j - f_j)``: the most by which bfloat16 can misstate the
difference of any two letters. The float32 answer can differ from bfloat16's only if
bfloat16's top-two gap is at most that error. So a question is a *close call*, and is
rescored on the float32 model, when its bfloat16 gap is below the margin

    margin = SAFETY x (the largest gap error measured so far in the run),

measured on *calibration* questions (a number fixed by the plan per group of batches,
rescored whatever the margin) and on every close call rechecked before. A group's
calibration questions are its rows with the smallest bfloat16 top-two gaps: the error
is measured where it can move a decision, and those rows would mostly be rescored as
close calls anyway, so calibrating costs few extra forwards. Rows are decided in
groups of ``GROUP`` consecutive batches: each row is handed on as provisional when its
batch runs (the caller stores it as pending, so a kill loses nothing); when the group's
last batch has run, its calibration questions are rescored, the margin updated, its
close calls rescored, and every row handed on as final (rescored rows with their
float32 logits, their bfloat16 logits and their gap error). A fixed margin
(``EngineSettings.recheck_margin``) skips the calibration.

Deterministic and resumable: groups and the number of calibration questions are fixed
by the plan, which rows calibrate by the group's bfloat16 rows; a resumed run takes the
stored rows' bfloat16 logits and gap errors (``score_last``'s ``stored``: a pending row's
logits; a rescored row's bfloat16 logits and gap error) and makes exactly the decisions
an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from lmboard.faults import fault
from lmboard.models.engine.plan import Plan, pack_segments
from lmboard.models.engine.prefix_cache import PrefixCaches
from lmboard.models.engine.runner import Runner
from lmboard.models.engine.stats import Budget, EngineStats

GROUP = 8  # batches decided (and rechecked) together
SAFETY = 2.0  # the margin is this many times the largest gap error measured
CAL_EVERY = 32  # one question in this many is a calibration question...
CAL_FIRST = 16  # ...and the first group has at least this many


def gap_error(b: list[float], f: list[float]) -> float:
    d = [x - y for x, y in zip(b, f, strict=True)]
    return max(d) - min(d)


def top_gap(row: list[float]) -> float:
    a, b = sorted(row)[-2:]
    return b - a


@dataclass
class Decided:
    """What the recheck hands on for one group: final rows, and for the rescored ones
    their bfloat16 row and gap error (key -> (bf16 logits, gap error, calibration?))."""

    idx: list[int]
    logits: list[list[float]]
    checked: dict[str, tuple[list[float], float, bool]]


class Recheck:
    def __init__(self, checker: Runner, margin: float | None, plan: Plan, caches: PrefixCaches, targets: Any,
                 budget: Budget, stats: EngineStats, stored: Callable[[str], tuple[list[float] | None, float | None]]):
        self.checker, self.fixed, self.plan, self.caches = checker, margin, plan, caches
        self.targets, self.budget, self.stats, self.stored = targets, budget, stats, stored
        self.rows: dict[int, list[float]] = {}  # segment -> its reduced-precision row, awaiting its group
        self.bound = 0.0  # the largest gap error measured so far
        counts = calibration_counts(plan)  # per group of batches; none with a fixed margin
        self.cal_count = counts if margin is None else [0] * len(counts)
        stats.calibration = sum(self.cal_count)

    def provisional(self, idx: list[int], logits: Any) -> None:
        for r, i in enumerate(idx):
            self.rows[i] = logits[r].tolist()

    def waiting(self) -> set[int]:
        """The caches the group's undecided rows still need."""
        segs = self.plan.segs
        return {segs[i].ref[0] for i in self.rows if segs[i].ref is not None}

    def after_batch(self, bi: int) -> Generator[Decided]:
        """The group's decisions, handed on as they are made, when ``bi`` ends a group."""
        if (bi + 1) % GROUP == 0 or bi == len(self.plan.batches) - 1:
            yield from self._decide(bi // GROUP, [i for b in self.plan.batches[bi - bi % GROUP: bi + 1] for i in b])

    def _decide(self, g: int, group: list[int]) -> Generator[Decided]:
        """Calibrate, then rescore the close calls, of one group; hand every row on as final."""
        keys = [self.plan.segs[i].item.key for i in group]
        known = {i: self.stored(k) for i, k in zip(group, keys, strict=True)}
        for i, (row, err) in known.items():  # a resumed run's pending rows
            if row is not None and err is None and i not in self.rows:
                self.rows[i] = row
        errors = [e for _, e in known.values() if e is not None]  # rows rescored before a kill
        todo = [i for i in group if i in self.rows]  # rows not final yet
        bf16 = {i: self.rows[i] if i in self.rows else known[i][0] for i in group}
        chosen = pick_calibration(group, bf16, self.cal_count[g])
        cal = [i for i in todo if i in chosen]
        cal_err = yield from self._rescore(cal, calibrating=True)
        margin = self.fixed if self.fixed is not None else SAFETY * max(
            [self.bound, *cal_err, *(known[i][1] for i in group if i in chosen and known[i][1] is not None)])
        close = [i for i in todo if i not in chosen and top_gap(self.rows[i]) < margin]
        close_err = yield from self._rescore(close, calibrating=False)
        rest = [i for i in todo if i in self.rows]
        if rest:
            yield Decided(rest, [self.rows.pop(i) for i in rest], {})
        self.bound = max([self.bound, *errors, *cal_err, *close_err])
        self.stats.recheck_bound = self.bound
        self.stats.recheck_margin = margin

    def _rescore(self, idx: list[int], calibrating: bool) -> Generator[Decided, None, list[float]]:
        """Float32 rows of ``idx``, handed on as final; returns their gap errors."""
        segs = self.plan.segs
        errs: list[float] = []
        for chunk in pack_segments([segs[i] for i in idx], self.budget.tokens, False):
            sub = [idx[c] for c in chunk]
            views = self.caches.views(sub)
            exact = self.checker.score([(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids)
                                        for i in sub], self.targets)
            self.stats.rechecked += len(sub)
            self.stats.tokens_run += sum(len(segs[i].ids) for i in sub)
            self.stats.float32_tokens += sum(len(segs[i].ids) for i in sub)
            fault("recheck")
            rows = [exact[r].tolist() for r in range(len(sub))]
            checked = {}
            for i, f in zip(sub, rows, strict=True):
                b = self.rows.pop(i)
                errs.append(gap_error(b, f))
                checked[segs[i].item.key] = (b, errs[-1], calibrating)
            yield Decided(sub, rows, checked)
        return errs


def calibration_counts(plan: Plan) -> list[int]:
    """Calibration questions per group of batches, fixed by the plan: one in CAL_EVERY of
    the plan's questions, and at least CAL_FIRST in the first group."""
    sizes = [sum(len(b) for b in plan.batches[g: g + GROUP]) for g in range(0, len(plan.batches), GROUP)]
    counts = [len(range(0, n, CAL_EVERY)) for n in sizes]
    if sizes:
        counts[0] = min(sizes[0], max(counts[0], CAL_FIRST))
    return counts


def pick_calibration(group: list[int], bf16: dict[int, list[float] | None], n: int) -> set[int]:
    """The ``n`` rows of ``group`` whose bfloat16 top-two gap is smallest (ties in plan
    order). Every row of a group not yet decided has its bfloat16 row; a group decided
    before a kill has nothing left to rescore, whatever is chosen."""
    known = [(top_gap(row), at, i) for at, i in enumerate(group) if (row := bf16.get(i)) is not None]
    return {i for _, _, i in sorted(known)[:n]}
