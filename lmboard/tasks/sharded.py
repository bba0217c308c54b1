"""A job's side of a data-parallel run (lmboard/parallel.py): which items this rank
runs, and where its finished results go (the store on rank 0, rank 0 from the others).

In one process (no torchrun) the sink writes to the store and the shard is every item:
the same code path, no distributed runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmboard.engine import EngineStats
from lmboard.parallel import shard, sharding_note, world
from lmboard.store import Store

Records = list[tuple[str, dict]]


def shard_of(items: Sequence[Any], groups: Sequence[str], provenance: dict,
             weights: Sequence[int] | None = None) -> list[int]:
    """This rank's items (indices), balanced by token count (``weights``, else each
    item's ``ids``), groups kept together; the sharding is recorded in
    ``provenance["parallel"]``."""
    w = world()
    if not w.parallel:
        provenance["parallel"] = {"world_size": 1}
        return list(range(len(items)))
    shards = shard(list(weights) if weights is not None else [len(it.ids) for it in items], groups, w.size)
    provenance["parallel"] = {**sharding_note(shards), "backend": w.backend}
    return shards[w.rank].items


class Sink:
    """Finished results: into the store on rank 0 (with what the other ranks sent so
    far), to rank 0 from the others; progress counted for the whole job on rank 0."""

    def __init__(self, store: Store | None, run: str, tick: Callable[[int], None], kind: str = "samples"):
        self.store, self.run, self._tick, self.kind = store, run, tick, kind
        self.w = world()
        self.others: list[dict] = []  # the other ranks' engine counters

    def add(self, state: str, records: Records) -> None:
        if self.w.main:
            self._write(state, records)
            self.poll()
        else:
            self.w.relay.send("rows", (state, records))

    def tick(self, n: int) -> None:
        if self.w.main:
            self._tick(n)
        else:
            self.w.relay.send("progress", n)

    def _write(self, state: str, records: Records) -> None:
        if records:
            self.store.add_samples(self.run, records, state)

    def _handle(self, src: int, kind: str, payload: Any) -> None:
        if kind == "rows":
            self._write(*payload)
        elif kind == "progress":
            self._tick(payload)
        elif kind == "judgments":
            self.store.put_judgments(payload)
        elif kind == "stats":
            self.others.append({"rank": src, **payload})

    def poll(self) -> None:
        if self.w.parallel and self.w.main:
            self.w.relay.poll(self._handle)

    def finish(self, stats: EngineStats | None) -> EngineStats | None:
        """The end of this rank's shard: rank 0 waits for every other rank's results and
        sums the engines' counters; the others send theirs."""
        if not self.w.parallel:
            return stats
        if not self.w.main:
            self.w.relay.send("stats", stats.to_dict() if stats is not None else {})
            return stats
        self.w.relay.poll(self._handle, until=lambda: len(self.others) >= self.w.size - 1)
        if stats is not None:
            for other in self.others:
                for k, v in other.items():
                    if k != "rank" and isinstance(v, int) and not isinstance(v, bool) and k != "batch_tokens":
                        setattr(stats, k, getattr(stats, k) + v)
                    elif k == "recheck_bound":
                        stats.recheck_bound = max(stats.recheck_bound, v)
        return stats

    def finish_dict(self, stats: dict | None) -> dict | None:
        """``finish`` for counters already a dict (the label scorer's): rank 0 sums them."""
        if not self.w.parallel:
            return stats
        if not self.w.main:
            self.w.relay.send("stats", stats or {})
            return stats
        self.w.relay.poll(self._handle, until=lambda: len(self.others) >= self.w.size - 1)
        if stats is None:
            return None
        for other in self.others:
            for k, v in other.items():
                if k in stats and isinstance(v, int) and not isinstance(v, bool) and k != "batch_tokens":
                    stats[k] += v
        return stats


class JudgmentCache:
    """A judge's cache on a rank of a data-parallel run (judge/judges.py uses
    ``get_judgment``, ``put_judgments`` and ``run_lock``): on rank 0 the store, which also
    takes in the other ranks' judgments as they come; elsewhere rank 0's snapshot, new
    judgments sent to rank 0."""

    def __init__(self, store: Store | None, sink: Sink, snapshot: dict[str, dict]):
        self.store, self.sink, self.snapshot = store, sink, snapshot

    def get_judgment(self, key: str) -> dict | None:
        return self.store.get_judgment(key) if self.store is not None else self.snapshot.get(key)

    def put_judgments(self, items: list) -> None:
        if self.store is not None:
            self.store.put_judgments(items)
            self.sink.poll()
        else:
            self.sink.w.relay.send("judgments", items)

    def run_lock(self, run_id: str):
        from contextlib import nullcontext

        return self.store.run_lock(run_id) if self.store is not None else nullcontext()
