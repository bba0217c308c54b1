"""Win rates, bootstrap intervals and the offline length-controlled win rate.

Preferences follow alpaca_eval: a float in [1, 2], 1 = the reference (output_1) is
better, 2 = the model (output_2) is better, 1.5 (or the legacy 0) = a draw; anything
else (None, NaN, out of range) is not a preference and is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmboard.metrics.bootstrap import bootstrap_mean_ci


def _clean(prefs: list[float | None]) -> tuple[np.ndarray, int]:
    """(valid preferences in [1, 2] with 0 read as 1.5, number of draws)."""
    p = np.array([np.nan if v is None else float(v) for v in prefs], dtype=float)
    p[p == 0.0] = 1.5  # legacy encoding of a draw
    n_draws = int(np.sum(p == 1.5))
    valid = p[(p >= 1.0) & (p <= 2.0)]
    return valid, n_draws


def head2head(prefs: list[float | None]) -> dict:
    """alpaca_eval's columns: win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total
    (absolute scoring rule on the raw preference) and discrete_win_rate (each preference
    rounded to a win, loss or draw)."""
    x, n_draws = _clean(prefs)
    x = x - 1.0
    n = len(x)
    sem = float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    # discrete: 1.5 stays a draw, the rest rounds to the nearer side
    d = np.where(x == 0.5, 0.5, np.round(x))
    return {
        "win_rate": float(x.mean() * 100) if n else float("nan"),
        "standard_error": sem * 100,
        "n_wins": int(np.sum(x > 0.5)),
        "n_wins_base": int(np.sum(x < 0.5)),
        "n_draws": n_draws,
        "n_total": n,
        "discrete_win_rate": float(d.mean() * 100) if n else float("nan"),
    }


def bootstrap_ci(prefs: list[float | None], n_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile interval of the win rate over instructions resampled with replacement."""
    x, _ = _clean(prefs)
    lo, hi = bootstrap_mean_ci((x - 1.0) * 100, n_resamples, seed, level)
    return lo, hi


@dataclass
class LengthControlled:
    win_rate: dict[str, float]  # generator -> LC win rate (percent)
    standard_error: dict[str, float]
    length_coef: dict[str, float]
    difficulty: np.ndarray  # per instruction


def length_controlled(
    rows: dict[str, list[tuple[int, float, float]]],
    n_instructions: int,
    lam_difficulty: float = 0.3,
    lam_length: float = 1.0,
) -> LengthControlled:
    """Length-controlled win rates from a joint fit over all generators on the board.

    For generator g and instruction i, with y in [0, 1] the (soft) preference for g:

        logit P(g beats the reference on i) = a_g + b_g * tanh(dlen_gi / s_g) + d_i

    dlen_gi is the reference's length minus g's (characters), s_g its standard deviation
    over g's instructions (as alpaca_eval standardizes it). d_i is the instruction's
    difficulty, shared by all generators: alpaca_eval downloads a precomputed difficulty
    per instruction; here it is fitted jointly from every generator on the board, which
    is what makes the fit informative offline. L2 penalties shrink d toward 0 and the
    length slopes toward 0 (a generator with few instructions keeps a small slope).
    The length-controlled win rate predicts g against the reference at zero length
    difference, averaged over its instructions: mean_i sigmoid(a_g + d_i).

    rows: generator -> [(instruction index, length delta, preference in [0, 1]), ...].
    """
    from scipy.optimize import minimize

    gens = list(rows)
    G, N = len(gens), n_instructions
    gi, ii, tt, yy = [], [], [], []
    for g, name in enumerate(gens):
        r = np.array(rows[name], dtype=float).reshape(-1, 3)
        s = r[:, 1].std() or 1.0
        gi.append(np.full(len(r), g))
        ii.append(r[:, 0].astype(int))
        tt.append(np.tanh(r[:, 1] / s))
        yy.append(r[:, 2])
    g_idx, i_idx = np.concatenate(gi), np.concatenate(ii)
    t, y = np.concatenate(tt), np.concatenate(yy)

    def unpack(w):
        return w[:G], w[G : 2 * G], w[2 * G :]

    def loss(w):
        a, b, d = unpack(w)
        z = a[g_idx] + b[g_idx] * t + d[i_idx]
        # binary cross-entropy with soft labels, in a numerically stable form
        nll = np.sum(np.logaddexp(0, z) - y * z)
        p = 1 / (1 + np.exp(-z))
        r = p - y
        ga = np.bincount(g_idx, r, G)
        gb = np.bincount(g_idx, r * t, G) + 2 * lam_length * b
        gd = np.bincount(i_idx, r, N) + 2 * lam_difficulty * d
        return nll + lam_length * b @ b + lam_difficulty * d @ d, np.concatenate([ga, gb, gd])

    w0 = np.zeros(2 * G + N)
    res = minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    a, b, d = unpack(res.x)
    lc, se = {}, {}
    for g, name in enumerate(gens):
        mask = g_idx == g
        p = 1 / (1 + np.exp(-(a[g] + d[i_idx[mask]])))
        lc[name] = float(p.mean() * 100)
        se[name] = float(p.std(ddof=1) / math.sqrt(len(p)) * 100) if len(p) > 1 else float("nan")
    return LengthControlled(lc, se, {n: float(b[g]) for g, n in enumerate(gens)}, d)


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])
