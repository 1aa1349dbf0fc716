"""Candidate samplers (score-distribution paper, science.md §1): the behaviour each sampler promises."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from trainables.config import ConfigError, TrialConfig, sampler_config
from trainables.registry import sampler_entries, sampler_entry, sampler_function
from trainables.samplers import (
    SAMPLERS,
    check_k_fits_pool,
    equal_width,
    quantile_strata,
    random,
    sample_candidates,
    score_diagnostics,
    stratified,
    teacher_top_n,
    topk,
)

ALL_SAMPLERS = dict(SAMPLERS)


def _by_name(name: str, **settings):
    """The registry's function for a `sampler:` block (its own settings bound, as a trial's epoch plan gets it)."""
    return sampler_function(sampler_config(name=name, **settings))


def test_every_built_in_sampler_is_a_registry_entry_selectable_from_a_config():
    assert list(sampler_entries()) == ["topk", "random", "stratified", "equal_width", "teacher_top_n"]
    assert set(SAMPLERS) == set(sampler_entries())
    assert TrialConfig.from_dict({"sampler": {"name": "equal_width", "k": 4}}).sampler.name == "equal_width"
    assert sampler_entry("equal_width").sampler() is equal_width          # no settings of its own to bind
    assert sampler_entry("teacher_top_n").sampler(sampler_config(name="teacher_top_n", k=2, top_n=7)).keywords == {"n": 7}


def _random_pool(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores with many ties half of the time (rounded), so tie rules are exercised."""
    scores = rng.normal(size=n) * rng.uniform(0.1, 10.0)
    return np.round(scores) if rng.random() < 0.5 else scores


def _stratum_of_position(position: int, n: int, k: int) -> int:
    """np.array_split rule written out: the first n % k strata hold n // k + 1 candidates."""
    big, extra = n // k + 1, n % k
    if position < extra * big:
        return position // big
    return extra + (position - extra * big) // (n // k)


# ---- topk ---------------------------------------------------------------------------------
def test_topk_sampler_returns_the_k_highest_scores_best_first():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        k = int(rng.integers(1, n + 1))
        scores = _random_pool(rng, n)
        picked = topk(scores, k, rng)
        assert picked.dtype == np.int64 and len(set(picked.tolist())) == k
        np.testing.assert_array_equal(scores[picked], np.sort(scores)[::-1][:k])
        # Ties: the earlier pool position wins.
        expected = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
        assert picked.tolist() == expected


# ---- stratified ---------------------------------------------------------------------------
def test_stratified_sampler_draws_exactly_one_index_from_each_quantile_stratum():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 80))
        k = int(rng.integers(1, n + 1))          # n % k != 0 in most draws
        scores = _random_pool(rng, n)
        picked = stratified(scores, k, rng)
        assert picked.dtype == np.int64 and len(set(picked.tolist())) == k
        order = sorted(range(n), key=lambda i: (-scores[i], i))   # best first, ties by position
        strata = [_stratum_of_position(order.index(int(i)), n, k) for i in picked]
        assert strata == list(range(k)), (n, k, strata)
        # Tie-robust check in score terms: stratum j's draw lies within stratum j's score range.
        for j, index in enumerate(picked):
            members = [order[p] for p in range(n) if _stratum_of_position(p, n, k) == j]
            assert scores[members].min() <= scores[index] <= scores[members].max()


def test_stratified_sampler_strata_follow_array_split_of_the_sorted_pool():
    scores = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.0, 7.0])
    strata = quantile_strata(scores, 3)
    assert [s.tolist() for s in strata] == [[4, 6, 0], [2, 3], [1, 5]]   # sizes 3, 2, 2


def test_stratified_sampler_draws_uniformly_within_each_stratum():
    scores = np.linspace(10.0, 0.0, 12)                 # 3 strata of 4 candidates
    rng = np.random.default_rng(2)
    draws = np.array([stratified(scores, 3, rng) for _ in range(3000)])
    for j in range(3):
        counts = np.bincount(draws[:, j] - 4 * j, minlength=4)
        assert counts.sum() == 3000 and len(counts) == 4
        assert chisquare(counts).pvalue > 0.001


def test_stratified_sampler_keeps_more_score_variance_than_topk_on_a_retrieval_like_pool():
    rng = np.random.default_rng(3)
    ranks = np.arange(1, 101)
    variances = {"topk": [], "stratified": [], "random": []}
    for seed in range(50):
        # First-stage pool re-scored by a teacher: a steep head, a long flat tail, some noise.
        scores = np.sort(12.0 - 2.5 * np.log(ranks) + rng.normal(0.0, 0.5, 100))[::-1]
        for name in variances:
            picked = SAMPLERS[name](scores, 8, np.random.default_rng(seed))
            variances[name].append(score_diagnostics([scores[picked]])["variance"])
    mean = {name: float(np.mean(v)) for name, v in variances.items()}
    assert mean["stratified"] >= mean["topk"]
    # And closer to the pool's own spread than top-k (the paper's "preserves the variance").
    pool_variance = float(np.var(np.sort(12.0 - 2.5 * np.log(ranks))))
    assert abs(mean["stratified"] - pool_variance) < abs(mean["topk"] - pool_variance)


