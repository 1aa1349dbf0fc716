"""Statistics of a study's cells: pure functions on per-query × per-seed arrays (no MLflow, no plotting).

A cell's values are a matrix Y (n_queries × n_seeds): Y[i, j] is the metric on query i of the
seed-j run. Queries and seeds are crossed (every seed run evaluates every query), and two cells
are paired when their rows are the same queries and their columns the same replicate indices
(replicate j of every point trains with the same seed and query order).

- `bootstrap_ci`: 95% CI of a cell's mean, percentile bootstrap resampling queries and seeds
  independently (the pigeonhole bootstrap for crossed designs, Owen 2007); one seed = the usual
  bootstrap over queries.
- `paired_contrast`: difference of two cells' means on the same queries and seeds, its SE, df, 95%
  CI and two-sided p, generalising over queries *and* seeds (≥ 2 seeds). Under the crossed two-way
  random-effects model of the per-query, per-seed difference D_ij = δ + a_i + b_j + e_ij, the mean
  difference has Var = σ²_a/n_q + σ²_b/n_s + σ²_e/(n_q n_s) (Searle, Casella & McCulloch, *Variance
  Components*, 1992, ch. 4). The SE squared is (MS_query + MS_seed)/(n_q n_s): unbiased for that
  variance plus σ²_e/(n_q n_s) once more — the same slight over-statement as the pigeonhole bootstrap
  of crossed designs (Owen 2007), chosen over the unbiased (MS_q + MS_s − MS_e) because it has no
  negative term, so its Satterthwaite (1946) / Welch (1947) degrees of freedom
  (MS_q + MS_s)² / (MS_q²/(n_q − 1) + MS_s²/(n_s − 1)) never fall below min(n_q, n_s) − 1 — the
  unbiased form's df drops under 1 at 2 seeds, and truncating its seed term at 0 rejects a true null
  at up to 8 % with 2 seeds
  (tests/test_stats_calibration.py measures all three claims). One seed: the paired t over queries
  (exactly `scipy.stats.ttest_rel`), and the contrast says it conditions on that seed
  (`Contrast.conditions_on_seed`). Why t, not a permutation test: with ≥ 30 queries the t and the
  paired permutation/bootstrap tests agree closely on IR metrics (Smucker, Allan & Carterette, CIKM
  2007; Urbano et al., SIGIR 2019), the t-test is deterministic, gives a CI and shares its SE and df
  with the MDE below, so the test and the power statement cannot disagree.
- `Contrast.interval(alpha)`: the two-sided (1 − α) CI from the same SE and df; a family of m tests
  reads it at α/m (Bonferroni, the first step of Holm), the CI its verdict uses.
- `equivalence_p`: TOST (two one-sided tests, Schuirmann 1987): p of "|δ| ≥ margin"; below α iff
  the (1 − 2α) CI lies inside (−margin, +margin).
- `adjust_p_values`: Holm (step-down, family-wise error) or Benjamini–Hochberg (false discovery
  rate, `scipy.stats.false_discovery_control`) across one family of tests.
- `minimum_detectable_difference`: MDE = (t_{1−α/(2m), df} + t_{power, df}) · SE, the difference a
  two-sided test at the corrected level α/m of its family of m tests detects with the given power.
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

    @property
    def conditions_on_seed(self) -> bool:
        """One seed: the test generalises over queries only, given the seed that ran."""
        return self.n_seeds < 2

    @property
    def generalises_over(self) -> str:
        return "queries (conditional on the one seed)" if self.conditions_on_seed else "queries and seeds"

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """Two-sided (1 − α) CI from the contrast's SE and df (α/m for a family of m: its corrected CI)."""
        return interval(self.difference, self.se, self.df, alpha)


