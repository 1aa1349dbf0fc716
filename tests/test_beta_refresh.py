"""WKL's β rank table: a refresh limited to the queries of the coming steps writes what a full one would."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.models.student import BiEncoder
from trainables.train.epoch_plan import RankPlan, plan_epoch, steps_per_epoch, steps_queries
from trainables.train.rank_table import initial_rank_table, refresh_columns, refresh_ranks
from trainables.data.training_set import TrainingSet


def config(sample_data, cache_dir, **overrides) -> TrialConfig:
    data = {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}
    return TrialConfig.from_dict({
        "data": {"train": data, "pool_depth": 12, "max_train_queries": 20},
        "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
        "student": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
        "sampler": {"name": "random", "k": 4},
        "loss": {"name": "wkl", "gamma1": 2.0, "alpha": 1.0, "beta_refresh_steps": 3, "beta_pool_depth": 6},
        "optim": {"batch_size": 6, "epochs": 3},
        "cache_dir": str(cache_dir),
    }).with_overrides(overrides)


@pytest.fixture(scope="module")
def prepared(sample_data, tmp_path_factory):
    from trainables.prepare.assets import prepare_assets

    cfg = config(sample_data, tmp_path_factory.mktemp("cache"))
    ts = TrainingSet.load(prepare_assets(cfg, progress=False).training_set_path)
    student = BiEncoder.from_config(cfg.student, cfg.cache_dir)
    return cfg, ts, student


def test_steps_queries_are_the_queries_every_rank_trains_on_in_those_steps(prepared):
    cfg, ts, _ = prepared
    per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    first, n_steps = per_epoch - 1, 3        # crosses an epoch boundary
    expected = set()
    for rank in range(2):
        plans = {e: plan_epoch(ts, cfg, e, rank, 2) for e in (0, 1)}
        for step in range(first, first + n_steps):
            epoch, index = divmod(step, per_epoch)
            expected |= set(plans[epoch][index].query_idx.tolist())
    assert set(steps_queries(len(ts), cfg, first, n_steps).tolist()) == expected
    assert len(steps_queries(len(ts), cfg, 10_000, 3)) == 0   # past the last step: nothing to refresh


def test_the_loops_rank_plan_gives_every_step_the_batch_of_its_epochs_plan(prepared):
    cfg, ts, _ = prepared
    per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    plan = RankPlan(ts, cfg, 1, 2)
    for step in range(2 * per_epoch + 1):
        epoch, index = divmod(step, per_epoch)
        expected, got = plan_epoch(ts, cfg, epoch, 1, 2)[index], plan.batch(step)
        assert np.array_equal(got.query_idx, expected.query_idx)
        assert np.array_equal(got.positive_col, expected.positive_col)
        assert np.array_equal(got.candidate_col, expected.candidate_col)


def test_windowed_refresh_writes_the_rows_a_full_refresh_writes_whatever_the_table_history(prepared):
    cfg, ts, student = prepared
    columns = refresh_columns(ts, cfg.loss.beta_pool_depth)
    initial = initial_rank_table(ts)
    # An older refresh by a different student: the windowed rows must not depend on it.
    older = refresh_ranks(student, ts, initial.clone(), columns, 0, 1, 64, device="cpu")
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    full = refresh_ranks(student, ts, initial.clone(), columns, 0, 1, 64, device="cpu")
    window = steps_queries(len(ts), cfg, 3, cfg.loss.beta_refresh_steps)
    assert 0 < len(window) < len(ts)
    windowed = refresh_ranks(student, ts, older.clone(), columns, 0, 1, 64, queries=window, device="cpu")
    assert torch.equal(windowed[window], full[window])
    others = np.setdiff1d(np.arange(len(ts)), window)
    assert torch.equal(windowed[others], older[others])          # untouched until their own steps come
    assert not torch.equal(full[window], older[window])         # the perturbation did change ranks


def test_a_trial_from_the_warm_start_ranks_beta_by_the_warm_start_before_its_first_step(prepared):
    """The table's initial ranks are the pretrained student's; a refinement must not use them."""
    from trainables.train.rank_table import RankTable

    cfg, ts, student = prepared
    for init, refreshed in (("pretrained", False), ("warmup", True)):
        trial = cfg.with_overrides({"init.from": init})
        table = RankTable.start(ts, trial.loss)
        before = table.ranks.clone()
        table.refresh_if_due(student, ts, trial, 0, 0, 1, "cpu")
        window = steps_queries(len(ts), trial, 0, trial.loss.beta_refresh_steps)
        expected = refresh_ranks(student, ts, before.clone(), table.columns, 0, 1, trial.eval.batch_size,
                                 queries=window, device="cpu")
        assert torch.equal(table.ranks, expected if refreshed else before)
