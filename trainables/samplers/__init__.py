"""Candidate samplers of the score-distribution paper: which K pool candidates a query distils from.

Claim (science.md §1): distilling only the teacher's top-scored candidates hides the teacher's
whole preference structure; drawing K candidates across the full teacher score spectrum
("stratified") keeps the variance and entropy of the teacher scores and distils better.

Every sampler is a pure function of one query's pool scores:

    sampler(scores: np.ndarray[n] float, k: int, rng: np.random.Generator) -> np.ndarray[k] int64

returning distinct indices into the pool, deterministic for a given `rng` state. `topk` ignores
`rng`. `teacher_top_n` (the WKL paper's negatives: K drawn from the teacher's top 20) has one more
parameter, N. No names or config here: the registry (trainables/registry.py) names each sampler and binds
its settings (`sampler_function`). `sample_candidates` applies one to a NaN-padded batch of pools;
`check_k_fits_pool` is the one rule for K against the pools, checked wherever the pool sizes become known.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np

from trainables.errors import ConfigError

Sampler = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def check_k_fits_pool(
    k: int, smallest_pool: int | None, on_small_pool: str, where: str = "sampler.k", *, pool: str | None = None
) -> None:
    """K candidates per query need pools of at least K, unless small pools are clipped (`on_small_pool: clip`).

    Raises ConfigError, one line naming K (`where`, the key or file and key), the smallest pool and
    the fix. `smallest_pool` None (not known yet) passes. `pool` words the pool when it is not the
    smallest real one, e.g. `data.pool_depth=10` before the pools exist.
    """
    if smallest_pool is None or on_small_pool == "clip" or k <= smallest_pool:
        return
    pool = pool or f"the smallest candidate pool ({smallest_pool} candidates)"
    raise ConfigError(f"{where}={k} is larger than {pool}: lower K or set sampler.on_small_pool: clip")


def _check_pool(scores: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one query's pool, shape [n]; got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite (sample_candidates strips NaN padding before sampling)")
    if not 1 <= k <= scores.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the pool size {scores.shape[0]}")
    return scores


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Pool indices from the highest teacher score down; ties keep pool order (stable)."""
    return np.argsort(-scores, kind="stable")


