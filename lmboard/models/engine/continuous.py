"""Continuous generation of request sets (generation.py's local path): one decode job
per sampling configuration over every set's requests, each with its own limit and stop
strings (scheduler.py), and the float32 recheck of greedy answers decoded in a reduced
dtype: an answer whose closest decision fell under the margin is checked on the float32
twin in one teacher-forced forward, and from float32's first other choice on, float32
decodes the rest (speculative decoding, with the bfloat16 answer as the draft)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from types import SimpleNamespace
from typing import Any

from lmboard.lm import GenerationSettings, GenRequest, GenResult
from lmboard.models.engine.genbase import (
    effective_settings,
    finish_answer,
    generation_config,
    render,
    stop_check,
)
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.packed_runner import float32_twin
from lmboard.models.engine.sampling import SamplingConfig
from lmboard.models.engine.scheduler import DecodeJob, SchedulerSettings, run_continuous, verify_greedy

# The default margin of a greedy answer's float32 recheck (``exact`` generation), in
# logits between its two best tokens at its closest decision. Measured on SmolLM2 and
# ShopBench's 96 development rows, bfloat16 against float32 (AVX-512 BF16): the 9 rows
# whose bfloat16 answer differed had their closest call at 0.0008 to 0.042, while the
# signed bfloat16 error of a logit difference reached 0.41: this is a measured cut, not
# a bound (a bound would send nearly every row to float32). bench/shopbench_vs_loop.py:
# 0.05 rechecks 23 rows, 100% of answers float32's, 3.5x the kit's loop; 0.02: 13 rows,
# 97.9%, 3.9x; none: 90.6%, 4.75x. On an AMX Xeon (with the fused bfloat16 passes and
# speculation at the tail): 0.05, 23 rows, 96.9% float32's, 4.05x; 0.02: 93.8%, 4.48x;
# none: 87.5%, 6.20x. We keep float32's answers where the margin catches them.
GEN_RECHECK = 0.05


def continuous_groups(lm: LocalLM, pm: Any, groups: Sequence[tuple[Sequence[GenRequest], GenerationSettings]],
                      skip: Callable[[str], bool] | None, sched: SchedulerSettings,
                      recheck: float = 0.0) -> Iterator[GenResult]:
    """One decode job per sampling configuration and seed over the groups' requests not
    skipped, longest answer limit first (admitted first when slots are short); then, in
    float32, the greedy answers that came closer than ``recheck`` to a tie."""
    import torch

    gcs = [generation_config(lm, st) for _, st in groups]
    jobs: dict[tuple, list[tuple[int, GenRequest, str, list[int]]]] = {}
    for g, (reqs, st) in enumerate(groups):
        for r in reqs:
            if skip is None or not skip(r.key):
                text, special = render(lm, r, st)
                key = (SamplingConfig.from_generation_config(gcs[g]), st.seed)
                jobs.setdefault(key, []).append((g, r, text, lm.encode(text, special)))
    for (cfg, seed), items in jobs.items():
        items.sort(key=lambda t: -gcs[t[0]].max_new_tokens)  # stable: a single group keeps its order
        watch = recheck > 0 and cfg.plain_greedy and pm.dtype != torch.float32
        close: list[tuple[tuple, Any]] = []
        for i, f in _decode(lm, pm, items, cfg, seed, gcs, groups, sched, watch):
            if watch and f.closest < recheck:
                close.append((items[i], f))  # stored after its float32 answer: a killed run redoes it
                continue
            yield _result(lm, items[i], f, cfg, gcs, groups, None)
        twin = float32_twin(lm, pm) if close else None
        if twin is not None and twin.head_w.dtype != torch.float32:  # no float32 weights (too large to keep)
            yield from (_result(lm, item, f, cfg, gcs, groups, None) for item, f in close)
        elif twin is not None:
            yield from _recheck(lm, twin, close, cfg, seed, gcs, groups, sched, recheck)


def _recheck(lm: LocalLM, twin: Any, close: list[tuple[tuple, Any]], cfg: SamplingConfig, seed: int, gcs: list,
             groups: Sequence, sched: SchedulerSettings, margin: float) -> Iterator[GenResult]:
    """Close greedy answers made float32's: each checked on the float32 twin in one
    teacher-forced forward (scheduler.verify_greedy); where float32 chooses another
    token, the answer keeps the tokens before it, takes float32's, and float32 decodes
    the rest."""
    verdicts = verify_greedy(twin, [item[3] for item, _ in close], [f.tokens for _, f in close], sched.prefill_tokens)
    more: list[tuple[tuple, list[int], Any]] = []  # (item, its answer so far, float32's cache of all but its last)
    stops = {g: stop_check(lm, groups[g][1].stop) for g in {item[0] for item, _ in close}}
    for (item, f), v in zip(close, verdicts, strict=True):
        if v is not None:
            g, new = item[0], f.tokens[: v[0]] + [v[1]]
            f = replace(f, tokens=new)
            stop = stops[g]
            if not (v[1] in cfg.eos or len(new) >= gcs[g].max_new_tokens or (stop is not None and stop(new))):
                more.append((item, new, v[2]))
                continue
        yield _result(lm, item, f, cfg, gcs, groups, margin)
    if more:
        items = [(g, req, text, ids + new) for (g, req, text, ids), new, _ in more]
        for i, f in _decode(lm, twin, items, cfg, seed, gcs, groups, sched, False, [new for _, new, _ in more],
                            [kv for _, _, kv in more]):
            item, new, _ = more[i]
            yield _result(lm, item, replace(f, tokens=new + f.tokens), cfg, gcs, groups, margin)


def _decode(lm: LocalLM, pm: Any, items: list, cfg: SamplingConfig, seed: int, gcs: list, groups: Sequence,
            sched: SchedulerSettings, watch: bool, before: list[list[int]] | None = None,
            bases: list[Any] | None = None) -> Iterator[tuple[int, Any]]:
    """(index into ``items``, Finished) for each item, as it ends, on the packed model
    ``pm``. ``before``: answer tokens already chosen (now ending the item's prompt), which
    count against the limit and for stop strings; ``bases``: each prompt's keys and
    values already run (all but its last token)."""
    stops = {g: stop_check(lm, groups[g][1].stop) for g in {t[0] for t in items}}
    ahead = [len(b) for b in before] if before is not None else [0] * len(items)
    limits = [gcs[t[0]].max_new_tokens - a for t, a in zip(items, ahead, strict=True)]
    checks = [stops[t[0]] for t in items]
    if before is not None:
        checks = [None if c is None else partial(_with_before, c, b) for c, b in zip(checks, before, strict=True)]
    job = DecodeJob([t[3] for t in items], [t[1].key for t in items], max(limits), cfg, seed, limits=limits,
                    stops=checks, watch=watch, bases=bases)
    head = SimpleNamespace(weight=pm.head_w, bias=pm.head_b)
    for f in run_continuous(pm, head, job, sched):
        yield f.index, f


def _with_before(check: Callable[[list[int]], bool], before: list[int], new: list[int]) -> bool:
    return check(before + new)


def _result(lm: LocalLM, item: tuple, f: Any, cfg: SamplingConfig, gcs: list, groups: Sequence,
            rechecked: float | None) -> GenResult:
    g, req, text, ids = item
    st = groups[g][1]
    out, n, finish = finish_answer(lm, f.tokens, set(cfg.eos), st)
    extra = {"recheck": "float32", "recheck_margin": rechecked} if rechecked is not None else {}
    return GenResult(req.key, out, text, len(ids), n, f.latency_s, finish,
                     {**effective_settings(gcs[g], st), "scheduler": "continuous", "max_batch": f.slots, **extra},
                     note={"recheck": "float32"} if rechecked is not None else None)

