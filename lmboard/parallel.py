"""Data-parallel runs under ``torchrun`` (or ``accelerate launch``), on torch.distributed.

A job launched as ``torchrun --nproc-per-node N -m lmboard ...`` runs one process per
rank. Each rank loads the model (on ``cuda:LOCAL_RANK`` where there is a GPU, else the
CPU with gloo, with the cores split between the ranks of a node), runs the engines on
its shard of the items, and sends every finished result to rank 0 the moment it is
finished; rank 0 alone opens the store, writes what it receives (its own results and
the other ranks'), counts the whole job on its progress bar and writes the output
files. What the store already holds is broadcast from rank 0 before any work, so a
killed run resumes with any number of processes.

Sharding (``shard``) is deterministic: items are grouped (questions sharing a few-shot
prefix stay together; a group bigger than a share of the work is cut into consecutive
pieces), and the pieces go, largest first, to the rank with the fewest tokens so far.

Transport: point-to-point ``send``/``recv`` of pickled messages on a gloo group of its
own, from a sender thread on each rank to one receiver thread per rank on rank 0; the
main threads never block on each other until the end. A rank that fails sends its
one-line error to rank 0, which stops the job with it (exit 2); a rank that dies
without a word (killed) is noticed by rank 0's receiver, which stops the job the same
way. Everything received before is already in the store.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmboard.errors import UsageError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str = "none"
    relay: Relay | None = field(default=None, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


_WORLD: list[World] = []
GRACE_S = 10.0  # a failed rank waits this long for rank 0 to report its error and stop the job


def world() -> World:
    """This process's place in the job, set up on first use from torchrun's variables."""
    if not _WORLD:
        _WORLD.append(_init())
    return _WORLD[0]


def _init() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    cuda = torch.cuda.is_available() and os.environ.get("LMBOARD_DEVICE", "") != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    w = World(rank, size, local, local_size, backend)
    w.relay = Relay(w)
    if w.main:
        _on_launcher_stop(w.relay)
    return w


def _on_launcher_stop(relay: Relay) -> None:
    """torchrun stops every rank (SIGTERM) once one has failed, maybe before rank 0 has
    read that rank's last word: rank 0 then says it, or that a rank failed, in one line
    (the store's open transaction rolls back; what was committed stays)."""
    import signal

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # once: a second one ends the process
        for src, kind, payload in list(relay.inbox.queue):
            if kind == "error":
                raise RankFailed(f"rank {src}: {payload}")
        raise RankFailed("a rank failed and the launcher stopped the job; what was stored is kept, "
                         "and the same command resumes with any number of ranks")

    signal.signal(signal.SIGTERM, stop)


def job_over() -> None:
    """Rank 0's job has ended (its line said, if any): a launcher's stop now just ends it."""
    import signal

    if world().parallel and world().main:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def threads_per_rank(cores: int) -> int:
    """The cores of a node split between its ranks (none oversubscribes the others)."""
    w = world()
    return max(1, cores // w.local_size)


@dataclass
class Shard:
    items: list[int]  # indices into the job's items
    tokens: int


def shard(weights: Sequence[int], groups: Sequence[str], size: int) -> list[Shard]:
    """Deterministic, token-balanced shards; items of one group stay together unless the
    group is bigger than a quarter of a rank's share (then in consecutive pieces)."""
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    cap = max(1, sum(weights) // (4 * size)) if size > 1 else sum(weights) + 1
    pieces: list[list[int]] = []
    for members in order.values():
        cur: list[int] = []
        tok = 0
        for i in members:
            if cur and tok + weights[i] > cap:
                pieces.append(cur)
                cur, tok = [], 0
            cur.append(i)
            tok += weights[i]
        pieces.append(cur)
    pieces.sort(key=lambda p: (-sum(weights[i] for i in p), p[0]))
    shards = [Shard([], 0) for _ in range(size)]
    for p in pieces:
        s = min(shards, key=lambda sh: (sh.tokens, shards.index(sh)))
        s.items += p
        s.tokens += sum(weights[i] for i in p)
    for s in shards:
        s.items.sort()
    return shards


def sharding_note(shards: list[Shard]) -> dict:
    return {"world_size": len(shards), "items_per_rank": [len(s.items) for s in shards],
            "tokens_per_rank": [s.tokens for s in shards]}


class RankFailed(UsageError):
    """Another rank stopped: its own one-line error, or that it died."""


class Relay:
    """Results from every rank to rank 0, as they finish."""

    def __init__(self, w: World):
        import torch.distributed as dist

        self.w = w
        self.group = dist.new_group(backend="gloo")
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self._done: set[int] = set()
        if w.main:
            for r in range(1, w.size):
                t = threading.Thread(target=self._receive, args=(r,), daemon=True, name=f"lmb-recv-{r}")
                t.start()
                self.threads.append(t)
        else:
            t = threading.Thread(target=self._send_loop, daemon=True, name="lmb-send")
            t.start()
            self.threads.append(t)

    # rank != 0
    def send(self, kind: str, payload: Any) -> None:
        self.outbox.put((kind, payload))

    def _send_loop(self) -> None:
        import torch
        import torch.distributed as dist

        while True:
            msg = self.outbox.get()
            data = pickle.dumps(msg)  # between the ranks of one job only
            try:
                dist.send(torch.tensor([len(data)], dtype=torch.int64), 0, group=self.group)
                dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), 0, group=self.group)
            except Exception:  # rank 0 has ended (its files written) or failed (it said why)
                return
            if msg[0] in ("done", "error"):
                return

    def close(self, timeout: float | None = None) -> bool:
        """Wait until every message has gone (rank != 0), or every other rank's last
        word has come (rank 0); False if a thread is still at it after ``timeout``."""
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)

    # rank 0
    def _receive(self, src: int) -> None:
        import torch
        import torch.distributed as dist

        try:
            while True:
                n = torch.zeros(1, dtype=torch.int64)
                dist.recv(n, src, group=self.group)
                buf = torch.empty(int(n), dtype=torch.uint8)
                dist.recv(buf, src, group=self.group)
                kind, payload = pickle.loads(buf.numpy().tobytes())
                self.inbox.put((src, kind, payload))
                if kind in ("done", "error"):
                    return
        except Exception:  # the peer died: its connection closed
            self.inbox.put((src, "error", "stopped without a word (killed, or out of memory); what it finished "
                                          "is in the store, and the same command resumes with any number of ranks"))

    def poll(self, handle: Callable[[int, str, Any], None], until: Callable[[], bool] | None = None) -> None:
        """Hand every message received so far to ``handle``; with ``until``, wait for
        messages until it holds (or every other rank has ended). A rank's error stops
        the job here. A phase's messages after ``until`` holds stay for the next phase."""
        while True:
            if until is not None and (until() or self._waiting == 0):
                return
            try:
                src, kind, payload = self.inbox.get(block=until is not None)
            except queue.Empty:
                return
            if kind == "error":
                raise RankFailed(f"rank {src}: {payload}")
            if kind == "done":
                self._done.add(src)
            else:
                handle(src, kind, payload)

    @property
    def _waiting(self) -> int:
        return self.w.size - 1 - len(self._done)


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    w = world()
    if not w.parallel:
        return obj
    import torch.distributed as dist

    box = [obj if w.main else None]
    try:
        dist.broadcast_object_list(box, 0)
    except RuntimeError as e:  # a rank stopped before the job began (its connection closed)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RankFailed(f"a rank stopped before the job began ({first})") from None
    return box[0]


def leave(code: int) -> None:
    """The end of a rank's process. Rank 0 waits for every other rank's last word (each
    sends it right after its share): a gloo receive still waiting when the interpreter
    tears the process group down aborts the process (``terminate called without an
    active exception``). With every transfer over, the group is destroyed as torch asks;
    a rank ending on an error, or left waiting, leaves without running destructors (what
    it wrote is committed and its streams are flushed)."""
    w = world()
    if not w.parallel or w.relay is None:
        return
    done = code == 0 and w.relay.close(timeout=4 * GRACE_S)
    if done:
        import torch.distributed as dist

        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a peer already gone: nothing left to release
            pass
        return
    import logging
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # 0: rank 0 has every result (each rank sent its counters after its rows)


def finish_rank(error: str | None = None) -> None:
    """A rank other than 0 ends: its last message (done, or its error) to rank 0."""
    w = world()
    if w.parallel and not w.main and w.relay is not None:
        w.relay.send("error" if error else "done", error)
        w.relay.close()
        if error:  # give rank 0 the time to say it: torchrun stops every rank once one has failed
            import time

            time.sleep(GRACE_S)
