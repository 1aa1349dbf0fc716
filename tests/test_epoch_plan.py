"""The epoch plan's KD list: every positive of a query (up to data.max_positives) beside its K candidates."""
from __future__ import annotations

import numpy as np
import torch

from trainables.config import TrialConfig
from trainables.train.epoch_plan import plan_epoch, plan_positives
from trainables.losses import wkl_beta
from trainables.data.training_set import TrainingSet


def multi_positive_set(n_queries: int = 8) -> TrainingSet:
    """Query i has i % 4 + 1 positives (docs 100·i + j) and a pool of 6 (docs 100·i + 10 + c)."""
    docs, positive, pool = [], np.full((n_queries, 4), -1), np.full((n_queries, 6), -1)
    for i in range(n_queries):
        for j in range(i % 4 + 1):
            positive[i, j] = len(docs)
            docs.append(f"d{100 * i + j}")
        for c in range(6):
            pool[i, c] = len(docs)
            docs.append(f"d{100 * i + 10 + c}")
    rng = np.random.default_rng(0)
    teacher_pos = np.where(positive >= 0, 5.0 + rng.random(positive.shape), np.nan).astype(np.float32)
    teacher_pool = rng.normal(size=pool.shape).astype(np.float32)
    return TrainingSet([f"q{i}" for i in range(n_queries)], [f"query {i}" for i in range(n_queries)], docs,
                       [f"passage {d}" for d in docs], positive, pool, teacher_pos, teacher_pool,
                       teacher_pos.copy(), teacher_pool.copy())


def test_plan_keeps_every_positive_up_to_max_positives_and_a_seeded_subset_beyond():
    n_positives = np.array([1, 2, 3, 4])
    columns = plan_positives(n_positives, 3, np.random.default_rng(0))
    assert columns.shape == (4, 3)
    for row, n in zip(columns, n_positives):
        real = row[row >= 0]
        assert len(real) == min(n, 3) and len(set(real.tolist())) == len(real) and real.max() < n
    assert columns[:3].tolist() == [[0, -1, -1], [0, 1, -1], [0, 1, 2]]   # all of them, in grade order
    draws = {tuple(plan_positives(n_positives, 3, np.random.default_rng(s))[3].tolist()) for s in range(20)}
    assert len(draws) > 1                                                 # 4 positives > 3: a seeded subset
    one = plan_positives(n_positives, 1, np.random.default_rng(0))
    assert one.shape == (4, 1) and (one[:, 0] < n_positives).all()


def test_step_inputs_put_all_positives_in_the_list_and_beta_averages_over_them(tmp_path):
    from trainables.models.student import BiEncoder
    from trainables.data.token_ids import step_tokens_in_memory
    from trainables.train.step import build_step_inputs

    ts = multi_positive_set()
    cfg = TrialConfig.from_dict({"data": {"pool_depth": 6, "max_positives": 4}, "sampler": {"name": "topk", "k": 3},
                                 "optim": {"batch_size": 8},
                                 "student": {"model": "tiny:bert", "query_max_length": 8, "passage_max_length": 8}})
    batch = plan_epoch(ts, cfg, 0, 0, 1)[0]
    student = BiEncoder.from_config(cfg.student, tmp_path)
    inputs = build_step_inputs(step_tokens_in_memory(ts, student), ts, batch, 1, None)
    assert inputs.n == 4 + 3
    n_pos = (ts.positive_doc_idx[batch.query_idx] >= 0).sum(axis=1)
    mask, valid = inputs.positive_mask.numpy(), inputs.valid_mask.numpy()
    assert (mask.sum(axis=1) == n_pos).all() and not mask[:, 4:].any()
    assert (valid[:, :4].sum(axis=1) == n_pos).all() and valid[:, 4:].all()
    np.testing.assert_array_equal(                                      # the teacher's positive scores, in order
        inputs.teacher_scores.numpy()[mask], ts.teacher_positive_scores[batch.query_idx][mask[:, :4]])
    assert all(len(s) == 3 for s in inputs.sampled_teacher_scores)       # diagnostics: candidates only

    # β's reference is the mean of 1/π over every positive in the list (WKL paper), padding ignored.
    ranks = torch.tensor([[1.0, 4.0, 2.0, 3.0, 5.0]])
    positives = torch.tensor([[True, True, False, False, False]])
    valid_row = torch.tensor([[True, True, True, True, False]])
    beta = wkl_beta(ranks, positives, alpha=1.0, valid_mask=valid_row)
    mean_inverse = (1 / 1 + 1 / 4) / 2
    torch.testing.assert_close(beta, torch.tensor([[1 - mean_inverse, 0.25 - mean_inverse, 0.5 - mean_inverse,
                                                    1 / 3 - mean_inverse, 0.0]]))


def test_candidates_sampled_in_chunks_of_queries_equal_one_pass(monkeypatch):
    """plan_epoch samples PLAN_CHUNK queries at a time (bounded memory at 100k queries) from the one rng."""
    import trainables.train.epoch_plan as epoch_plan

    ts = multi_positive_set(24)
    for sampler in ("stratified", "random", "topk"):
        cfg = TrialConfig.from_dict({"data": {"pool_depth": 6, "max_positives": 4}, "sampler": {"name": sampler, "k": 3},
                                     "optim": {"batch_size": 4}})
        whole = plan_epoch(ts, cfg, 1, 0, 1)
        monkeypatch.setattr(epoch_plan, "PLAN_CHUNK", 5)
        chunked = plan_epoch(ts, cfg, 1, 0, 1)
        monkeypatch.undo()
        assert all(np.array_equal(a.candidate_col, b.candidate_col) for a, b in zip(whole, chunked))
