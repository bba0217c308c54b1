"""Continuous batching: up to N sequences decode together; a finished one leaves at once
and a waiting prompt takes its slot in the next step.

N and the KV cache are sized from memory: the cache holds N sequences of the longest
prompt plus ``max_new_tokens``; N is the largest that fits in a quarter of the memory
available (or ``memory_bytes``), capped by ``max_batch``. On out-of-memory during a step
the newer half of the sequences in flight go back to the queue (they restart from their
prompt) and N halves, as the scoring engine halves its batches.

Prompts that share a start (a system prompt; a task's instructions after it) run it
once: the shared starts form a trie, each node computed on its parent's cache, and each
prompt prefills only its own tokens on its deepest node. Each prompt has its own answer
limit and stop check, so several recipes (a routed benchmark's routes) decode in one job.

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

from lmboard.models.engine.batching import is_oom
from lmboard.models.engine.decode import Decoder, DecodeWeights, SlotCache, cache_bytes_per_token
from lmboard.models.engine.packed import PackedModel, PrefixKV, Segment
from lmboard.models.engine.plan import MIN_SHARED, common_prefix_len, in_order
from lmboard.models.engine.prefill import common_start
from lmboard.models.engine.sampling import SamplingConfig, choose, new_generator, process

CPU_MAX_SLOTS = 128
# Speculative decoding at the tail of a job. With a few sequences in flight a decode
# step reads every weight for a few tokens' arithmetic (SmolLM2 on 2 cores: 22 ms for
# one sequence in bfloat16, 31 ms in float32, against 27 and 60 ms for eight): there,
# each sequence's likely continuation, looked up in its own prompt and answer (the
# tokens that followed the latest earlier occurrence of its last few tokens: answers
# that copy a product name or repeat a line), runs with it in one packed forward, and
# every guessed token the model itself chooses is kept. Greedy only; the tokens are
# the model's choices, as step by step. In reduced precision only: a float32 forward of
# nine tokens costs about two steps here (small float32 products run far below the
# large ones' rate, and the head's too), and ShopBench's float32 re-decodes took 3.2 s
# with it against 2.9 s without.
SPEC_ROWS = 4
SPEC_DRAFT = 8  # guessed tokens per sequence and forward
SPEC_NGRAMS = (3, 2, 1)  # the suffix lengths looked up, longest first
_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # PackedModel -> DecodeWeights


@dataclass(frozen=True)
class SchedulerSettings:
    max_batch: int | None = None  # sequences in flight; None: what memory allows, up to CPU_MAX_SLOTS
    memory_bytes: int | None = None  # for the KV cache; None: a quarter of the memory available
    prefill_tokens: int = 2048  # prompt tokens per prefill forward
    oom_guard: Callable[[int, int], None] | None = None  # tests: (sequences, cache positions) -> raise
    on_event: Callable[[str, str, int], None] | None = None  # ("admit" | "finish", key, slot)
    on_tokens: Callable[[int], None] | None = None  # after each forward: how many sequences got a token
    # greedy, with at most SPEC_ROWS sequences in flight: prompt-lookup speculative decoding.
    # None: in reduced precision only (see SPEC_ROWS); False: never (``lmboard speed``
    # times one token per step); True: in float32 too.
    speculate: bool | None = None


@dataclass(frozen=True)
class DecodeJob:
    """Prompts as token ids, and what ends an answer."""

    prompts: Sequence[Sequence[int]]
    keys: Sequence[str]
    max_new_tokens: int
    sampling: SamplingConfig
    seed: int = 0
    stopped: Callable[[list[int]], bool] | None = None  # a stop string has appeared in these tokens
    # Several recipes in one job (a routed benchmark's routes): per prompt, its own limit
    # and stop check (None: the job's).
    limits: Sequence[int] | None = None
    stops: Sequence[Callable[[list[int]], bool] | None] | None = None
    # greedy: keep each answer's closest call (Finished.closest), for the float32 recheck
    # of answers decoded in reduced precision (continuous.py)
    watch: bool = False
    # each prompt's start already run (a verified answer's keys and values: verify_greedy);
    # None: the prompts' shared-start trie
    bases: Sequence[PrefixKV | None] | None = None

    def limit(self, i: int) -> int:
        return self.limits[i] if self.limits is not None else self.max_new_tokens

    def stop(self, i: int) -> Callable[[list[int]], bool] | None:
        return self.stops[i] if self.stops is not None else self.stopped


@dataclass
class Finished:
    index: int  # into the job's prompts
    tokens: list[int]  # the new tokens, an end-of-turn token last if one ended it
    latency_s: float
    slots: int  # sequences the scheduler could hold when it ended
    # DecodeJob.watch: the smallest gap, over its steps, between the two best tokens' float32 logits
    closest: float | None = None


@dataclass
class _Seq:
    index: int
    t0: float
    gen: Any
    new: list[int] = field(default_factory=list)
    closest: float = float("inf")


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
        import torch

        self.job, self.sched, self.pm = job, sched, pm
        capacity = max(len(p) + job.limit(i) for i, p in enumerate(job.prompts))
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
        on = sched.speculate if sched.speculate is not None else pm.dtype != torch.float32
        self.speculates = on and job.sampling.plain_greedy  # at the tail: SPEC_ROWS sequences or fewer
        self.waiting: deque[int] = deque(range(len(job.prompts)))
        self.active: list[_Seq] = []
        self.base_of: dict[int, PrefixKV | None] = {}  # prompt -> the shared start it runs on

    def _base_len(self, i: int) -> int:
        base = self.base_of[i]
        return base.length if base is not None else 0

    def run(self) -> Iterator[Finished]:
        import torch

        with torch.inference_mode():
            bases = self.job.bases if self.job.bases is not None else shared_starts(
                self.pm, self.job.prompts, self.sched.prefill_tokens)
            self.base_of = dict(enumerate(bases))
            while self.waiting or self.active:
                try:
                    if self.waiting and len(self.active) < self.slots:
                        yield from self._admit()
                    if self.active and self.speculates and len(self.active) <= SPEC_ROWS:
                        yield from self._spec_step()
                    elif self.active:
                        yield from self._step()
                except (RuntimeError, MemoryError) as e:
                    if not is_oom(e) or self.slots == 1:
                        raise
                    self._back_off()

    def _admit(self) -> Iterator[Finished]:
        take = list(itertools.islice(self.waiting, self.slots - len(self.active)))
        for chunk in in_order([len(self.job.prompts[i]) - self._base_len(i) for i in take], self.sched.prefill_tokens):
            idx = [take[c] for c in chunk]
            first = len(self.active)
            if self.sched.oom_guard:
                self.sched.oom_guard(first + len(idx), int(self.dec.cache.lens[:first].sum()))
            h = self.dec.prefill(range(first, first + len(idx)), [self.job.prompts[i] for i in idx],
                                 [self.base_of[i] for i in idx])
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

    def _spec_step(self) -> Iterator[Finished]:
        """One forward over each sequence's last token and its guessed continuation; each
        keeps its choices up to the first guess it did not choose, and the cache of the
        tokens that led to them. Without any guess, a plain step."""
        drafts = []
        for s in self.active:
            room = min(SPEC_DRAFT, self.job.limit(s.index) - len(s.new) - 1)
            drafts.append(lookup_draft([*self.job.prompts[s.index], *s.new], room) if room > 0 else [])
        if not any(drafts):
            yield from self._step()
            return
        if self.sched.oom_guard:
            self.sched.oom_guard(len(self.active), int(self.dec.cache.lens[: len(self.active)].sum()))
        h, kvs = self.dec.extend([[s.new[-1], *d] for s, d in zip(self.active, drafts, strict=True)])
        picks, gaps = self._choose(h, None)
        kept, at = [], 0
        for slot, (d, kv) in enumerate(zip(drafts, kvs, strict=True)):
            mine = picks[at:at + 1 + len(d)]
            m = next((j for j, t in enumerate(d) if mine[j] != t), len(d))  # guesses chosen
            self.dec.accept(slot, kv, m + 1)  # the last token and those guesses
            kept.append((mine[:m + 1], None if gaps is None else gaps[at:at + m + 1]))
            at += 1 + len(d)
        yield from self._append(kept, 0)

    def _choose(self, h: Any, seqs: list[_Seq] | None) -> tuple[list[int], list[float] | None]:
        """Each row's next token (and, watching, the gap between its two best logits)."""
        cfg = self.job.sampling
        if cfg.plain_greedy and self.job.watch:
            top, val = self.dec.candidates(h)
            return top[:, 0].tolist(), (val[:, 0] - val[:, 1]).tolist()
        if cfg.plain_greedy:
            return self.dec.greedy(h).tolist(), None
        assert seqs is not None
        logits = process(cfg, self.dec.logits(h), [list(self.job.prompts[s.index]) + s.new for s in seqs],
                         [len(s.new) for s in seqs])
        return choose(cfg, logits, [s.gen for s in seqs]), None

    def _advance(self, h: Any, first: int) -> Iterator[Finished]:
        """Append each sequence's next token (rows of ``h`` are slots ``first..``)."""
        seqs = self.active[first:first + int(h.shape[0])]
        nxt, gaps = self._choose(h, seqs)
        each = gaps if gaps is not None else [None] * len(nxt)
        yield from self._append([([t], None if g is None else [g]) for t, g in zip(nxt, each, strict=True)], first)

    def _append(self, kept: list[tuple[list[int], list[float] | None]], first: int) -> Iterator[Finished]:
        """Append each sequence's new tokens (slots ``first..``; with the gaps of their
        decisions, watching) up to its end, then hand out the finished ones and compact
        the slots."""
        cfg = self.job.sampling
        if self.sched.on_tokens:
            self.sched.on_tokens(len(kept))
        done = []
        for slot, (s, (toks, gaps)) in enumerate(zip(self.active[first:first + len(kept)], kept, strict=True),
                                                 start=first):
            stop = self.job.stop(s.index)
            for j, t in enumerate(toks):
                s.new.append(int(t))
                if gaps is not None:
                    s.closest = min(s.closest, gaps[j])
                if t in cfg.eos or len(s.new) >= self.job.limit(s.index) or (stop is not None and stop(s.new)):
                    done.append(slot)
                    break
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
            yield Finished(s.index, s.new, now - s.t0, self.slots, s.closest if self.job.watch else None)

    def _back_off(self) -> None:
        """Out of memory: N halves; sequences beyond it go back to the front of the queue
        (they restart from their prompt: the same answer, computed again)."""
        self.slots = max(1, self.slots // 2)
        for s in reversed(self.active[self.slots:]):
            self.waiting.appendleft(s.index)
        del self.active[self.slots:]


def lookup_draft(context: Sequence[int], k: int) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the context's
    last n tokens, for n in SPEC_NGRAMS, longest first (prompt lookup)."""
    for n in SPEC_NGRAMS:
        if len(context) <= n:
            continue
        tail = list(context[-n:])
        for i in range(len(context) - n - 1, -1, -1):
            if context[i] == tail[0] and list(context[i:i + n]) == tail:
                return list(context[i + n:i + n + k])
    return []


def shared_starts(pm: PackedModel, prompts: Sequence[Sequence[int]], prefill_tokens: int) -> list[PrefixKV | None]:
    """The prompts' shared starts as a trie, each node run once on its parent's cache:
    prompts that share at least MIN_SHARED tokens beyond their parent's start get a node
    of their own (a system prompt, then a task's instructions under it). One packed
    forward per trie level; per prompt, its deepest node (each prompt keeps at least its
    last token its own)."""
    base_of: list[PrefixKV | None] = [None] * len(prompts)
    level: list[tuple[list[int], int, PrefixKV | None]] = [(list(range(len(prompts))), 0, None)] if prompts else []
    while level:
        grow = []  # (members, tokens shared with the parent, tokens shared, parent's cache)
        for idx, n, base in level:
            for run in _runs(prompts, idx, n + MIN_SHARED):
                if len(run) == 1:
                    base_of[run[0]] = base
                else:
                    grow.append((run, n, common_start([prompts[i] for i in run]), base))
        level = []
        for chunk in in_order([m - n for _, n, m, _ in grow], prefill_tokens):
            parts = [grow[c] for c in chunk]
            kvs = pm.forward([Segment(list(prompts[run[0]][n:m]), base) for run, n, m, base in parts], kv_out=True)[1]
            level += [(run, m, kv if base is None else base.extended(kv))
                      for (run, _, m, base), kv in zip(parts, kvs, strict=True)]
    return base_of


def verify_greedy(pm: PackedModel, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                  prefill_tokens: int = 2048) -> list[tuple[int, int, PrefixKV] | None]:
    """Greedy answers (decoded elsewhere: in bfloat16) checked on ``pm`` (the float32
    twin) in one teacher-forced forward per batch, as speculative decoding checks a
    draft: per answer, None if ``pm``'s greedy choice is each of its tokens in turn,
    else (j, t, kv): its first j tokens are ``pm``'s, ``pm`` chooses t next, and kv holds
    ``pm``'s keys and values of the prompt and those j tokens (to decode on from)."""
    import torch

    bases = shared_starts(pm, prompts, prefill_tokens)
    full = [list(p) + list(a[:-1]) for p, a in zip(prompts, answers, strict=True)]
    starts = [b.length if b is not None else 0 for b in bases]
    out: list[tuple[int, int, PrefixKV] | None] = [None] * len(prompts)
    with torch.inference_mode():
        for chunk in in_order([len(f) - n for f, n in zip(full, starts, strict=True)], prefill_tokens):
            h, kvs = pm.forward([Segment(full[i][starts[i]:], bases[i]) for i in chunk], keep="all", kv_out=True)
            end = 0
            for i, kv in zip(chunk, kvs, strict=True):
                end += len(full[i]) - starts[i]
                logits = h[end - len(answers[i]):end] @ pm.head_w.float().T
                if pm.head_b is not None:
                    logits = logits + pm.head_b.float()
                pred = logits.argmax(-1).tolist()
                j = next((t for t, (x, y) in enumerate(zip(pred, answers[i], strict=True)) if x != y), None)
                if j is not None:
                    whole = kv if bases[i] is None else bases[i].extended(kv)
                    out[i] = (j, pred[j], whole.sliced(len(prompts[i]) + j))
    return out


def _runs(prompts: Sequence[Sequence[int]], idx: list[int], shared: int) -> list[list[int]]:
    """``idx`` in runs that share at least ``shared`` leading tokens (each keeping its last
    token its own), in the order of their ids."""
    order = sorted(idx, key=lambda i: list(prompts[i]))
    runs = [[order[0]]]
    for a, b in zip(order, order[1:], strict=False):
        n = min(common_prefix_len(prompts[a], prompts[b]), len(prompts[a]) - 1, len(prompts[b]) - 1)
        if n >= shared:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


def run_continuous(pm: PackedModel, head: Any, job: DecodeJob, sched: SchedulerSettings) -> Iterator[Finished]:
    """Every prompt of ``job`` answered, each handed out as it finishes."""
    if not job.prompts:
        return iter(())
    return Scheduler(pm, head, job, sched).run()
