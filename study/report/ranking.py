"""Whether two rankings of the same points agree: Kendall's τ-b with a bootstrap interval over the points.

`kd-study confirm` compares a sweep's order of its best points with their order at a higher fidelity;
the results document prints the same numbers for each confirmation.
"""
from __future__ import annotations

import math

BOOTSTRAP_RESAMPLES = 2000


def kendall_tau(x: list[float], y: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                seed: int = 0) -> tuple[float, float, float, float]:
    """Kendall's τ-b of x and y with its p-value and a 95% percentile bootstrap interval over the pairs.

    (τ, low, high, p); NaN where fewer than 2 points (τ) or 3 points (interval) leave it undefined.
    Resamples that draw one distinct pair only (τ undefined) are left out.
    """
    import numpy as np
    from scipy.stats import kendalltau

    nan = float("nan")
    if len(x) < 2:
        return nan, nan, nan, nan
    tau, p = kendalltau(x, y)
    if len(x) < 3:
        return float(tau), nan, nan, float(p)
    rng = np.random.default_rng(seed)
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(xs), len(xs))
        if len(set(idx.tolist())) < 2:
            continue
        t = kendalltau(xs[idx], ys[idx]).statistic
        if math.isfinite(t):
            draws.append(t)
    low, high = (np.quantile(draws, [0.025, 0.975]) if draws else (nan, nan))
    return float(tau), float(low), float(high), float(p)