# ---- random -------------------------------------------------------------------------------
def test_random_sampler_is_uniform_over_the_pool():
    scores = np.sort(np.random.default_rng(4).normal(size=20))[::-1]
    rng = np.random.default_rng(5)
    counts = np.zeros(20, dtype=np.int64)
    for _ in range(4000):
        picked = random(scores, 5, rng)
        assert len(set(picked.tolist())) == 5
        counts[picked] += 1
    assert chisquare(counts).pvalue > 0.001              # each index in 1/4 of the draws


# ---- equal-width variant ------------------------------------------------------------------
def test_equal_width_sampler_covers_every_nonempty_bin_and_borrows_for_empty_ones():
    scores = np.array([0.0, 0.1, 0.2, 0.3, 10.0, 9.9])  # 4 bins of width 2.5: {4, 5}, -, -, {0..3}
    for seed in range(20):
        picked = equal_width(scores, 4, np.random.default_rng(seed))
        assert len(set(picked.tolist())) == 4
        # bin 0 draws one of {4, 5}; empty bin 1 borrows the other from bin 0 (nearest);
        # empty bin 2 borrows from bin 3; bin 3 draws from {0..3}.
        assert {int(picked[0]), int(picked[1])} == {4, 5}
        assert set(picked[2:].tolist()) <= {0, 1, 2, 3}
    rng = np.random.default_rng(6)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        k = int(rng.integers(1, n + 1))
        scores = _random_pool(rng, n)
        picked = equal_width(scores, k, rng)
        assert len(set(picked.tolist())) == k
        if scores.max() > scores.min():
            bins = np.minimum(np.floor((scores.max() - scores) / np.ptp(scores) * k), k - 1)
            for b in np.unique(bins):
                assert np.any(bins[picked] == b), "a non-empty bin got no draw"


# ---- teacher_top_n (WKL paper: K negatives sampled from the teacher's top 20) ----------------
@given(scores=st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=60),
       k=st.integers(1, 8), n=st.integers(1, 25), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_teacher_top_n_draws_k_distinct_candidates_only_from_the_teachers_top_n(scores, k, n, seed):
    scores = np.array(scores)
    k = min(k, n, len(scores))
    picked = teacher_top_n(scores, k, np.random.default_rng(seed), n=n)
    top = set(np.argsort(-scores, kind="stable")[:n].tolist())
    assert len(set(picked.tolist())) == k and set(picked.tolist()) <= top


def test_teacher_top_n_is_uniform_over_the_top_n_and_never_beyond():
    scores = np.arange(50.0)[::-1]              # candidate i has rank i
    counts = np.zeros(50)
    for seed in range(3000):
        counts[teacher_top_n(scores, 4, np.random.default_rng(seed), n=20)] += 1
    assert counts[20:].sum() == 0
    assert chisquare(counts[:20]).pvalue > 1e-3       # each of the top 20 drawn 3000·4/20 = 600 times


def test_teacher_top_n_through_sample_candidates_and_its_config():
    pools = np.array([np.arange(30.0), np.r_[np.arange(10.0), [np.nan] * 20]])
    for seed in range(20):
        picked = sample_candidates(_by_name("teacher_top_n", k=3, top_n=5), pools, 3, np.random.default_rng(seed))
        assert set(picked[0].tolist()) <= set(range(25, 30)) and set(picked[1].tolist()) <= set(range(5, 10))
    with pytest.raises(ConfigError, match=r"sampler: k=8 > top_n=5: teacher_top_n draws K distinct candidates"):
        TrialConfig.from_dict({"sampler": {"name": "teacher_top_n", "k": 8, "top_n": 5}})


