"""The one bootstrap: a seeded percentile interval for the mean of independent values."""

from __future__ import annotations

import numpy as np

from lmboard.registry import METRICS


@METRICS.register("bootstrap_mean_ci")
def bootstrap_mean_ci(values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of the mean, resampling values with replacement;
    NaNs when there is no value."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
