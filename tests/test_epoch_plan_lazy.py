"""The lazy epoch plan trains on exactly the batches of the eager plan it replaced, from any step on.

`eager_plan_epoch` is the plan as it was before `EpochPlan` (the whole epoch's candidates sampled up
front, one array per query), kept here verbatim as the reference: the SciFact recipe's metrics stay
identical only if every rank's batches do.
"""
from __future__ import annotations

import numpy as np
import pytest

import trainables.train.epoch_plan as epoch_plan
from trainables.config import TrialConfig
from trainables.data.training_set import TrainingSet
from trainables.errors import ConfigError
from trainables.registry import sampler_function
from trainables.samplers import check_pools_fit, sample_candidates
from trainables.train.epoch_plan import (
    RankBatch, RankPlan, check_sizes, epoch_order, plan_epoch, plan_positives, steps_per_epoch,
)


def eager_plan_epoch(ts: TrainingSet, cfg: TrialConfig, epoch: int, rank: int, world: int) -> list[RankBatch]:
    """The eager plan of commit e535660 (trainables/train/epoch_plan.py::plan_epoch), unchanged."""
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
    check_pools_fit((~np.isnan(ts.teacher_pool_scores[mine])).sum(axis=1), cfg.sampler.k, cfg.sampler.on_small_pool)
    picked = sample_candidates(sampler_function(cfg.sampler), ts.teacher_pool_scores[mine], cfg.sampler.k, rng,
                               cfg.sampler.on_small_pool)
    candidate_col = np.full((len(mine), cfg.sampler.k), -1, dtype=np.int64)
    for row, columns in enumerate(picked):
        candidate_col[row, :len(columns)] = columns
    batches, start = [], 0
    for share, size in zip(shares, sizes):
        stop = start + len(share)
        batches.append(RankBatch(mine[start:stop], positive_col[start:stop], candidate_col[start:stop], size))
        start = stop
    return batches


def ragged_set(n_queries: int = 23, seed: int = 0) -> TrainingSet:
    """1–4 positives and a NaN-padded pool of 3–12 candidates per query (some smaller than K), random scores."""
    rng = np.random.default_rng(seed)
    n_pos, n_pool = rng.integers(1, 5, n_queries), rng.integers(3, 13, n_queries)
    positive, pool = np.full((n_queries, 4), -1), np.full((n_queries, 12), -1)
    docs = 0
    for i in range(n_queries):
        positive[i, :n_pos[i]] = np.arange(docs, docs + n_pos[i])
        pool[i, :n_pool[i]] = np.arange(docs + n_pos[i], docs + n_pos[i] + n_pool[i])
        docs += n_pos[i] + n_pool[i]
    teacher_pos = np.where(positive >= 0, rng.normal(5.0, 1.0, positive.shape), np.nan).astype(np.float32)
    teacher_pool = np.where(pool >= 0, rng.normal(size=pool.shape), np.nan).astype(np.float32)
    return TrainingSet([f"q{i}" for i in range(n_queries)], [""] * n_queries, [f"d{d}" for d in range(docs)],
                       [""] * docs, positive, pool, teacher_pos, teacher_pool, teacher_pos.copy(), teacher_pool.copy())


def trial(sampler: str, k: int = 4, max_positives: int = 1, batch_size: int = 5, seed: int = 0,
          on_small_pool: str = "clip") -> TrialConfig:
    block = {"name": sampler, "k": k, "on_small_pool": on_small_pool, **({"top_n": 6} if sampler == "teacher_top_n" else {})}
    return TrialConfig.from_dict({"seed": seed, "data": {"pool_depth": 12, "max_positives": max_positives},
                                  "sampler": block, "optim": {"batch_size": batch_size, "epochs": 3}})


