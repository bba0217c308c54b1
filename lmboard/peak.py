"""This process's peak memory: printed at the end of every job that ran a local model
and recorded in its run's provenance (``peak_memory``). A peak is what decides whether a
job fits a machine, so it is the peak, not the current size: the resident set's
high-water mark (VmHWM; it includes loading the model), and on a GPU torch's allocated
and reserved peaks."""

from __future__ import annotations

import sys


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    scale = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def reset_rss_peak() -> None:
    """Start a new resident-set peak (Linux; elsewhere the peak stays the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory() -> dict[str, float]:
    """{peak_rss_mb, and where torch has used a GPU: gpu_max_allocated_mb, gpu_max_reserved_mb}.
    torch is not imported here: a process that never imported it used no GPU."""
    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def describe(peak: dict[str, float]) -> str:
    line = f"peak memory: {peak['peak_rss_mb'] / 1024:.2f} GB resident"
    if "gpu_max_allocated_mb" in peak:
        line += (f", GPU {peak['gpu_max_allocated_mb'] / 1024:.2f} GB allocated "
                 f"({peak['gpu_max_reserved_mb'] / 1024:.2f} GB reserved)")
    return line
