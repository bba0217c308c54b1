"""The job runner: what every resumable job (exam, classification, ShopBench, generation)
does around its model work, written once.

    with JobRun(store, identity, provenance, total, progress) as run:
        mine = run.shard(items, groups, weights)    # this rank's items (all of them in one process)
        run.stored                                  # what the store holds of the run (rank 0's, broadcast)
        run.add(records, final=True)                # one transaction on rank 0; sent to rank 0 elsewhere
        stats = run.finish(stats)                   # rank 0 waits for every rank; counters summed
        if run.main: samples = run.samples(); run.done(summary)

Entering takes the run's lock (a second process on the same run waits, then finds the
work stored), opens or resumes the run and says so, and broadcasts what is stored, so
a killed run resumes with any number of processes. Progress counts the whole job on
rank 0, stored items included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from lmboard.lm import ModelSpec, sum_counters
from lmboard.parallel import broadcast, shard, sharding_note, world
from lmboard.store import OpenedRun, Store, StoredSample
from lmboard.text import stable_hash
from lmboard.version import RESULTS_VERSION

Records = list[tuple[str, dict] | tuple[str, dict, dict | None]]  # (key, data[, note])


def run_key(spec: ModelSpec, dtype: str | None, **settings: object) -> dict:
    """The key a rerun must match to resume: every setting that can change a stored
    result (model spec, resolved dtype, data, prompts and templates, generation settings,
    what the backend says can move its results) and ``RESULTS_VERSION``."""
    return {"model": spec.canonical(), "dtype": dtype, **settings, "results_version": RESULTS_VERSION}


def run_id(prefix: str, key: dict) -> str:
    return f"{prefix}-{stable_hash(key, 12)}"


def family(kind: str, spec: ModelSpec, **what: object) -> str:
    """Only what is evaluated and by which model (any dtype): a new run can then say which
    earlier run it differs from, and how."""
    model = {k: v for k, v in json.loads(spec.canonical()).items() if k != "dtype"}
    return stable_hash([kind, model, what], 16)


@dataclass(frozen=True)
class Identity:
    """Who a run is: the id a rerun must find again, its kind and model, the key it hashes
    (every setting that can move a result) and its family (for "differs from run X")."""

    run_id: str
    kind: str
    model: str
    key: dict
    family: str | None = None


class JobRun:
    def __init__(self, store: Store | None, identity: Identity, provenance: dict, total: int,
                 progress: Callable[[int, int], None] | None = None):
        self.store, self.identity, self.provenance, self.total = store, identity, provenance, total
        self._progress, self.done_count = progress, 0
        self.w = world()
        self.main = self.w.main
        self.opened: OpenedRun | None = None
        self.stored: dict[str, StoredSample] = {}
        self._others: list[dict] = []  # the other ranks' engine counters
        self._exit = ExitStack()

    # ---- the run's life
    def __enter__(self) -> JobRun:
        rid = self.identity.run_id
        if self.main:
            assert self.store is not None
            self._exit.enter_context(self.store.run_lock(rid))
            i = self.identity
            self.opened = self.store.open_run(rid, i.kind, i.model, i.key, self.provenance, i.family)
        self.stored = broadcast(self.store.stored(rid) if self.main else None)
        if self.main:
            self.store.say(describe(self.opened, rid, self.stored, self.total))
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        try:
            if kind is not None and self.main and self.store is not None:
                try:
                    self._salvage()
                except Exception:  # noqa: BLE001 - the error the job ended with is the one to say
                    pass
                if issubclass(kind, KeyboardInterrupt):
                    self.store.set_status(self.identity.run_id, "interrupted")  # not left as running
        finally:
            self._exit.close()

    def _salvage(self) -> None:
        """A job ending in an error (a rank failed and the launcher stopped rank 0, maybe in
        the middle of its own batch): the other ranks' results that have reached rank 0 are
        stored, not lost with it (seen: a rank killed after sending its first batch, and
        rank 0 stopped before it had read it, left nothing stored)."""
        if not self.w.parallel:
            return
        for _src, kind, payload in list(self.w.relay.inbox.queue):  # received, not yet handled
            if kind == "rows":
                self._write(*payload)

    @property
    def resumed(self) -> bool:
        return bool(self.opened and self.opened.resumed)

    def samples(self) -> dict[str, dict]:
        """Every stored sample's data (rank 0)."""
        return dict(self.store.samples(self.identity.run_id))

    def done(self, summary: dict) -> None:
        """The run is done: its summary, and this process's peak memory in its provenance."""
        from lmboard.peak import peak_memory

        self.store.finish_run(self.identity.run_id, summary, peak_memory())

    # ---- sharding
    def shard(self, items: Sequence[Any], groups: Sequence[str], weights: Sequence[int] | None = None) -> list[int]:
        """This rank's items (indices), balanced by token count (``weights``, else each
        item's ``ids``), groups kept together; recorded in ``provenance["parallel"]``."""
        return shard_of(items, groups, self.provenance, weights)

    # ---- results
    def add(self, records: Records, final: bool = True) -> None:
        """Store a batch of results (pending: provisional, the backend decides them later)."""
        state = "final" if final else "pending"
        if self.main:
            self._write(state, records)
            self.poll()
        else:
            self.w.relay.send("rows", (state, records))

    def tick(self, n: int) -> None:
        if self.main:
            self._tick(n)
        else:
            self.w.relay.send("progress", n)

    def _tick(self, n: int) -> None:
        self.done_count += n
        if self._progress:
            self._progress(self.done_count, self.total)

    def _write(self, state: str, records: Records) -> None:
        if records:
            self.store.add_samples(self.identity.run_id, records, state)

    def _handle(self, src: int, kind: str, payload: Any) -> None:
        if kind == "rows":
            self._write(*payload)
        elif kind == "progress":
            self._tick(payload)
        elif kind == "judgments":
            self.store.put_judgments(payload)
        elif kind == "stats":
            self._others.append(payload)

    def poll(self) -> None:
        if self.w.parallel and self.main:
            self.w.relay.poll(self._handle)

    def finish(self, stats: dict | None) -> dict | None:
        """The end of this rank's shard: rank 0 waits for every other rank's results and
        sums the engines' counters; the others send theirs."""
        if not self.w.parallel:
            return stats
        if not self.main:
            self.w.relay.send("stats", stats or {})
            return stats
        self.w.relay.poll(self._handle, until=lambda: len(self._others) >= self.w.size - 1)
        for other in self._others:
            stats = sum_counters(stats, other) if stats is not None else None
        return stats


