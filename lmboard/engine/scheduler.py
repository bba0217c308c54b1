"""Continuous batching: up to N sequences decode together; a finished one leaves at once
and a waiting prompt takes its slot in the next step.

N and the KV cache are sized from memory: the cache holds N sequences of the longest
prompt plus ``max_new_tokens``; N is the largest that fits in a quarter of the memory
available (or ``memory_bytes``), capped by ``max_batch``. On out-of-memory during a step
the newer half of the sequences in flight go back to the queue (they restart from their
prompt) and N halves, as the scoring engine halves its batches.

Everything here is tokens: the caller renders prompts, turns tokens into text and
records results (generation.py). Each finished sequence is handed out the moment it
ends, so a killed run loses no finished answer.
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmboard.engine.batching import is_oom
from lmboard.engine.decode import Decoder, DecodeWeights, SlotCache, cache_bytes_per_token
from lmboard.engine.packed import PackedModel, PrefixKV, Segment
from lmboard.engine.plan import in_order
from lmboard.engine.prefill import common_start
from lmboard.engine.sampling import SamplingConfig, choose, new_generator, process

CPU_MAX_SLOTS = 128
_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # PackedModel -> DecodeWeights


@dataclass(frozen=True)
class SchedulerSettings:
    max_batch: int | None = None  # sequences in flight; None: what memory allows, up to CPU_MAX_SLOTS
    memory_bytes: int | None = None  # for the KV cache; None: a quarter of the memory available
    prefill_tokens: int = 2048  # prompt tokens per prefill forward
    oom_guard: Callable[[int, int], None] | None = None  # tests: (sequences, cache positions) -> raise
    on_event: Callable[[str, str, int], None] | None = None  # ("admit" | "finish", key, slot)
    on_tokens: Callable[[int], None] | None = None  # after each forward: how many sequences got a token


@dataclass(frozen=True)
class DecodeJob:
    """Prompts as token ids, and what ends an answer."""

    prompts: Sequence[Sequence[int]]
    keys: Sequence[str]
    max_new_tokens: int
    sampling: SamplingConfig
    seed: int = 0
    stopped: Callable[[list[int]], bool] | None = None  # a stop string has appeared in these tokens


@dataclass
class Finished:
    index: int  # into the job's prompts
    tokens: list[int]  # the new tokens, an end-of-turn token last if one ended it
    latency_s: float
    slots: int  # sequences the scheduler could hold when it ended


@dataclass
class _Seq:
    index: int
    t0: float
    gen: Any
    new: list[int] = field(default_factory=list)


def plan_slots(pm: PackedModel, capacity: int, n: int, sched: SchedulerSettings) -> int:
    budget = sched.memory_bytes
    if budget is None:
        try:
            budget = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
        except (ValueError, OSError):
            budget = 1 << 30
    fits = budget // max(1, cache_bytes_per_token(pm) * capacity)
    return max(1, min(n, sched.max_batch or CPU_MAX_SLOTS, fits))


def _weights(pm: PackedModel, head: Any) -> DecodeWeights:
    if pm not in _WEIGHTS:
        _WEIGHTS.clear()  # one model at a time: prepacked copies are as large as the weights
        _WEIGHTS[pm] = DecodeWeights(pm, head, prepack=_prepack_fits(pm, head))
    return _WEIGHTS[pm]


def _prepack_fits(pm: PackedModel, head: Any) -> bool:
    """Prepacked copies of the weights only while they take under a quarter of the free memory."""
    size = sum(t.numel() * t.element_size() for L in pm.layers for t in (L.qkv, L.o, L.gu, L.down))
    size += head.weight.numel() * head.weight.element_size()
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return False
    return size < free // 4


class Scheduler:
    def __init__(self, pm: PackedModel, head: Any, job: DecodeJob, sched: SchedulerSettings):
        self.job, self.sched, self.pm = job, sched, pm
        capacity = max(len(p) for p in job.prompts) + job.max_new_tokens
        self.slots = plan_slots(pm, capacity, len(job.prompts), sched)
        while True:
            try:
                cache = SlotCache(pm, self.slots, capacity)
                break
            except (RuntimeError, MemoryError) as e:
                if not is_oom(e) or self.slots == 1:
                    raise
                self.slots //= 2
        self.dec = Decoder(pm, _weights(pm, head), cache)
        self.waiting: deque[int] = deque(range(len(job.prompts)))
        self.active: list[_Seq] = []
        self.base: PrefixKV | None = None

    def run(self) -> Iterator[Finished]:
        import torch

        n = common_start(self.job.prompts)
        with torch.inference_mode():
            if n:
                self.base = self.pm.forward([Segment(list(self.job.prompts[0][:n]))], kv_out=True)[1][0]
            while self.waiting or self.active:
                try:
                    if self.waiting and len(self.active) < self.slots:
                        yield from self._admit()
                    if self.active:
                        yield from self._step()
                except (RuntimeError, MemoryError) as e:
                    if not is_oom(e) or self.slots == 1:
                        raise
                    self._back_off()

    def _admit(self) -> Iterator[Finished]:
        take = list(itertools.islice(self.waiting, self.slots - len(self.active)))
        n = self.base.length if self.base is not None else 0
        for chunk in in_order([len(self.job.prompts[i]) - n for i in take], self.sched.prefill_tokens):
            idx = [take[c] for c in chunk]
            first = len(self.active)
            if self.sched.oom_guard:
                self.sched.oom_guard(first + len(idx), int(self.dec.cache.lens[:first].sum()))
            h = self.dec.prefill(range(first, first + len(idx)), [self.job.prompts[i] for i in idx], self.base)
            now = time.perf_counter()
            for i in idx:
                self.waiting.popleft()  # admitted only now: a failed prefill leaves them waiting
                key = self.job.keys[i]
                self.active.append(_Seq(i, now, None if not self.job.sampling.do_sample
                                        else new_generator(self.job.seed, key)))
                if self.sched.on_event:
                    self.sched.on_event("admit", key, len(self.active) - 1)
            yield from self._advance(h, first)

    def _step(self) -> Iterator[Finished]:
        import torch

        if self.sched.oom_guard:
            self.sched.oom_guard(len(self.active), int(self.dec.cache.lens[: len(self.active)].sum()))
        h = self.dec.step(torch.tensor([s.new[-1] for s in self.active]))
        yield from self._advance(h, 0)

    def _advance(self, h: Any, first: int) -> Iterator[Finished]:
        """Append each sequence's next token (rows of ``h`` are slots ``first..``), then
        hand out the finished ones and compact the slots."""
        seqs = self.active[first:first + int(h.shape[0])]
        cfg = self.job.sampling
        if cfg.plain_greedy:
            nxt = self.dec.greedy(h).tolist()
        else:
            logits = process(cfg, self.dec.logits(h), [list(self.job.prompts[s.index]) + s.new for s in seqs],
                             [len(s.new) for s in seqs])
            nxt = choose(cfg, logits, [s.gen for s in seqs])
        if self.sched.on_tokens:
            self.sched.on_tokens(len(nxt))
        done = []
        for slot, (s, t) in enumerate(zip(seqs, nxt, strict=True), start=first):
            s.new.append(int(t))
            if t in cfg.eos or len(s.new) >= self.job.max_new_tokens or (
                    self.job.stopped is not None and self.job.stopped(s.new)):
                done.append(slot)
        now = time.perf_counter()
        for slot in sorted(done, reverse=True):
            s = self.active[slot]
            if self.sched.on_event:
                self.sched.on_event("finish", self.job.keys[s.index], slot)
            last = len(self.active) - 1
            if slot != last:
                self.dec.cache.move(last, slot)
                self.active[slot] = self.active[last]
            self.active.pop()
            yield Finished(s.index, s.new, now - s.t0, self.slots)

    def _back_off(self) -> None:
        """Out of memory: N halves; sequences beyond it go back to the front of the queue
        (they restart from their prompt: the same answer, computed again)."""
        self.slots = max(1, self.slots // 2)
        for s in reversed(self.active[self.slots:]):
            self.waiting.appendleft(s.index)
        del self.active[self.slots:]


def run_continuous(pm: PackedModel, head: Any, job: DecodeJob, sched: SchedulerSettings) -> Iterator[Finished]:
    """Every prompt of ``job`` answered, each handed out as it finishes."""
    if not job.prompts:
        return iter(())
    return Scheduler(pm, head, job, sched).run()
