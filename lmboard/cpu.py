"""The machine's cores: those this process may use, and how many other processes keep busy.

Torch's threads spin at the barrier of every parallel region. When another process holds
one of our cores, the threads wait there for the one it descheduled, and the run crawls:
on this project's 2-core machine with one core kept busy, `lmboard speed smollm2` at
batch 1 took 69 ms a token on two threads against 28 ms on one. So a command's default
is one thread for each core other processes leave idle, measured as it starts (the
clock runs from the command's first line to the model's load, this process's own CPU
time left out).
"""

from __future__ import annotations

import os
import time


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(vals)
    return total - vals[3] - (vals[4] if len(vals) > 4 else 0), total  # idle and iowait are not busy


def _own() -> float:
    t = os.times()
    return t.user + t.system


class Clock:
    """The CPUs other processes keep busy, from its start to a reading."""

    def __init__(self) -> None:
        self.wall, self.machine, self.own = time.monotonic(), _machine(), _own()

    def others(self, at_least: float = 0.25) -> float:
        """CPUs kept busy by other processes since the start, on average (the window is
        at least ``at_least`` seconds: this waits for the rest); 0 where unknown."""
        wait = self.wall + at_least - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = _machine()
        if now is None or self.machine is None or now[1] <= self.machine[1]:
            return 0.0
        share = (now[0] - self.machine[0]) / (now[1] - self.machine[1])
        own = (_own() - self.own) / max(time.monotonic() - self.wall, 1e-6)
        return max(0.0, share * (os.cpu_count() or 1) - own)


_CLOCK: list[Clock] = []


def start() -> None:
    """Start the clock (the command line does, as it starts)."""
    _CLOCK[:] = [Clock()]


def busy_others(at_least: float = 0.25) -> float:
    """CPUs other processes have kept busy since ``start`` (or over ``at_least`` seconds from now)."""
    if not _CLOCK:
        start()
    return _CLOCK[0].others(at_least)


def idle_cores(cores: int, busy: float) -> int:
    """Of ``cores``, those not kept busy by ``busy`` CPUs of other processes (a core half
    busy or more counts as busy); at least one."""
    return max(1, cores - int(busy + 0.5))
