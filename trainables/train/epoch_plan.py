"""The epoch plan: which queries, positives and candidates each rank trains on at each global step.

One step = `optim.batch_size` queries over all workers. Epoch `e` visits the TrainingSet rows in the
order `default_rng([seed, e]).permutation(Q)` (global batch i is rows [i·B, (i+1)·B); the incomplete
last batch is dropped); rank `r` takes its slice of each global batch and draws from `default_rng([seed, e, r])`
up to `data.max_positives` positives per query for the whole epoch, then K candidates (by `sampler.name`) per
query in its visiting order — PLAN_CHUNK queries at a time, as the steps reach them (`EpochPlan`), so a worker
never holds an epoch's candidates. So a plan is a pure function of (TrainingSet, config, epoch, rank, world): a
resumed run rebuilds it and, at the same world size, trains on exactly the batches of the uninterrupted run.

Light to import (numpy only): the study layer calls `total_steps` in processes without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trainables.config import TrialConfig
from trainables.data.mapped import read_range, read_rows
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


def rank_share(global_size: int, rank: int, world: int) -> slice:
    """Rank `rank`'s columns of a global batch of `global_size`: `np.array_split(batch, world)[rank]`."""
    base, extra = divmod(global_size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def plan_epoch(ts: TrainingSet, cfg: TrialConfig, epoch: int, rank: int, world: int) -> list[RankBatch]:
    """This rank's batches for `epoch`, deterministic in (seed, epoch, rank); candidates re-drawn every epoch.

    The whole epoch at once (tests, bench_train); the training loop plans lazily (`RankPlan`), the same batches.
    """
    plan = EpochPlan(ts, cfg, epoch, rank, world)
    return [plan.batch(index) for index in range(plan.steps)]


class EpochPlan:
    """One epoch of this rank's batches, its candidates sampled PLAN_CHUNK queries at a time as steps reach them.

    The rng stream is the eager plan's: `default_rng([seed, epoch, rank])` draws the epoch's positives
    first, then candidates query by query in the rank's visiting order, so a chunk's draws follow the
    previous chunk's. A worker holds the rank's query order, the epoch's positive columns and one or two
    chunks of candidate columns — not the epoch's candidates, nor a Python array per query. Asked for an
    earlier chunk than it holds (a loader worker's order never does that; a caller may), it replays the
    epoch's chunks from the saved rng state.
    """

    def __init__(self, ts: TrainingSet, cfg: TrialConfig, epoch: int, rank: int, world: int,
                 pool_sizes: np.ndarray | None = None):
        n_queries, batch_size = len(ts), cfg.optim.batch_size
        check_sizes(n_queries, batch_size, world)
        self.ts, self.cfg, self.epoch = ts, cfg, epoch
        self.steps = steps_per_epoch(n_queries, batch_size)
        self.global_size = min(batch_size, n_queries)     # every step's global batch (the last partial one dropped)
        share = rank_share(self.global_size, rank, world)
        self.share = share.stop - share.start
        order = epoch_order(n_queries, cfg, epoch)
        self.mine = np.ascontiguousarray(order[:self.steps * self.global_size].reshape(self.steps, -1)[:, share]).ravel()
        self._rng = np.random.default_rng([cfg.seed, epoch, rank])
        self.positive_col = plan_positives((ts.positive_doc_idx[self.mine] >= 0).sum(axis=1),
                                           cfg.data.max_positives, self._rng)
        if cfg.sampler.on_small_pool != "clip":         # clipped pools always fit
            sizes = real_pool_sizes(ts) if pool_sizes is None else pool_sizes
            check_pools_fit(sizes[self.mine], cfg.sampler.k, cfg.sampler.on_small_pool)
        self._sampler = sampler_function(cfg.sampler)
        self._after_positives = self._rng.bit_generator.state
        self._next_chunk, self._chunks = 0, {}

    def batch(self, index: int) -> RankBatch:
        """This rank's batch of the epoch's step `index` (0-based)."""
        if not 0 <= index < self.steps:
            raise IndexError(f"step {index} of an epoch of {self.steps}")
        start, stop = index * self.share, (index + 1) * self.share
        first, last = start // PLAN_CHUNK, (stop - 1) // PLAN_CHUNK
        candidate_col = np.concatenate([self._chunk(c) for c in range(first, last + 1)])
        offset = first * PLAN_CHUNK
        self._chunks = {c: cols for c, cols in self._chunks.items() if c >= first}   # steps come in order
        return RankBatch(self.mine[start:stop], self.positive_col[start:stop],
                         candidate_col[start - offset:stop - offset], self.global_size)

    def _chunk(self, chunk: int) -> np.ndarray:
        """[≤ PLAN_CHUNK, K] candidate columns of the rank's queries [chunk·PLAN_CHUNK, …), -1 where clipped."""
        if chunk in self._chunks:
            return self._chunks[chunk]
        if chunk < self._next_chunk:                    # dropped already: replay the stream from the positives
            self._rng.bit_generator.state = self._after_positives
            self._next_chunk, self._chunks = 0, {}
        while self._next_chunk <= chunk:
            rows = self.mine[self._next_chunk * PLAN_CHUNK:(self._next_chunk + 1) * PLAN_CHUNK]
            picked = sample_candidates(self._sampler, read_rows(self.ts.teacher_pool_scores, rows), self.cfg.sampler.k,
                                       self._rng, self.cfg.sampler.on_small_pool)
            columns = np.full((len(rows), self.cfg.sampler.k), -1, dtype=np.int64)
            for row, picks in enumerate(picked):
                columns[row, :len(picks)] = picks
            del picked
            self._chunks[self._next_chunk] = columns
            self._next_chunk += 1
        return self._chunks[chunk]


def real_pool_sizes(ts: TrainingSet) -> np.ndarray:
    """[Q] real (not NaN-padded) pool candidates per query, read PLAN_CHUNK rows at a time (not faulted in)."""
    scores = ts.teacher_pool_scores
    return np.concatenate([(~np.isnan(read_range(scores, i, i + PLAN_CHUNK))).sum(axis=1)
                           for i in range(0, len(scores), PLAN_CHUNK)])


class RankPlan:
    """This rank's batch of any global step: one `EpochPlan` at a time (steps run in order; a resumed run
    starts at its step). Pool sizes are read once per plan, not once per epoch."""

    def __init__(self, ts: TrainingSet, cfg: TrialConfig, rank: int, world: int):
        self.ts, self.cfg, self.rank, self.world = ts, cfg, rank, world
        self.steps_per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
        self._epoch: EpochPlan | None = None
        self._pool_sizes = None if cfg.sampler.on_small_pool == "clip" else real_pool_sizes(ts)   # [Q], small

    def batch(self, step: int) -> RankBatch:
        """The batch of global step `step` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch.epoch != epoch:
            self._epoch = None                          # the old epoch's plan goes before the new one is built
            self._epoch = EpochPlan(self.ts, self.cfg, epoch, self.rank, self.world, self._pool_sizes)
        return self._epoch.batch(index)


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