def shard_of(items: Sequence[Any], groups: Sequence[str], provenance: dict,
             weights: Sequence[int] | None = None) -> list[int]:
    """This rank's items (indices), balanced by token count, groups kept together."""
    w = world()
    if not w.parallel:
        provenance["parallel"] = {"world_size": 1}
        return list(range(len(items)))
    shards = shard(list(weights) if weights is not None else [len(it.ids) for it in items], groups, w.size)
    provenance["parallel"] = {**sharding_note(shards), "backend": w.backend}
    return shards[w.rank].items


def describe(opened: OpenedRun, run: str, stored: dict[str, StoredSample] | None = None,
             total: int = 0) -> str | None:
    """The line a command prints about a run it opens: resumed (with what it kept), or new
    and how it differs."""
    if opened.resumed:
        if not total or stored is None:
            return f"resuming run {run}"
        final = sum(s.final for s in stored.values())
        provisional = len(stored) - final
        return (f"resuming run {run}: {final} of {total} stored" + (f", {provisional} provisional" if provisional else "")
                + ("" if final < total else ": nothing left to compute"))
    if opened.differs_from:
        return (f"new run {run}: settings differ from run {opened.differs_from} in "
                f"{', '.join(opened.changed) or 'the results version'}")
    return None


class JudgmentCache:
    """A judge's cache on a rank of a data-parallel run (judge/judges.py uses
    ``get_judgment``, ``put_judgments`` and ``run_lock``): on rank 0 the store, which also
    takes in the other ranks' judgments as they come; elsewhere rank 0's snapshot, new
    judgments sent to rank 0."""

    def __init__(self, store: Store | None, run: JobRun, snapshot: dict[str, dict]):
        self.store, self.run, self.snapshot = store, run, snapshot

    def get_judgment(self, key: str) -> dict | None:
        return self.store.get_judgment(key) if self.store is not None else self.snapshot.get(key)

    def put_judgments(self, items: list) -> None:
        if self.store is not None:
            self.store.put_judgments(items)
            self.run.poll()
        else:
            self.run.w.relay.send("judgments", items)

    def run_lock(self, run_id: str):
        from contextlib import nullcontext

        return self.store.run_lock(run_id) if self.store is not None else nullcontext()
