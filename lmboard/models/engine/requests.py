"""The LM protocol's ``score`` on the engine: score requests in, batches of results out.

Requests with ``targets`` run on ``score_last`` (one plan per target set: an exam's
letters), requests with ``continuations`` on ``score_labels``. With ``exact`` (the job
takes the argmax), a reduced-precision model's close calls are rechecked on its float32
twin (recheck.py): rows are handed on as provisional first, and the recheck's record of
a rescored row (its bfloat16 logits and gap error) travels as the result's note. The
job stores both and hands them back on resume; only this module reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from lmboard.lm import Scored, ScoreRequest, sum_counters
from lmboard.models.engine.continuations import LabelItem, score_labels
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.scoring import EngineSettings, Handed, ScoreItem, score_last

T = TypeVar("T")
U = TypeVar("U")


def score_requests(lm: LocalLM, requests: Sequence[ScoreRequest], engine: EngineSettings, exact: bool,
                   stored: Mapping[str, Scored]) -> Generator[list[Scored], None, dict[str, Any] | None]:
    """Batches of results; returns the engine's counters."""
    by_targets: dict[tuple[int, ...], list[ScoreRequest]] = {}
    labels: list[ScoreRequest] = []
    for r in requests:
        if bool(r.targets) == bool(r.continuations):
            raise ValueError(f"score request {r.key!r}: give targets or continuations (one of them)")
        if r.targets:
            by_targets.setdefault(tuple(r.targets), []).append(r)
        else:
            labels.append(r)
    stats = None
    margin = engine.recheck_margin if exact else 0.0
    for targets, reqs in by_targets.items():
        items = [ScoreItem(r.key, list(r.ids), r.prefix) for r in reqs]
        run = score_last(lm, items, targets, replace(engine, recheck_margin=margin), skip=stored.__contains__,
                         stored=lambda key: recheck_state(stored.get(key)))
        counters = yield from mapped(run, handed_on)
        stats = sum_counters(stats, counters.to_dict())
    if labels:
        items = [LabelItem(r.key, list(r.ids), [list(c) for c in r.continuations]) for r in labels]
        counters = yield from mapped(score_labels(lm, items, engine, skip=stored.__contains__),
                                     lambda done: [Scored(k, logprobs=lp, greedy=g) for k, lp, g in done])
        stats = sum_counters(stats, counters.to_dict())
    return stats


def handed_on(h: Handed) -> list[Scored]:
    out = []
    for key, row in h.rows:
        checked = h.checked.get(key)
        note = None if checked is None else {"recheck": dict(zip(("bf16_logits", "gap_error", "calibration"), checked,
                                                                  strict=True))}
        out.append(Scored(key, logits=row, final=h.final, note=note))
    return out


def recheck_state(s: Scored | None) -> tuple[list[float] | None, float | None]:
    """What the recheck needs of a stored result: a provisional row's logits (None, as its
    gap error is not measured yet); a rescored row's bfloat16 logits and gap error."""
    if s is None:
        return None, None
    if not s.final:
        return s.logits, None
    rc = (s.note or {}).get("recheck") or {}
    return rc.get("bf16_logits"), rc.get("gap_error")


def mapped(gen: Generator[T, None, Any], fn: Callable[[T], U]) -> Generator[U, None, Any]:
    """``fn`` of each item of ``gen``, keeping its return value; closes it when left early."""
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as end:
                return end.value
            yield fn(item)
    finally:
        gen.close()

