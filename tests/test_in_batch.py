"""In-batch negatives (trainables/losses/in_batch.py): the formula, its mask and its place in compute_loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.config import loss_config as LossConfig
from trainables.losses import in_batch_nll, kl_loss, kl_nll_loss
from trainables.train.dispatch import compute_loss
from trainables.train.step import in_batch_mask


def test_in_batch_nll_matches_hand_computation():
    s = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.0, 0.4, 0.8, 0.1]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True], [True, False, True, True]])
    tau = 0.5
    first = -math.log(math.exp(0.9 / tau) / sum(math.exp(v / tau) for v in (0.9, 0.1, 0.2, 0.3)))
    second = -math.log(math.exp(0.8 / tau) / sum(math.exp(v / tau) for v in (0.0, 0.8, 0.1)))   # 0.4 masked
    loss = in_batch_nll(s, torch.tensor([0, 2]), mask, tau)
    assert loss.item() == pytest.approx((first + second) / 2)


def test_in_batch_nll_of_one_query_is_the_nll_term_of_kl_nll():
    s = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64)
    t = torch.tensor([[3.0, 1.0, -2.0]], dtype=torch.float64)
    positives = torch.tensor([[True, False, False]])
    nll = kl_nll_loss(s, t, positives, nll_weight=1.0) - kl_loss(s, t)
    assert in_batch_nll(s, torch.tensor([0]), torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(nll.item())


def test_masked_passages_do_not_move_the_loss_or_get_gradients():
    s = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.4, 0.8]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    base = in_batch_nll(s, torch.tensor([0, 2]), mask, 0.05)
    base.backward()
    assert s.grad[0, 1] == 0
    moved = s.detach().clone()
    moved[0, 1] = 100.0
    assert in_batch_nll(moved, torch.tensor([0, 2]), mask, 0.05).item() == pytest.approx(base.item())
    with pytest.raises(ValueError, match="positive must be unmasked"):
        in_batch_nll(s, torch.tensor([1, 2]), mask)


def test_compute_loss_adds_the_weighted_in_batch_term():
    s = torch.tensor([[0.9, 0.1], [0.2, 0.7]])
    t = torch.tensor([[0.8, 0.3], [0.1, 0.9]])
    positives = torch.tensor([[True, False], [True, False]])
    all_scores = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.4, 0.3, 0.2, 0.7]])
    in_batch = (all_scores, torch.tensor([0, 2]), torch.ones(2, 4, dtype=torch.bool))
    cfg = LossConfig(name="kl", student_temperature=0.05, teacher_temperature=0.05)
    plain = compute_loss(cfg, s, t, positives)
    assert compute_loss(cfg, s, t, positives, in_batch=in_batch).item() == pytest.approx(plain.item())  # λ = 0: off
    weighted = compute_loss(cfg.model_copy(update={"in_batch_weight": 0.5}), s, t, positives, in_batch=in_batch)
    assert weighted.item() == pytest.approx(plain.item() + 0.5 * in_batch_nll(*in_batch, 0.05).item())
    with pytest.raises(ValueError, match="in-batch scores"):
        compute_loss(cfg.model_copy(update={"in_batch_weight": 0.5}), s, t, positives)


class _Set:
    positive_doc_idx = np.array([[7, 9], [3, -1]])


def test_in_batch_mask_drops_padding_and_the_querys_positives_met_elsewhere():
    # query 0: positive 7 then candidates [1, 3]; query 1: positive 3 then candidates [9, padding]
    docs = np.array([[7, 1, 3], [3, 9, 0]])
    valid = np.array([[True, True, True], [True, True, False]])
    mask = in_batch_mask(_Set(), np.array([0, 1]), docs, valid)
    assert mask.tolist() == [
        [True, True, True, True, False, False],     # doc 9 is query 0's other positive; last is padding
        [True, True, False, True, True, False],     # doc 3 in query 0's list is query 1's positive
    ]


def test_a_train_step_with_in_batch_negatives_scores_every_passage_and_trains(tmp_path):
    """Through the real scorer and step: the in-batch scores are each query against all b·n passages."""
    from trainables.config import StudentConfig
    from trainables.models.student import BiEncoder
    from trainables.train.step import DistillScorer, StepInputs, train_step

    torch.manual_seed(0)
    student = BiEncoder.from_config(StudentConfig(model="tiny:bert", query_max_length=8, passage_max_length=16),
                                    tmp_path)
    scorer = DistillScorer(student)
    texts = ["cells divide", "a protein binds", "unrelated text", "mice were fed", "diet and weight", "rain"]
    queries = student.tokenize(["cell division", "mouse diet"], is_query=True)
    passages = student.tokenize(texts, is_query=False)
    own, all_scores = scorer(queries, passages, 3, in_batch=True)
    assert all_scores.shape == (2, 6) and torch.allclose(own, torch.stack([all_scores[0, :3], all_scores[1, 3:]]))

    inputs = StepInputs(queries=queries, passages=passages, n=3, teacher_scores=torch.tensor([[0.9, 0.5, 0.1]] * 2),
                        positive_mask=torch.tensor([[True, False, False]] * 2), valid_mask=torch.ones(2, 3, dtype=torch.bool),
                        student_ranks=None, sampled_teacher_scores=[], loss_weight=1.0,
                        in_batch_mask=torch.ones(2, 6, dtype=torch.bool))
    optimizer = torch.optim.SGD(scorer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    before = [p.detach().clone() for p in scorer.parameters()]
    cfg = LossConfig(name="kl", in_batch_weight=1.0, student_temperature=0.05, teacher_temperature=0.05)
    loss = train_step(scorer, optimizer, scheduler, inputs, cfg, 0, 1.0, torch.device("cpu"))
    assert math.isfinite(loss) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, scorer.parameters()))


def test_a_train_step_of_the_labels_loss_is_the_in_batch_nll_of_every_passage(tmp_path):
    """The no-distillation reference through the real step: the step scores every passage for it (no λ_IB), its
    loss is `in_batch_nll` of those scores, and NaN teacher scores change nothing (it never reads them)."""
    from trainables.config import StudentConfig, TrialConfig
    from trainables.models.student import BiEncoder
    from trainables.train.dispatch import wants_in_batch
    from trainables.train.step import DistillScorer, StepInputs, train_step

    torch.manual_seed(0)
    student = BiEncoder.from_config(StudentConfig(model="tiny:bert", query_max_length=8, passage_max_length=16),
                                    tmp_path)
    scorer = DistillScorer(student).eval()   # no dropout: the step's forward equals the one below
    queries = student.tokenize(["cell division", "mouse diet"], is_query=True)
    passages = student.tokenize(["cells divide", "a protein binds", "rain", "mice were fed", "diet", "x"],
                                is_query=False)
    cfg = TrialConfig.from_dict({"loss": {"name": "labels", "student_temperature": 0.05}}).loss
    assert cfg.in_batch_weight == 0 and wants_in_batch(cfg)
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        _, all_scores = scorer(queries, passages, 3, in_batch=True)
    expected = float(in_batch_nll(all_scores, torch.tensor([0, 3]), mask, 0.05))
    inputs = StepInputs(queries=queries, passages=passages, n=3, teacher_scores=torch.full((2, 3), float("nan")),
                        positive_mask=torch.tensor([[True, False, False]] * 2), valid_mask=torch.ones(2, 3, dtype=torch.bool),
                        student_ranks=None, sampled_teacher_scores=[], loss_weight=1.0, in_batch_mask=mask)
    optimizer = torch.optim.SGD(scorer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loss = train_step(scorer, optimizer, scheduler, inputs, cfg, 0, 1.0, torch.device("cpu"))
    assert loss == pytest.approx(expected, rel=1e-5)
