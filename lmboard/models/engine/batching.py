"""Token-budget batch packing and out-of-memory back-off, shared by the engines."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# On a CPU, batches beyond a few thousand tokens stop paying: the matmuls are already
# large enough to saturate the cores and only memory traffic grows.
CPU_DEFAULT_BUDGET = 2048
GPU_START_BUDGET = 65536


class InjectedOOM(RuntimeError):
    """Raised by a test's injected memory limit (behaves like an allocator failure)."""


def is_oom(e: BaseException) -> bool:
    if isinstance(e, InjectedOOM):
        return True
    try:
        import torch

        if isinstance(e, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    msg = str(e).lower()
    return isinstance(e, RuntimeError | MemoryError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "failed to allocate" in msg
    )


def auto_budget(device: str, bytes_per_token: int) -> int:
    """The starting budget for --batch-size auto.

    GPU: a large budget, halved on out-of-memory as batches fail. CPU: the allocator
    cannot be probed safely (the OOM killer does not raise), so the budget is the
    smaller of a speed-optimal size and what fits in a quarter of available memory.
    """
    if device.startswith("cuda"):
        return GPU_START_BUDGET
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 4 << 30
    fits = max(64, int(avail // 4 // max(bytes_per_token, 1)))
    return min(CPU_DEFAULT_BUDGET, fits)


def pack(lengths: Sequence[int], budget: int, extra: int = 0, max_batch: int = 512) -> list[list[int]]:
    """Indices grouped into batches, longest first, so that each batch's
    ``size * (max_len + extra) <= budget`` (a single over-long item still runs alone).

    Deterministic: the same lengths and budget always give the same batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and ((len(cur) + 1) * (new_max + extra) > budget or len(cur) >= max_batch):
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def run_with_backoff(
    items: list[T],
    run: Callable[[list[T]], None],
    on_oom: Callable[[], None] | None = None,
) -> int:
    """Run ``run(items)``; on out-of-memory split the batch in halves and retry each.

    Returns how many times it backed off. A single item that still fails re-raises.
    """
    try:
        run(items)
        return 0
    except Exception as e:
        if not is_oom(e) or len(items) <= 1:
            raise
    _free_cache()
    if on_oom:
        on_oom()
    mid = len(items) // 2
    return 1 + run_with_backoff(items[:mid], run, on_oom) + run_with_backoff(items[mid:], run, on_oom)


def _free_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
