"""The one bootstrap: a seeded percentile interval for a mean, resampling independent
values, or whole clusters of them (exam questions by subject)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_mean_ci(values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95,
                      clusters: Sequence[str] | None = None) -> tuple[float, float]:
    """(low, high) percentile interval of the mean; NaNs when there is no value.

    Without ``clusters`` each value is resampled with replacement. With them, whole
    clusters are drawn with replacement and each resample's mean is its values' sum over
    its values' count (a cluster bootstrap)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if clusters is None:
        sums, counts = x, np.ones(len(x))
    else:
        idx = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1].ravel()
        sums, counts = np.bincount(idx, weights=x), np.bincount(idx)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
