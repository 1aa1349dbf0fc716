"""Statistics of a study's cells: pure functions on per-query × per-seed arrays (no MLflow, no plotting).

A cell's values are a matrix Y (n_queries × n_seeds): Y[i, j] is the metric on query i of the
seed-j run. Queries and seeds are crossed (every seed run evaluates every query), and two cells
are paired when their rows are the same queries and their columns the same replicate indices
(replicate j of every point trains with the same seed and query order).

- `bootstrap_ci`: 95% CI of a cell's mean, percentile bootstrap resampling queries and seeds
  independently (the pigeonhole bootstrap for crossed designs, Owen 2007); one seed = the usual
  bootstrap over queries.
- `paired_contrast`: difference of two cells' means on the same queries and seeds, its 95% CI and
  two-sided p: a paired t-test over queries on the per-query differences averaged over seeds (one
  seed: exactly `scipy.stats.ttest_rel`). Seeds enter by averaging (more seeds, less training noise
  per query); the test generalises over queries and conditions on the seeds that ran. Adding a
  seed variance component (`variance_components`) was tried and dropped: with 2–3 seeds its
  Satterthwaite df falls below 1 whenever the seeds happen to differ, and the p-value and MDE
  explode; the seed-to-seed SD of the difference is reported beside the test instead. Why t, not a
  permutation test: with ≥ 30 queries the t and the paired permutation/bootstrap tests agree
  closely on IR metrics (Smucker, Allan & Carterette, CIKM 2007; Urbano et al., SIGIR 2019), the
  t-test is deterministic, gives a CI and shares its SE with the MDE below, so the test and the
  power statement cannot disagree.
- `adjust_p_values`: Holm (step-down, family-wise error) or Benjamini–Hochberg (false discovery
  rate, `scipy.stats.false_discovery_control`) across one family of tests.
- `minimum_detectable_difference`: MDE = (t_{1−α/2, df} + t_{power, df}) · SE, the paired-design
  difference a two-sided test at level α detects with the given power.
- `tied_with_best`: the cells not significantly different from the best after correction.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
N_RESAMPLES = 2000
CORRECTIONS = {"holm": "Holm", "bh": "Benjamini–Hochberg"}


def _matrix(values) -> np.ndarray:
    """A 2-D float array (one column per seed) with the queries missing a value dropped."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"expected queries × seeds values, got shape {array.shape}")
    return array[~np.isnan(array).any(axis=1)]


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (queries × seeds), resampling both queries and seeds.

    Each resample draws n_q queries and n_s seeds with replacement, independently, and takes the
    mean of the crossed sub-matrix; its variance is that of the mean under the two-way model, plus
    at most the interaction term once more (slightly conservative). (nan, nan) for < 2 queries.
    """
    y = _matrix(values)
    n_q, n_s = y.shape
    if n_q < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, min(n_resamples, 2_000_000 // max(n_q, 1)))  # bounded memory on MS MARCO Dev's ~7k queries
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        query_counts = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q), size=size)
        seed_counts = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=size) if n_s > 1 else np.ones((size, 1))
        means[start:start + size] = ((query_counts @ y) * seed_counts).sum(axis=1) / (n_q * n_s)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def variance_components(values) -> tuple[float, float, float]:
    """(MS_query, MS_seed, MS_resid): the two-way ANOVA mean squares of `values` (queries × seeds, ≥ 2 of each).

    Under Y_ij = μ + a_i + b_j + e_ij: E[MS_query] = σ²_e + n_s·σ²_a, E[MS_seed] = σ²_e + n_q·σ²_b,
    E[MS_resid] = σ²_e; σ̂²_b = max(MS_seed − MS_resid, 0)/n_q is the seed-to-seed variance of a mean
    beyond what query noise explains (`Contrast.sd_seed`).
    """
    y = _matrix(values)
    n_q, n_s = y.shape
    if n_q < 2 or n_s < 2:
        raise ValueError(f"variance components need ≥ 2 queries and ≥ 2 seeds, got {n_q} × {n_s}")
    grand, row, col = y.mean(), y.mean(axis=1), y.mean(axis=0)
    ms_q = n_s * float(((row - grand) ** 2).sum()) / (n_q - 1)
    ms_s = n_q * float(((col - grand) ** 2).sum()) / (n_s - 1)
    ms_e = float(((y - row[:, None] - col[None, :] + grand) ** 2).sum()) / ((n_q - 1) * (n_s - 1))
    return ms_q, ms_s, ms_e


@dataclass(frozen=True)
class Contrast:
    """A − B on the same queries and seeds: mean difference, its CI, two-sided p, and the design it rests on."""

    difference: float
    low: float
    high: float
    p_value: float
    se: float
    df: float
    n_queries: int
    n_seeds: int
    sd_query: float = math.nan   # SD over queries of the per-query difference (averaged over seeds)
    sd_seed: float = math.nan    # SD over seeds of the difference's mean beyond query noise (nan for one seed)


def paired_contrast(a, b, confidence: float = CONFIDENCE) -> Contrast:
    """Paired t-test over queries of two cells' values (queries × seeds, rows and columns matched, seeds averaged).

    Constant differences have no t statistic: equal everywhere is no evidence (p = 1), a constant
    non-zero shift on every query is as strong as evidence gets (p = 0).
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired cells need the same queries × seeds, got {a.shape} and {b.shape}")
    diff = _matrix(a - b)
    n_q, n_s = diff.shape
    if n_q < 2:
        return Contrast(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n_q, n_s)
    per_query = diff.mean(axis=1)
    mean, sd_query, df = float(per_query.mean()), float(per_query.std(ddof=1)), float(n_q - 1)
    se = sd_query / math.sqrt(n_q)
    sd_seed = math.nan
    if n_s > 1:
        _, ms_s, ms_e = variance_components(diff)
        sd_seed = math.sqrt(max(ms_s - ms_e, 0.0) / n_q)
    if se <= 1e-12 * max(1.0, abs(mean)):
        p = 1.0 if abs(mean) <= 1e-12 else 0.0
        return Contrast(mean, mean, mean, p, 0.0, df, n_q, n_s, sd_query, sd_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(2.0 * student_t.sf(abs(mean) / se, df))
        half = float(student_t.ppf(0.5 + confidence / 2.0, df)) * se
    return Contrast(mean, mean - half, mean + half, p, se, df, n_q, n_s, sd_query, sd_seed)


def adjust_p_values(p_values, method: str = "holm") -> np.ndarray:
    """p-values adjusted across one family of tests: "holm" (FWER) or "bh" (FDR); NaN (untested) stays NaN.

    Holm: sort ascending, p̃_(k) = max_{j ≤ k} min(1, (m − j + 1)·p_(j)). BH: p̃_(k) =
    min_{j ≥ k} min(1, m·p_(j)/j) (`scipy.stats.false_discovery_control`).
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    if m == 0:
        return out
    family = p[tested]
    if method == "bh":
        from scipy.stats import false_discovery_control

        out[tested] = false_discovery_control(family, method="bh")
        return out
    order = np.argsort(family, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * family[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    out[tested] = adjusted
    return out


def minimum_detectable_difference(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE = (t_{1−α/2, df} + t_{power, df}) · SE: the true difference a two-sided level-α test finds with `power`.

    SE is the standard error of a paired difference, sd_diff/√n_q (sd_diff over queries of the
    difference averaged over seeds); with many queries the t quantiles are z_{0.975} + z_{0.8} = 2.80.
    """
    from scipy.stats import t as student_t

    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan
    return float((student_t.ppf(1.0 - alpha / 2.0, df) + student_t.ppf(power, df)) * se)


def tied_with_best(p_adjusted, is_best, alpha: float = ALPHA) -> np.ndarray:
    """Which cells are tied with the best: the best itself, and every tested cell whose corrected p ≥ α.

    An untested cell (NaN p) is not called tied: nothing was shown about it.
    """
    p = np.asarray(p_adjusted, dtype=float)
    best = np.asarray(is_best, dtype=bool)
    with np.errstate(invalid="ignore"):
        return best | (~np.isnan(p) & (p >= alpha))
