"""Intervals for clustered accuracies and paired comparisons of two models.

Exam questions are clustered by subject (a model that knows anatomy gets many anatomy
questions right together), so the interval of an accuracy resamples whole subjects
(a cluster bootstrap: subjects drawn with replacement, accuracy = their correct answers
over their questions). Two models compared on the questions both answered: the
difference with a cluster-bootstrap interval of the paired differences, and McNemar's
exact test on the discordant questions (one right, the other wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmboard.metrics.bootstrap import bootstrap_mean_ci


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[str], n_resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """The one bootstrap (metrics/bootstrap.py), resampling whole clusters."""
    return bootstrap_mean_ci(values, n_resamples, seed, level, clusters=clusters)


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

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def paired_comparison(a: dict[str, bool], b: dict[str, bool], cluster_of: dict[str, str],
                      n_resamples: int = 2000, seed: int = 0) -> Paired | None:
    """A against B on the questions both answered (keys), clustered by ``cluster_of``."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    a_only = sum(1 for k in keys if a[k] and not b[k])
    b_only = sum(1 for k in keys if b[k] and not a[k])
    # a question with no cluster is its own (classification examples are independent)
    low, high = cluster_bootstrap_ci(diffs, [cluster_of.get(k, k) for k in keys], n_resamples, seed)
    return Paired(len(keys), a_only, b_only, sum(diffs) / len(keys), low, high, mcnemar_exact(a_only, b_only))