def assert_same(got: RankBatch, expected: RankBatch) -> None:
    for name in ("query_idx", "positive_col", "candidate_col"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert got.global_size == expected.global_size


CONFIGS = [
    trial("stratified"), trial("random", max_positives=3), trial("topk", k=3, batch_size=7),
    trial("teacher_top_n", k=3, max_positives=2, seed=5), trial("equal_width", k=5, batch_size=6, seed=2),
    trial("random", batch_size=40),                            # fewer queries than the batch: one step of all
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.sampler.name}-b{c.optim.batch_size}")
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("chunk", [4, 7, 8192])                # chunks that split steps, and one per epoch
def test_every_step_of_the_lazy_plan_is_the_eager_plans_batch(cfg, world, chunk, monkeypatch):
    ts = ragged_set()
    monkeypatch.setattr(epoch_plan, "PLAN_CHUNK", chunk)
    per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    for rank in range(world):
        plan = RankPlan(ts, cfg, rank, world)
        eager = {e: eager_plan_epoch(ts, cfg, e, rank, world) for e in range(3)}
        for step in range(3 * per_epoch):
            assert_same(plan.batch(step), eager[step // per_epoch][step % per_epoch])
        assert all(assert_same(a, b) is None for a, b in zip(plan_epoch(ts, cfg, 1, rank, world), eager[1]))


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=lambda c: c.sampler.name)
def test_a_plan_resumed_at_any_step_gives_the_uninterrupted_batches(cfg, monkeypatch):
    ts = ragged_set(41, seed=1)
    monkeypatch.setattr(epoch_plan, "PLAN_CHUNK", 3)
    per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    eager = {e: eager_plan_epoch(ts, cfg, e, 1, 2) for e in range(3)}
    rng = np.random.default_rng(0)
    for resume in [0, 1, per_epoch - 1, per_epoch, per_epoch + 2, *rng.integers(0, 3 * per_epoch, 4).tolist()]:
        plan = RankPlan(ts, cfg, 1, 2)                         # a fresh worker, its first step `resume`
        for step in range(resume, min(resume + per_epoch + 2, 3 * per_epoch)):
            assert_same(plan.batch(step), eager[step // per_epoch][step % per_epoch])
    plan = RankPlan(ts, cfg, 1, 2)                             # steps out of order: replays the epoch's stream
    for step in rng.permutation(per_epoch).tolist():
        assert_same(plan.batch(step), eager[0][step])


def test_a_step_samples_the_candidates_of_its_chunk_not_the_epochs(monkeypatch):
    ts = ragged_set(200, seed=3)
    cfg = trial("stratified", batch_size=8)
    sampled = []
    real = epoch_plan.sample_candidates

    def counting(sampler, pool_scores, *args, **kwargs):
        sampled.append(len(pool_scores))
        return real(sampler, pool_scores, *args, **kwargs)

    monkeypatch.setattr(epoch_plan, "PLAN_CHUNK", 16)
    monkeypatch.setattr(epoch_plan, "sample_candidates", counting)
    plan = RankPlan(ts, cfg, 0, 1)
    plan.batch(0)
    assert sampled == [16]                                     # one chunk, not the epoch's 200 queries
    plan.batch(3)                                              # rows 24..31: the second chunk
    assert sampled == [16, 16]


def test_pools_smaller_than_k_fail_when_the_epoch_is_planned_naming_how_many():
    ts = ragged_set()
    cfg = trial("stratified", k=5, on_small_pool="error")
    n_small = int(((~np.isnan(ts.teacher_pool_scores[np.concatenate(
        [b.query_idx for b in eager_plan_epoch(ts, trial("stratified", k=5), 0, 0, 1)])])).sum(axis=1) < 5).sum())
    with pytest.raises(ConfigError, match=rf"pool of {n_small} of 20 queries \(smallest pool size: 3\)"):
        RankPlan(ts, cfg, 0, 1).batch(0)


def test_a_plan_of_the_mapped_set_equals_the_eager_plan_of_the_set_in_memory(tmp_path, monkeypatch):
    """Workers map the set and read its pools with pread (`read_rows`): the same candidates."""
    ts = ragged_set(57, seed=4)
    ts.save(tmp_path / "set.npz")
    mapped = TrainingSet.load(tmp_path / "set.npz", mapped=True)
    monkeypatch.setattr(epoch_plan, "PLAN_CHUNK", 6)
    for cfg in (trial("stratified", on_small_pool="error", k=3), trial("teacher_top_n", k=3, max_positives=2)):
        plan = RankPlan(mapped, cfg, 0, 2)
        for step, expected in enumerate(eager_plan_epoch(ts, cfg, 0, 0, 2) + eager_plan_epoch(ts, cfg, 1, 0, 2)):
            assert_same(plan.batch(step), expected)