# ---- every sampler ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_SAMPLERS))
def test_sampler_is_seed_deterministic_and_returns_distinct_indices(name):
    sampler = ALL_SAMPLERS[name]
    scores = np.round(np.random.default_rng(7).normal(size=37), 1)
    first = sampler(scores, 8, np.random.default_rng(11))
    again = sampler(scores, 8, np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.int64 and first.shape == (8,)
    assert len(set(first.tolist())) == 8 and first.min() >= 0 and first.max() < 37
    if name != "topk":
        others = {tuple(sampler(scores, 8, np.random.default_rng(seed)).tolist()) for seed in range(10)}
        assert len(others) > 1, "the draw does not depend on the seed"


@pytest.mark.parametrize("name", sorted(ALL_SAMPLERS))
def test_sampler_rejects_k_outside_the_pool(name):
    with pytest.raises(ValueError, match="k=6 must be between 1 and the pool size 5"):
        ALL_SAMPLERS[name](np.arange(5.0), 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        ALL_SAMPLERS[name](np.array([1.0, np.nan]), 1, np.random.default_rng(0))


# ---- sample_candidates --------------------------------------------------------------------
def _padded_pools() -> np.ndarray:
    nan = np.nan
    return np.array([
        [9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
        [3.0, nan, 1.0, 2.0, nan, nan],   # 3 real candidates, padding in the middle too
        [4.0, 3.0, 2.0, 1.0, nan, nan],   # 4 real candidates
    ])


def test_sample_candidates_raises_naming_affected_queries_when_k_exceeds_the_pool():
    with pytest.raises(ValueError, match=r"k=5 .* 2 of 3 queries .*smallest pool size: 3"):
        sample_candidates(_by_name("stratified"), _padded_pools(), 5, np.random.default_rng(0))


def test_k_larger_than_the_smallest_pool_is_one_config_error_naming_k_the_pool_and_the_fix():
    with pytest.raises(ConfigError, match=r"^space\.yaml: sampler\.k=16 is larger than the smallest candidate pool "
                                          r"\(7 candidates\): lower K or set sampler\.on_small_pool: clip$"):
        check_k_fits_pool(16, 7, "error", where="space.yaml: sampler.k")
    check_k_fits_pool(16, 7, "clip")          # clip: small pools give their whole pool
    check_k_fits_pool(7, 7, "error")          # K = the smallest pool fits
    check_k_fits_pool(16, None, "error")      # pools not known yet


def test_the_config_checks_k_against_pool_depth_by_the_same_rule():
    raw = {"data": {"pool_depth": 10}, "sampler": {"k": 16}}
    with pytest.raises(ConfigError, match=r"trial\.yaml: .*sampler\.k=16 is larger than data\.pool_depth=10: lower K or "
                                          r"set sampler\.on_small_pool: clip"):
        TrialConfig.from_dict(raw, source="trial.yaml")
    clipped = TrialConfig.from_dict({**raw, "sampler": {"k": 16, "on_small_pool": "clip"}})
    assert clipped.sampler.k == 16


def test_sample_candidates_clip_returns_the_whole_pool_for_small_pools():
    for name in SAMPLERS:
        picked = sample_candidates(_by_name(name), _padded_pools(), 5, np.random.default_rng(0), on_small_pool="clip")
        assert len(picked[0]) == 5 and len(set(picked[0].tolist())) == 5
        assert sorted(picked[1].tolist()) == [0, 2, 3]
        assert sorted(picked[2].tolist()) == [0, 1, 2, 3]


def test_sample_candidates_never_picks_padding_and_maps_back_to_pool_columns():
    pools = _padded_pools()
    picked = sample_candidates(_by_name("topk"), pools, 2, np.random.default_rng(0))
    assert [p.tolist() for p in picked] == [[0, 1], [0, 3], [0, 1]]
    for name in SAMPLERS:
        for _ in range(20):
            for row, columns in zip(pools, sample_candidates(_by_name(name), pools, 3, np.random.default_rng(_))):
                assert not np.isnan(row[columns]).any() and len(set(columns.tolist())) == 3


def test_sample_candidates_is_seed_deterministic():
    pools = np.random.default_rng(8).normal(size=(6, 30))
    first = sample_candidates(_by_name("stratified"), pools, 4, np.random.default_rng(3))
    again = sample_candidates(_by_name("stratified"), pools, 4, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_sample_candidates_rejects_unknown_sampler_and_mode():
    with pytest.raises(ConfigError, match="unknown sampler 'hard': expected one of topk, random, stratified"):
        sampler_entry("hard")
    with pytest.raises(ConfigError, match=r"^x\.yaml: sampler: unknown sampler 'hard': expected one of topk, "):
        TrialConfig.from_dict({"sampler": {"name": "hard"}}, source="x.yaml")
    with pytest.raises(ValueError, match="on_small_pool must be"):
        sample_candidates(_by_name("topk"), _padded_pools(), 2, np.random.default_rng(0), on_small_pool="pad")


# ---- diagnostics --------------------------------------------------------------------------
def test_sampler_score_diagnostics_match_a_hand_computation():
    p = np.array([1.0, math.e]) / (1.0 + math.e)
    expected_entropy = (-(p * np.log(p)).sum() + math.log(3.0)) / 2
    from_list = score_diagnostics([np.array([0.0, 1.0]), np.array([2.0, 2.0, 2.0])])
    assert from_list["variance"] == pytest.approx((0.25 + 0.0) / 2)
    assert from_list["entropy"] == pytest.approx(expected_entropy)
    from_array = score_diagnostics(np.array([[0.0, 1.0, np.nan], [2.0, 2.0, 2.0]]))
    assert from_array == pytest.approx(from_list)