def interval(mean: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """Two-sided (1 − α) t interval mean ± t_{1−α/2, df} · SE; (nan, nan) when untested."""
    from scipy.stats import t as student_t

    if not (np.isfinite(mean) and np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan, math.nan
    if se == 0:
        return mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        half = float(student_t.ppf(1.0 - alpha / 2.0, df)) * se
    return mean - half, mean + half


def seed_se_df(diff) -> tuple[float, float]:
    """(SE, df) of the mean of a queries × seeds difference, over queries and seeds (module docstring).

    SE² = (MS_query + MS_seed)/(n_q n_s); df = Satterthwaite's for that sum. One seed: the paired t's
    (sd_query/√n_q, n_q − 1).
    """
    y = _matrix(diff)
    n_q, n_s = y.shape
    if n_s < 2:
        return float(y[:, 0].std(ddof=1)) / math.sqrt(n_q), float(n_q - 1)
    ms_q, ms_s, _ = variance_components(y)
    total = ms_q + ms_s
    if total <= 0:
        return 0.0, float(n_q - 1 + n_s - 1)
    df = total ** 2 / (ms_q ** 2 / (n_q - 1) + ms_s ** 2 / (n_s - 1))
    return math.sqrt(total / (n_q * n_s)), float(df)


def paired_contrast(a, b, confidence: float = CONFIDENCE) -> Contrast:
    """Paired test of two cells' values (queries × seeds, rows and columns matched) over queries and seeds.

    ≥ 2 seeds: SE and df of `seed_se_df` (generalises over queries and seeds); one seed: the paired
    t over queries (conditions on the seed). Constant differences have no t statistic: equal
    everywhere is no evidence (p = 1), a constant non-zero shift on every query is as strong as
    evidence gets (p = 0).
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
    mean, sd_query = float(per_query.mean()), float(per_query.std(ddof=1))
    se, df = seed_se_df(diff)
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
    low, high = interval(mean, se, df, 1.0 - confidence)
    return Contrast(mean, low, high, p, se, df, n_q, n_s, sd_query, sd_seed)


def equivalence_p(difference: float, se: float, df: float, margin: float) -> float:
    """TOST p-value (Schuirmann 1987) of H0: |δ| ≥ margin vs H1: |δ| < margin: the larger one-sided p.

    Equivalence at level α ⇔ p < α ⇔ the (1 − 2α) CI lies inside (−margin, +margin). NaN when untested.
    """
    from scipy.stats import t as student_t

    if not (np.isfinite(difference) and np.isfinite(se) and np.isfinite(df) and np.isfinite(margin)) or df <= 0:
        return math.nan
    if se == 0:
        return 0.0 if abs(difference) < margin else 1.0
    lower = student_t.sf((difference + margin) / se, df)    # H0: δ ≤ −margin
    upper = student_t.cdf((difference - margin) / se, df)   # H0: δ ≥ +margin
    return float(max(lower, upper))


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


def minimum_detectable_difference(se: float, df: float, alpha: float = ALPHA, power: float = POWER, *,
                                  family_size: int = 1) -> float:
    """MDE = (t_{1−α/(2m), df} + t_{power, df}) · SE: the true difference a two-sided test finds with `power`
    at the corrected level α/m of its family of m = `family_size` tests (Bonferroni, Holm's first step).

    SE and df are the contrast's own (`paired_contrast`: over queries and seeds); with many queries
    and one test the t quantiles are z_{0.975} + z_{0.8} = 2.80. The calibration test checks that a
    true difference of the reported MDE (its mean over designs) is found 70–90 % of the time.
    """
    from scipy.stats import t as student_t

    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0 or family_size < 1:
        return math.nan
    level = alpha / family_size
    return float((student_t.ppf(1.0 - level / 2.0, df) + student_t.ppf(power, df)) * se)


def tied_with_best(p_adjusted, is_best, alpha: float = ALPHA) -> np.ndarray:
    """Which cells are tied with the best: the best itself, and every tested cell whose corrected p ≥ α.

    An untested cell (NaN p) is not called tied: nothing was shown about it.
    """
    p = np.asarray(p_adjusted, dtype=float)
    best = np.asarray(is_best, dtype=bool)
    with np.errstate(invalid="ignore"):
        return best | (~np.isnan(p) & (p >= alpha))
