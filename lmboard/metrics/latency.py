"""Timing summaries: linear-interpolated percentiles, and median/p90/p99/mean."""

from __future__ import annotations

import statistics


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "p90": percentile(xs, 0.9), "p99": percentile(xs, 0.99),
            "mean": statistics.fmean(xs)}
