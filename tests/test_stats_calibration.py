"""The contrast test calibrated over seeds: a seeded simulation with evidence v2's variance components.

Per-query, per-seed differences D_ij = δ + a_i + b_j + e_ij (query, seed and residual effects), with
the components docs/results_v2.md measured (v2, 3 seeds): DL19 subset 43 queries, per-query SD of the
seed-averaged difference 0.0166, seed-to-seed SD 0.0038; SciFact test 300 queries, 0.0444 and
0.0035. How that per-query SD splits between a_i and e_ij/√3 is not reported; half each here. At 80 %
residual the test is conservative (2–5 %); at 20 % and 2 seeds it reaches 6–6.5 %, at 5 % ~7 % (busy
machine exploration, 3000–4000 replications; the df of a 2-seed design rests on one seed contrast).
Checked at 2, 3 and 6 seeds, 2000 replications each, vectorised (the same SE and df as
`study.report.stats.seed_se_df`, whose formula `test_stats` pins on one matrix):
- a true null is rejected at ≤ 6 % for nominal 5 % (the old seed-averaged t: ~13 %);
- a true δ equal to the reported MDE (its mean over replications) is found 70–90 % of the time;
- TOST at a margin equal to the true δ (the boundary of its null) claims equivalence ≤ 6 %.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t

from study.report.stats import equivalence_p, minimum_detectable_difference, paired_contrast

REPLICATIONS = 2000
DESIGNS = {"dl19": (43, 0.0166, 0.0038), "scifact_test": (300, 0.0444, 0.0035)}
RESIDUAL_SHARE = 0.5


def simulate(rng, n_q: int, n_s: int, sd_query: float, sd_seed: float, delta: float = 0.0) -> np.ndarray:
    """R × n_q × n_s differences whose seed-averaged per-query SD at 3 seeds is `sd_query`."""
    sd_resid = np.sqrt(RESIDUAL_SHARE * sd_query ** 2 * 3)
    sd_a = np.sqrt((1 - RESIDUAL_SHARE) * sd_query ** 2)
    return (delta + rng.normal(0, sd_a, (REPLICATIONS, n_q, 1)) + rng.normal(0, sd_seed, (REPLICATIONS, 1, n_s))
            + rng.normal(0, sd_resid, (REPLICATIONS, n_q, n_s)))


def se_df(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, SE, df) of each replication, vectorised: SE² = (MS_q + MS_s)/(n_q n_s), Satterthwaite df."""
    _, n_q, n_s = d.shape
    grand, rows, cols = d.mean(axis=(1, 2)), d.mean(axis=2), d.mean(axis=1)
    ms_q = n_s * ((rows - grand[:, None]) ** 2).sum(axis=1) / (n_q - 1)
    ms_s = n_q * ((cols - grand[:, None]) ** 2).sum(axis=1) / (n_s - 1)
    total = ms_q + ms_s
    return grand, np.sqrt(total / (n_q * n_s)), total ** 2 / (ms_q ** 2 / (n_q - 1) + ms_s ** 2 / (n_s - 1))


def rejects(d: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    mean, se, df = se_df(d)
    return 2 * student_t.sf(np.abs(mean) / se, df) < alpha


def test_the_vectorised_se_and_df_are_the_reports():
    d = simulate(np.random.default_rng(0), 43, 3, 0.0166, 0.0038)[:3]
    mean, se, df = se_df(d)
    for i in range(3):
        contrast = paired_contrast(d[i], np.zeros_like(d[i]))
        assert (contrast.difference, contrast.se, contrast.df) == pytest.approx((mean[i], se[i], df[i]))


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("n_seeds", [2, 3, 6])
def test_null_level_and_power_at_the_mde(design, n_seeds):
    n_q, sd_query, sd_seed = DESIGNS[design]
    rng = np.random.default_rng([n_q, n_seeds])
    null = simulate(rng, n_q, n_seeds, sd_query, sd_seed)
    assert rejects(null).mean() <= 0.06
    _, se, df = se_df(null)
    mde = float(np.mean([minimum_detectable_difference(s, f) for s, f in zip(se, df)]))
    power = rejects(simulate(rng, n_q, n_seeds, sd_query, sd_seed, delta=mde)).mean()
    assert 0.70 <= power <= 0.90, power
    # TOST at its null's boundary (true |δ| = margin) claims equivalence at most α of the time
    mean, se, df = se_df(simulate(rng, n_q, n_seeds, sd_query, sd_seed, delta=mde))
    tost = np.array([equivalence_p(m, s, f, mde) for m, s, f in zip(mean, se, df)])
    assert (tost < 0.05).mean() <= 0.06


def test_the_seed_averaged_t_was_not_calibrated():
    """What the issue measured: the t over queries alone rejects a true null far above 5 % here."""
    n_q, sd_query, sd_seed = DESIGNS["dl19"]
    d = simulate(np.random.default_rng(5), n_q, 3, sd_query, sd_seed)
    per_query = d.mean(axis=2)
    t = per_query.mean(axis=1) / (per_query.std(axis=1, ddof=1) / np.sqrt(n_q))
    assert (2 * student_t.sf(np.abs(t), n_q - 1) < 0.05).mean() > 0.10
    assert rejects(d).mean() <= 0.06