def topk(scores: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The K candidates with the highest teacher score (classic hard negatives), best first.

    Ties are broken by pool position (earlier first), so the result does not depend on `rng`.
    """
    scores = _check_pool(scores, k)
    return _descending_order(scores)[:k].astype(np.int64)


def random(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K candidates uniformly without replacement (every K-subset equally likely)."""
    scores = _check_pool(scores, k)
    return rng.choice(scores.shape[0], size=k, replace=False).astype(np.int64)


def quantile_strata(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """The K strata `stratified` draws from, best stratum first.

    Strata rule: sort the pool by teacher score, highest first, ties kept in pool order; split that
    order with `np.array_split(order, k)`: n // k candidates per stratum, and the first n % k
    strata (the highest-scored) hold one extra. Each stratum is a score quantile of the pool.
    """
    scores = _check_pool(scores, k)
    return [stratum.astype(np.int64) for stratum in np.array_split(_descending_order(scores), k)]


def stratified(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """One candidate drawn uniformly from each of the K quantile strata (see `quantile_strata`).

    Every part of the teacher's score spectrum is represented; returned best stratum first.
    """
    scores = _check_pool(scores, k)
    n = scores.shape[0]
    order = _descending_order(scores)
    sizes = np.full(k, n // k, dtype=np.int64) + (np.arange(k) < n % k)   # == np.array_split sizes
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return order[starts + rng.integers(0, sizes)].astype(np.int64)


def equal_width(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Variant of `stratified` over K equal-width bins of the score *range* (`sampler.name: equal_width`).

    Bins split [min, max] of the pool into K intervals of equal width, bin 0 holding the highest
    scores (the maximum belongs to bin 0). Each non-empty bin gives one uniform draw. An empty bin
    falls back to the nearest bin (by bin distance; on a tie the higher-scored bin) that still has
    an undrawn candidate and draws uniformly among those, so the K indices stay distinct. A pool of
    equal scores is one bin. Returned in bin order, highest bin first.
    """
    scores = _check_pool(scores, k)
    low, high = scores.min(), scores.max()
    if high > low:
        from_top = np.floor((high - scores) / (high - low) * k).astype(np.int64)
        bins = np.minimum(from_top, k - 1)
    else:
        bins = np.zeros(scores.shape[0], dtype=np.int64)
    remaining = [list(np.flatnonzero(bins == b)) for b in range(k)]
    picks = np.full(k, -1, dtype=np.int64)
    empty = [b for b in range(k) if not remaining[b]]
    # Non-empty bins draw first so a borrowing empty bin never takes a bin's only candidate.
    for b in range(k):
        if remaining[b]:
            picks[b] = remaining[b].pop(int(rng.integers(len(remaining[b]))))
    for b in empty:
        donor = min((d for d in range(k) if remaining[d]), key=lambda d: (abs(d - b), d))
        picks[b] = remaining[donor].pop(int(rng.integers(len(remaining[donor]))))
    return picks


def teacher_top_n(scores: np.ndarray, k: int, rng: np.random.Generator, n: int = 20) -> np.ndarray:
    """K candidates uniformly without replacement from the teacher's top N of the pool (WKL paper: N = 20).

    The top N by teacher score, ties kept in pool order (as `topk`); a pool smaller than N is used
    whole. Returned best-scored first, so the result is a set, not an order the loss could read.
    """
    scores = _check_pool(scores, k)
    if n < k:
        raise ValueError(f"top_n={n} must be at least k={k}")
    top = _descending_order(scores)[:n]
    picked = rng.choice(top.shape[0], size=k, replace=False)
    return top[np.sort(picked)].astype(np.int64)


SAMPLERS: dict[str, Sampler] = {"topk": topk, "random": random, "stratified": stratified,
                                "equal_width": equal_width, "teacher_top_n": teacher_top_n}   # the built-ins


def sample_candidates(
    sampler: Sampler,
    pool_scores: np.ndarray,
    k: int,
    rng: np.random.Generator,
    on_small_pool: Literal["error", "clip"] = "error",
) -> list[np.ndarray]:
    """Sample K candidates per query from a NaN-padded batch of pools.

    `pool_scores` is [B, N] teacher scores with NaN marking padding (anywhere in the row). Returns
    one int64 array per query of column indices into `pool_scores` (never a padded column).
    Queries are sampled in order from the one `rng`, so a batch is deterministic for a seed.

    A query whose real pool is smaller than K: `on_small_pool="error"` raises ConfigError
    (`check_k_fits_pool`) naming how many queries are affected and the smallest pool size; `"clip"`
    runs the sampler with K = the pool size, which returns the whole pool for that query (topk: best
    first; random: a random order; stratified: every candidate, one per stratum), so that query has
    fewer than K candidates. `sampler`: a (scores, k, rng) function, its own parameters bound
    (`trainables.registry.sampler_function`: teacher_top_n's N is `sampler.top_n`).
    """
    if on_small_pool not in ("error", "clip"):
        raise ValueError(f"on_small_pool must be 'error' or 'clip', got {on_small_pool!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pool_scores = np.asarray(pool_scores, dtype=np.float64)
    if pool_scores.ndim != 2:
        raise ValueError(f"pool_scores must be [B, N]; got shape {pool_scores.shape}")
    real = ~np.isnan(pool_scores)
    check_pools_fit(real.sum(axis=1), k, on_small_pool)
    picked = []
    for row, row_real in zip(pool_scores, real):
        columns = np.flatnonzero(row_real)
        if columns.size == 0:
            picked.append(np.empty(0, dtype=np.int64))
            continue
        picked.append(columns[sampler(row[columns], min(k, columns.size), rng)].astype(np.int64))
    return picked


def check_pools_fit(pool_sizes: np.ndarray, k: int, on_small_pool: str) -> None:
    """`check_k_fits_pool` for real pools of `pool_sizes` (one per query), naming how many are too small."""
    if len(pool_sizes):
        smallest, n_small = int(pool_sizes.min()), int((pool_sizes < k).sum())
        check_k_fits_pool(k, smallest, on_small_pool,
                          pool=f"the pool of {n_small} of {len(pool_sizes)} queries (smallest pool size: {smallest})")


def score_diagnostics(
    sampled_scores: Sequence[np.ndarray] | np.ndarray, temperature: float = 1.0
) -> dict[str, float]:
    """The paper's diagnostic: mean per-query variance and entropy of the sampled teacher scores.

        variance = mean_Q Var(t_Q)            (population variance, ddof=0)
        entropy  = mean_Q H(softmax(t_Q / τ)) (nats)

    Accepts a list of per-query arrays (lengths may differ) or a [B, k] array; NaN entries are
    ignored and queries with no score are skipped.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    variances, entropies = [], []
    for row in sampled_scores:
        row = np.asarray(row, dtype=np.float64).ravel()
        row = row[~np.isnan(row)]
        if row.size == 0:
            continue
        variances.append(row.var())
        z = row / temperature
        log_p = z - z.max()
        log_p -= np.log(np.exp(log_p).sum())
        entropies.append(float(-(np.exp(log_p) * log_p).sum()))
    if not variances:
        raise ValueError("score_diagnostics needs at least one query with a sampled score")
    return {"variance": float(np.mean(variances)), "entropy": float(np.mean(entropies))}
