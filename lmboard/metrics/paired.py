"""Intervals for accuracies and paired comparisons of two models, and the rule that picks
the interval.

Exam questions are clustered by subject (a model that knows anatomy gets many anatomy
questions right together), so the interval of an accuracy resamples whole subjects (a
cluster bootstrap: subjects drawn with replacement, accuracy = their correct answers over
their questions). A bootstrap over one or two clusters says nothing (two subjects give
an interval that is just their two scores; one gives zero width), so the rule is: a
cluster bootstrap with at least ``MIN_CLUSTERS`` clusters, else Wilson's score interval
on the questions as independent (never zero-width, also at 0% and 100%). Every interval
says which it is. Two models compared on the questions both answered: the difference
with an interval by the same rule (the item-level bootstrap of the paired differences
where clusters are too few), and McNemar's exact test on the discordant questions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmboard.metrics.bootstrap import bootstrap_mean_ci

MIN_CLUSTERS = 10  # fewer clusters than this: no cluster bootstrap
Z95 = 1.959963984540054


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[str], n_resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """The one bootstrap (metrics/bootstrap.py), resampling whole clusters."""
    return bootstrap_mean_ci(values, n_resamples, seed, level, clusters=clusters)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def _n_clusters(clusters: Sequence[str]) -> int:
    return len(set(clusters))


def _few(c: int, unit: str) -> str:
    return f" ({c} {unit if c != 1 else unit.rstrip('s')}: fewer than {MIN_CLUSTERS} for a cluster bootstrap)"


def accuracy_interval(correct: Sequence[bool], clusters: Sequence[str] | None, unit: str = "subjects",
                      n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, str]:
    """(low, high, method) of an accuracy: a cluster bootstrap over at least MIN_CLUSTERS
    clusters, else Wilson's interval (the method names the clusters it had)."""
    n, k = len(correct), sum(map(bool, correct))
    c = _n_clusters(clusters) if clusters else 0
    if c >= MIN_CLUSTERS:
        lo, hi = cluster_bootstrap_ci([float(x) for x in correct], list(clusters), n_resamples, seed)
        return lo, hi, f"cluster bootstrap over {c} {unit}"
    lo, hi = wilson(k, n)
    return lo, hi, f"Wilson, {n} items" + (_few(c, unit) if clusters else "")


def _item_bootstrap(diffs: list[float], n_resamples: int, seed: int) -> tuple[float, float]:
    """The item-level bootstrap of a mean of few distinct values (paired differences are
    -1, 0 or 1): resampling n items is drawing the values' counts from a multinomial,
    the same distribution at a cost that does not grow with n."""
    vals, counts = np.unique(np.asarray(diffs, dtype=float), return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(diffs), counts / counts.sum(), size=n_resamples)
    means = draws @ vals / len(diffs)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b and c are the discordant counts (A right and B
    wrong; A wrong and B right); under no difference each is Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    from scipy.stats import binom

    # the tail in scipy's binomial (2**n overflows a float beyond n = 1023)
    return min(1.0, 2.0 * float(binom.cdf(min(b, c), n, 0.5)))


@dataclass(frozen=True)
class Paired:
    n: int  # questions both answered
    a_only: int  # A right, B wrong
    b_only: int  # A wrong, B right
    difference: float  # accuracy of A - accuracy of B
    low: float
    high: float
    p_value: float  # McNemar, exact
    interval: str = ""  # how low and high were made

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def paired_comparison(a: dict[str, bool], b: dict[str, bool], cluster_of: dict[str, str],
                      n_resamples: int = 2000, seed: int = 0, unit: str = "subjects") -> Paired | None:
    """A against B on the questions both answered (keys), clustered by ``cluster_of``."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    a_only = sum(1 for k in keys if a[k] and not b[k])
    b_only = sum(1 for k in keys if b[k] and not a[k])
    # a question with no cluster is independent (classification examples)
    clusters = [cluster_of[k] for k in keys if k in cluster_of]
    c = _n_clusters(clusters) if len(clusters) == len(keys) else 0
    if c >= MIN_CLUSTERS:
        low, high = cluster_bootstrap_ci(diffs, clusters, n_resamples, seed)
        how = f"paired cluster bootstrap over {c} {unit}"
    else:
        low, high = _item_bootstrap(diffs, n_resamples, seed)
        how = f"paired bootstrap over {len(keys)} items" + (_few(c, unit) if c else "")
    return Paired(len(keys), a_only, b_only, sum(diffs) / len(keys), low, high, mcnemar_exact(a_only, b_only), how)
