"""Fault injection for the crash-safety tests: ``LMBOARD_FAULT=POINT=N[:SIGNAL]``.

The N-th time the process reaches the named point it sends itself the signal (KILL by
default, or INT), so a test can kill a run at an exact place: in the middle of a store
transaction, between two scoring batches, during the float32 recheck. Unset, each
point costs one dictionary lookup.

Points: store.write (inside a transaction, before it commits), engine.batch (a batch
scored, before its results are handed on), recheck (close calls rescored, before they
are handed on), generate.result (an answer generated, before it is stored),
judge.chunk (judgments made, before they are stored), finetune.step (an optimizer step
logged and stored). ``LMBOARD_FAULT_RANK=R`` limits the fault to rank R of a
torchrun job.
"""

from __future__ import annotations

import os
import signal

_plan: dict[str, tuple[int, int]] | None = None
_seen: dict[str, int] = {}


def _parse() -> dict[str, tuple[int, int]]:
    rank = os.environ.get("LMBOARD_FAULT_RANK")  # under torchrun: only this rank is killed
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return {}
    plan = {}
    for part in filter(None, os.environ.get("LMBOARD_FAULT", "").split(",")):
        point, _, rest = part.partition("=")
        count, _, sig = rest.partition(":")
        plan[point.strip()] = (int(count), getattr(signal, f"SIG{sig.strip().upper() or 'KILL'}"))
    return plan


def fault(point: str) -> None:
    """Reached ``point``: kill this process here if the environment asks for it."""
    global _plan
    if _plan is None:
        _plan = _parse()
    if point not in _plan:
        return
    _seen[point] = _seen.get(point, 0) + 1
    count, sig = _plan[point]
    if _seen[point] == count:
        if sig == signal.SIGINT:  # Ctrl-C as a terminal sends it, even where the launcher
            signal.signal(sig, signal.default_int_handler)  # (a shell's `cmd &`) left SIGINT ignored
        os.kill(os.getpid(), sig)
