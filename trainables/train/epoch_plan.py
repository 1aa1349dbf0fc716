"""The epoch plan: which queries, positives and candidates each rank trains on at each global step.

One step = `optim.batch_size` queries over all workers. Epoch `e` visits the TrainingSet rows in the
order `default_rng([seed, e]).permutation(Q)` (global batch i is rows [i·B, (i+1)·B); the incomplete
last batch is dropped); rank `r` takes its slice of each global batch and draws up to `data.max_positives` positives and K
candidates (by `sampler.name`) per query for the whole epoch up front from `default_rng([seed, e, r])`.
So a plan is a pure function of (TrainingSet, config, epoch, rank, world): a resumed run rebuilds it
and, at the same world size, trains on exactly the batches of the uninterrupted run.

Light to import (numpy only): the study layer calls `total_steps` in processes without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trainables.config import TrialConfig
from trainables.registry import sampler_function
from trainables.samplers import check_pools_fit, sample_candidates

if TYPE_CHECKING:
    from trainables.data.training_set import TrainingSet


PLAN_CHUNK = 8192   # queries whose candidates are sampled at once


@dataclass
class RankBatch:
    """One rank's share of one global step."""

    query_idx: np.ndarray       # [b] rows of the TrainingSet
    positive_col: np.ndarray    # [b, M] columns into positive_doc_idx (this epoch's positives), -1 padded
    candidate_col: np.ndarray   # [b, K] columns into pool_doc_idx, -1 where a small pool was clipped
    global_size: int            # queries in the whole step (over all ranks)


def steps_per_epoch(n_queries: int, batch_size: int) -> int:
    """Full global batches per epoch (the incomplete last batch is dropped; at least one step)."""
    return max(1, n_queries // batch_size)


def total_steps(cfg: TrialConfig, n_queries: int) -> int:
    """`optim.max_steps` when set (it overrides `epochs`), else epochs × steps per epoch."""
    if cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    return cfg.optim.epochs * steps_per_epoch(n_queries, cfg.optim.batch_size)


def check_sizes(n_queries: int, batch_size: int, world: int) -> None:
    """Every rank needs at least one query per step (an empty DDP share cannot join the all-reduce)."""
    if min(batch_size, n_queries) < world:
        raise ValueError(
            f"optim.batch_size={batch_size} with {n_queries} training queries gives some of the "
            f"{world} workers no query per step: use batch_size and data.max_train_queries >= resources.num_workers"
        )


def epoch_order(n_queries: int, cfg: TrialConfig, epoch: int) -> np.ndarray:
    """The order epoch `epoch` visits the TrainingSet rows in: global batch i is rows [i*B, (i+1)*B)."""
    return np.random.default_rng([cfg.seed, epoch]).permutation(n_queries)


def plan_positives(n_positives: np.ndarray, max_positives: int, rng: np.random.Generator) -> np.ndarray:
    """[b, M] positive columns per query for one epoch, -1 padded (M = max_positives).

    A query with at most M positives keeps them all (the WKL paper keeps every positive in the list
    and averages β over them); one with more gets a seeded subset of M, re-drawn every epoch.
    M = 1 is one positive per query and epoch: the first, or a seeded random one when there are several.
    """
    if max_positives == 1:
        return np.where(n_positives > 1, rng.integers(0, np.maximum(n_positives, 1)), 0)[:, None]
    columns = np.full((len(n_positives), max_positives), -1, dtype=np.int64)
    for row, n in enumerate(n_positives.tolist()):
        chosen = np.arange(n) if n <= max_positives else np.sort(rng.choice(n, size=max_positives, replace=False))
        columns[row, :len(chosen)] = chosen
    return columns


def plan_epoch(ts: TrainingSet, cfg: TrialConfig, epoch: int, rank: int, world: int) -> list[RankBatch]:
    """This rank's batches for `epoch`, deterministic in (seed, epoch, rank); candidates re-drawn every epoch."""
    n_queries, batch_size = len(ts), cfg.optim.batch_size
    check_sizes(n_queries, batch_size, world)
    order = epoch_order(n_queries, cfg, epoch)
    shares, sizes = [], []
    for step in range(steps_per_epoch(n_queries, batch_size)):
        global_batch = order[step * batch_size:(step + 1) * batch_size]
        shares.append(np.array_split(global_batch, world)[rank])
        sizes.append(len(global_batch))
    mine = np.concatenate(shares)

    rng = np.random.default_rng([cfg.seed, epoch, rank])
    positive_col = plan_positives((ts.positive_doc_idx[mine] >= 0).sum(axis=1), cfg.data.max_positives, rng)
    # Sampled PLAN_CHUNK queries at a time from the one rng (row by row, as in one call): the sampler's
    # float64 copy of the pools is a chunk's, not the epoch's (≈ 180 MiB at 100k queries × 150).
    check_pools_fit(np.concatenate([(~np.isnan(ts.teacher_pool_scores[mine[i:i + PLAN_CHUNK]])).sum(axis=1)
                                    for i in range(0, len(mine), PLAN_CHUNK)]), cfg.sampler.k, cfg.sampler.on_small_pool)
    sampler = sampler_function(cfg.sampler)
    picked = [columns for i in range(0, len(mine), PLAN_CHUNK) for columns in sample_candidates(
        sampler, ts.teacher_pool_scores[mine[i:i + PLAN_CHUNK]], cfg.sampler.k, rng, cfg.sampler.on_small_pool)]
    candidate_col = np.full((len(mine), cfg.sampler.k), -1, dtype=np.int64)
    for row, columns in enumerate(picked):
        candidate_col[row, :len(columns)] = columns

    batches, start = [], 0
    for share, size in zip(shares, sizes):
        stop = start + len(share)
        batches.append(RankBatch(mine[start:stop], positive_col[start:stop], candidate_col[start:stop], size))
        start = stop
    return batches


class RankPlan:
    """This rank's batch of any global step, planning one epoch at a time (steps run in order)."""

    def __init__(self, ts: TrainingSet, cfg: TrialConfig, rank: int, world: int):
        self.ts, self.cfg, self.rank, self.world = ts, cfg, rank, world
        self.steps_per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
        self._epoch, self._batches = -1, []

    def batch(self, step: int) -> RankBatch:
        """The batch of global step `step` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, plan_epoch(self.ts, self.cfg, epoch, self.rank, self.world)
        return self._batches[index]


def steps_queries(n_queries: int, cfg: TrialConfig, first_step: int, n_steps: int) -> np.ndarray:
    """TrainingSet rows of global steps [first_step, first_step + n_steps): the queries those steps train on.

    `plan_epoch`'s global batches (`epoch_order`, the same on every rank), across epochs.
    """
    batch_size, per_epoch = cfg.optim.batch_size, steps_per_epoch(n_queries, cfg.optim.batch_size)
    rows, orders = [], {}
    for step in range(first_step, min(first_step + n_steps, total_steps(cfg, n_queries))):
        epoch, index = divmod(step, per_epoch)
        if epoch not in orders:
            orders[epoch] = epoch_order(n_queries, cfg, epoch)
        rows.append(orders[epoch][index * batch_size:(index + 1) * batch_size])
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
