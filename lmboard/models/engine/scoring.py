"""Fast scoring of prompts at their last position, with few-shot prefix KV reuse.

What it saves against the usual loop (one full forward per prompt, full-vocabulary
log-softmax at every position):
- prompts that share a prefix (the header and the k shots of a subject) compute its
  KV cache once; only each question's own tokens run on top of it, in batches;
- only the last real position goes through the LM head, and only the target
  columns (the answer letters) leave the engine;
- batches are packed by a token budget, longest first, so padding stays small.

Exactness: the token ids run are always exactly those of the full prompt (plan.py
checks the boundary between prefix and question with the real tokenizer).

The parts: plan.py (what runs where, pure), prefix_cache.py (caches held and freed),
runner.py (the forward: packed or transformers), recheck.py (close calls in float32).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmboard.faults import fault
from lmboard.models.engine.arch import has_sliding_window, text_config
from lmboard.models.engine.batching import auto_budget, run_with_backoff
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.plan import ScoreItem, make_plan
from lmboard.models.engine.prefix_cache import PrefixCaches
from lmboard.models.engine.recheck import Decided, Recheck
from lmboard.models.engine.runner import make_runner
from lmboard.models.engine.stats import Budget, EngineStats

Rows = list[tuple[str, list[float]]]


@dataclass(frozen=True)
class EngineSettings:
    """How the scoring engine runs. Only ``recheck_margin`` can move a number (and only
    towards float32's); the rest changes speed, never predictions."""

    batch_tokens: int | None = None  # None: automatic (largest that fits, halved on OOM)
    prefix_reuse: bool = True
    packed: bool = True  # the packed forward where the model allows it (engine/packed.py)
    # In bfloat16, answers whose two best letters are closer than this (in logits) are
    # scored again on the float32 model. None: calibrated in the run (engine/recheck.py:
    # twice the largest bfloat16-vs-float32 gap error measured); 0: no recheck.
    recheck_margin: float | None = None


Stored = Callable[[str], tuple[list[float] | None, float | None]]


@dataclass
class Handed:
    """Rows the engine hands on: final, or provisional (awaiting their group's recheck);
    for rows rescored in float32, key -> (their bfloat16 row, gap error, calibration?)."""

    rows: Rows
    final: bool = True
    checked: dict[str, tuple[list[float], float, bool]] = field(default_factory=dict)


def _nothing_stored(key: str) -> tuple[None, None]:
    return None, None


def default_budget(lm: LocalLM) -> int:
    cfg = text_config(lm.model)
    inter = getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    return auto_budget(str(lm.device), 4 * cfg.hidden_size * (8 + 4 * inter // cfg.hidden_size))


class _Run:
    """One scoring run's state: the plan, the caches, the recheck and the counters."""

    def __init__(self, lm: LocalLM, items: Sequence[ScoreItem], target_ids: Sequence[int],
                 engine: EngineSettings, stored: Stored, oom_guard: Callable[[int], None] | None, lse: bool):
        import torch

        self.stats = s = EngineStats(items=len(items), prefix_reuse=engine.prefix_reuse)
        if s.prefix_reuse and has_sliding_window(text_config(lm.model)):
            s.prefix_reuse = False  # a sliding-window cache keeps only the window
            s.notes.append("prefix reuse off: sliding-window cache")
        self.budget = Budget(engine.batch_tokens or default_budget(lm), s)
        self.targets = torch.tensor(list(target_ids), device=lm.device)
        self.runner, s.forward, note = make_runner(lm, engine.packed)
        s.notes += [note] if note else []
        wanted = engine.recheck_margin is None or engine.recheck_margin > 0
        checker = self.runner.exact_twin() if wanted and len(target_ids) > 1 and not lse else None
        s.recheck_margin = engine.recheck_margin if checker else 0.0
        s.recheck = "calibrated" if checker and engine.recheck_margin is None else "fixed" if checker else "off"
        self.plan = make_plan(lm.encode, items, s.prefix_reuse, self.budget.tokens, self.runner.one_prefix_per_batch)
        s.boundary_trimmed, s.fallbacks = self.plan.counts.boundary_trimmed, self.plan.counts.fallbacks
        s.prefix_groups = sum(1 for g in self.plan.groups if g.shared)
        # with a recheck, prefixes are computed once by the float32 model and serve both passes
        self.caches = PrefixCaches(self.plan, checker or self.runner, self.budget, s, oom_guard,
                                   float32_twin=checker is not None)
        self.recheck = (Recheck(checker, engine.recheck_margin, self.plan, self.caches, self.targets, self.budget,
                                s, stored) if checker else None)
        self.oom_guard, self.lse = oom_guard, lse
        self.out: list[Handed] = []  # rows scored, not handed on yet

    def _rows(self, idx: list[int], logits: Any) -> Rows:
        return [(self.plan.segs[i].item.key, logits[r].tolist()) for r, i in enumerate(idx)]

    def decided(self, d: Decided) -> Handed:
        return Handed([(self.plan.segs[i].item.key, row) for i, row in zip(d.idx, d.logits, strict=True)],
                      True, d.checked)

    def run(self, bi: int, idx: list[int], views: dict) -> None:
        """Score the segments ``idx`` (a batch, or half of one after an out-of-memory)."""
        segs, s = self.plan.segs, self.stats
        lens = [len(segs[i].ids) for i in idx]
        n = len(idx) * max(lens) if self.runner.one_prefix_per_batch else sum(lens)
        if self.oom_guard:
            self.oom_guard(n)
        logits = self.runner.score([(views[segs[i].ref] if segs[i].ref is not None else None, segs[i].ids)
                                    for i in idx], self.targets, self.lse)
        s.batches += 1
        s.tokens_run += sum(lens)
        s.padded_tokens += n - sum(lens)
        s.prefix_tokens_reused += sum(len(segs[i].item.ids) - len(segs[i].ids) for i in idx)
        fault("engine.batch")
        if self.recheck is not None:  # provisional now; final when the group's recheck has decided
            self.recheck.provisional(idx, logits)
        self.out.append(Handed(self._rows(idx, logits), self.recheck is None))

    def batch(self, bi: int, batch: list[int], skip: Callable[[str], bool]) -> Generator[Handed]:
        keys = [self.plan.segs[i].item.key for i in batch]
        rc = self.recheck
        if not all(map(skip, keys)):  # else stored by an earlier run: at most its group's recheck is left
            views = self.caches.views(batch)
            run_with_backoff(batch, lambda idx: self.run(bi, idx, views), on_oom=self.budget.halve)
            yield from self.out
            self.out.clear()
        if rc is not None:
            yield from map(self.decided, rc.after_batch(bi))
        self.caches.release(bi, rc.waiting() if rc is not None else set())


def score_last(lm: LocalLM, items: Sequence[ScoreItem], target_ids: Sequence[int],
               engine: EngineSettings = EngineSettings(recheck_margin=0.0),
               skip: Callable[[str], bool] = lambda key: False, stored: Stored = _nothing_stored,
               oom_guard: Callable[[int], None] | None = None, lse: bool = False) -> Generator[Handed, None, EngineStats]:
    """Logits of ``target_ids`` at each item's last position, handed on as they are made.

    Batch composition depends only on the items and the budget, so a resumed run (whose
    stored items ``skip``) computes exactly what the interrupted one would have; rows
    stored as provisional are only decided and rechecked (``stored``: a pending row's
    logits, or a rescored row's bfloat16 logits and gap error). ``oom_guard``: tests
    inject a memory limit (tokens -> raise). ``lse``: each row ends with one more column,
    the log-sum-exp over the whole vocabulary (log-probabilities of the targets are their
    logits minus it). Returns the engine's counters.
    """
    import torch

    run = _Run(lm, items, target_ids, engine, stored, oom_guard, lse)
    with torch.inference_mode():
        for bi, batch in enumerate(run.plan.batches):
            yield from run.batch(bi, batch, skip)
    return run.stats


def score_all(lm: LocalLM, items: Sequence[ScoreItem], target_ids: Sequence[int],
              engine: EngineSettings = EngineSettings(recheck_margin=0.0), **kw: Any) -> tuple[dict, EngineStats]:
    """``score_last`` run to the end: (key -> final row, counters)."""
    rows: dict[str, list[float]] = {}
    gen = score_last(lm, items, target_ids, engine, **kw)
    while True:
        try:
            handed = next(gen)
        except StopIteration as done:
            return rows, done.value
        if handed.final:
            rows.update(handed.rows)
