"""Distillation losses (science.md §2): formulas, the WKL gradient theorem, β, numerics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.config import COSINE_STUDENT_SCALE, TrialConfig, loss_config as LossConfig
from trainables.registry import loss_entries
from trainables.train.dispatch import compute_loss
from trainables.losses import (
    gamma2_values,
    kl_loss,
    in_batch_nll,
    kl_nll_loss,
    labels_nll,
    margin_mse_loss,
    ranks_from_scores,
    wkl_beta,
    wkl_loss,
    wkl_terms,
)
from trainables.losses.kl import kl_terms

PROPERTY = settings(max_examples=150, deadline=None)
unit = st.floats(0.01, 0.99)


def _batch(batch: int, n: int, seed: int, dtype=torch.float64):
    """Random scores with 1..n-1 positives per query (several positives when n allows)."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, n, generator=gen, dtype=dtype) * 3
    teacher = torch.randn(batch, n, generator=gen, dtype=dtype) * 3
    positives = torch.zeros(batch, n, dtype=torch.bool)
    for row in range(batch):
        count = int(torch.randint(1, max(2, n), (1,), generator=gen))
        positives[row, torch.randperm(n, generator=gen)[:count]] = True
    return student, teacher, positives


# ---- closed-form gradient ratio (science.md §2) -------------------------------------------
def g_formula(p: float, q: float, gamma1: float, gamma2: float, positive: bool) -> float:
    if positive:
        return (1 - q) ** (gamma1 - 1) * (gamma1 * q * math.log(p / q) + 1 - q)
    return q**gamma2 * (1 - gamma2 * math.log(p / q))


def g_from_wkl_terms(p: float, q: float, gamma1: float, gamma2: float, positive: bool) -> float:
    """(∂L_WKL(i)/∂q) / (∂L_KL(i)/∂q) by autograd through the real per-term code, p fixed."""
    q_leaf = torch.tensor([[q]], dtype=torch.float64, requires_grad=True)
    log_p = torch.tensor([[math.log(p)]], dtype=torch.float64)
    mask = torch.tensor([[positive]])
    (d_wkl,) = torch.autograd.grad(wkl_terms(torch.log(q_leaf), log_p, mask, gamma1, gamma2).sum(), q_leaf)
    (d_kl,) = torch.autograd.grad(kl_terms(torch.log(q_leaf), log_p).sum(), q_leaf)
    return float(d_wkl / d_kl)


@PROPERTY
@given(p=unit, q=unit, gamma1=st.floats(0.0, 6.0), gamma2=st.floats(-1.5, 6.0), positive=st.booleans())
def test_wkl_loss_gradient_ratio_matches_closed_form(p, q, gamma1, gamma2, positive):
    expected = g_formula(p, q, gamma1, gamma2, positive)
    # The formula against autograd on the per-term losses written from the paper ...
    q_leaf = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    kl_term = p * torch.log(p / q_leaf)
    weight = (1 - q_leaf) ** gamma1 if positive else q_leaf**gamma2
    (d_kl,) = torch.autograd.grad(kl_term, q_leaf, retain_graph=True)
    (d_wkl,) = torch.autograd.grad(weight * kl_term, q_leaf)
    assert float(d_wkl / d_kl) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # ... and against the terms the real wkl_loss sums.
    assert g_from_wkl_terms(p, q, gamma1, gamma2, positive) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@PROPERTY
@given(
    n=st.integers(2, 6),
    data=st.data(),
    gamma1=st.floats(0.0, 6.0),
    tau_s=st.floats(0.5, 2.0),
    tau_t=st.floats(0.5, 2.0),
)
def test_wkl_loss_score_gradient_is_the_closed_form_ratio_times_kl_through_the_softmax(n, data, gamma1, tau_s, tau_t):
    logits = st.lists(st.floats(-3.0, 3.0), min_size=n, max_size=n)
    s = torch.tensor([data.draw(logits)], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([data.draw(logits)], dtype=torch.float64)
    positive = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    gamma2 = data.draw(st.lists(st.floats(-1.0, 6.0), min_size=n, max_size=n))
    loss = wkl_loss(s, t, torch.tensor([positive]), gamma1, torch.tensor([gamma2], dtype=torch.float64),
                    teacher_temperature=tau_t, student_temperature=tau_s)
    (grad,) = torch.autograd.grad(loss, s)
    q = torch.softmax(s.detach()[0] / tau_s, 0).numpy()
    p = torch.softmax(t[0] / tau_t, 0).numpy()
    # ∂L_WKL/∂q_i = g_i · ∂L_KL/∂q_i = g_i · (−p_i/q_i); then the softmax Jacobian (diag q − q qᵀ)/τ_s.
    v = np.array([g_formula(p[i], q[i], gamma1, gamma2[i], positive[i]) * -p[i] / q[i] for i in range(n)])
    expected = q * (v - q @ v) / tau_s
    np.testing.assert_allclose(grad[0].numpy(), expected, rtol=1e-8, atol=1e-11)


# ---- Theorem: sign regions of g ----------------------------------------------------------
@PROPERTY
@given(q=st.floats(0.01, 0.98), share=st.floats(0.0, 1.0), gamma=st.floats(0.0, 8.0), positive=st.booleans())
def test_wkl_loss_teacher_better_gives_positive_gradient_ratio(q, share, gamma, positive):
    # positive: p > q; negative: p < q
    p = q + (0.99 - q) * share + 1e-3 if positive else q * (1e-3 + (1 - 2e-3) * share)
    assert g_from_wkl_terms(min(p, 0.995), q, gamma, gamma, positive) > 0


@PROPERTY
@given(q=st.floats(0.01, 0.98), share=st.floats(0.0, 1.0), gamma=st.floats(0.05, 8.0), positive=st.booleans())
def test_wkl_loss_teacher_worse_gives_gradient_ratio_below_one(q, share, gamma, positive):
    # positive: p < q; negative: p > q
    p = q * (1e-3 + (1 - 2e-3) * share) if positive else min(q + (0.99 - q) * share + 1e-3, 0.995)
    assert g_from_wkl_terms(p, q, gamma, gamma, positive) < 1
    assert g_from_wkl_terms(p, q, 0.0, 0.0, positive) == pytest.approx(1.0)   # γ = 0 is KL


@PROPERTY
@given(gamma1=st.floats(0.05, 8.0), u=st.floats(0.0, 1.0), f=st.floats(1e-3, 1.0))
def test_wkl_loss_positive_gradient_ratio_nonpositive_when_q_is_large_against_p(gamma1, u, f):
    low = 1.0 / (gamma1 + 1.0)
    q = low + u * (0.99 - low)                  # q ≥ 1/(γ1+1)
    p = f * q / math.e                          # q ≥ e·p
    assert g_from_wkl_terms(p, q, gamma1, 0.0, True) <= 1e-12


@PROPERTY
@given(gamma2=st.floats(0.1, 8.0), p=st.floats(0.01, 0.99), f=st.floats(1e-3, 1.0))
def test_wkl_loss_negative_gradient_ratio_nonpositive_when_p_over_q_exceeds_e_to_one_over_gamma2(gamma2, p, f):
    q = f * p * math.exp(-1.0 / gamma2)         # p/q ≥ e^(1/γ2)
    assert g_from_wkl_terms(p, q, 0.0, gamma2, False) <= 1e-12


# ---- WKL reduces to KL --------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 2), (3, 5), (8, 17), (4, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wkl_loss_with_zero_gamma1_and_alpha_equals_kl_loss(shape, dtype):
    s, t, positives = _batch(*shape, seed=sum(shape), dtype=dtype)
    beta = wkl_beta(ranks_from_scores(s), positives, alpha=0.0)
    assert torch.count_nonzero(beta) == 0
    for tau in (1.0, 0.3):
        s_w = s.clone().requires_grad_(True)
        s_k = s.clone().requires_grad_(True)
        wkl = wkl_loss(s_w, t, positives, 0.0, 0.0 - beta, teacher_temperature=tau, student_temperature=tau)
        kl = kl_loss(s_k, t, positives, teacher_temperature=tau, student_temperature=tau)
        assert abs(wkl.item() - kl.item()) < 1e-6
        wkl.backward(), kl.backward()
        torch.testing.assert_close(s_w.grad, s_k.grad, rtol=1e-5, atol=1e-7)
    config = LossConfig(name="wkl", gamma1=0.0, alpha=0.0)
    assert float(compute_loss(config, s, t, positives, state=ranks_from_scores(s))) == pytest.approx(
        float(compute_loss(LossConfig(name="kl"), s, t, positives)), abs=1e-6)


# ---- values on hand examples -------------------------------------------------------------
def test_kl_loss_matches_hand_computation_and_torch_kl_div():
    s = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64)
    t = torch.tensor([[3.0, 1.0, -2.0]], dtype=torch.float64)
    p, q = torch.softmax(t[0], 0).tolist(), torch.softmax(s[0], 0).tolist()
    assert float(kl_loss(s, t)) == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), rel=1e-12)
    s2, t2, _ = _batch(5, 7, seed=0)
    reference = torch.nn.functional.kl_div(torch.log_softmax(s2 / 2, 1), torch.log_softmax(t2 / 0.5, 1),
                                           reduction="batchmean", log_target=True)
    torch.testing.assert_close(kl_loss(s2, t2, teacher_temperature=0.5, student_temperature=2.0), reference)


def test_margin_mse_loss_matches_hand_computation():
    nan = float("nan")
    s = torch.tensor([[2.0, 0.5, -1.0, 0.0], [1.0, 1.5, 0.0, 7.0]])
    t = torch.tensor([[3.0, 1.0, -2.0, nan], [2.0, 0.0, 1.0, nan]])
    positives = torch.tensor([[True, False, False, False], [True, True, False, False]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, False]])
    # query 1: pairs (0,1): (1.5 − 2)² = 0.25, (0,2): (3 − 5)² = 4        → mean 2.125
    # query 2: pairs (0,2): (1 − 1)² = 0,      (1,2): (1.5 − (−1))² = 6.25 → mean 3.125
    assert float(margin_mse_loss(s, t, positives, valid)) == pytest.approx((2.125 + 3.125) / 2)


def test_kl_nll_loss_is_kl_plus_weighted_nll_of_the_positives():
    s, t, positives = _batch(4, 6, seed=1)
    log_q = torch.log_softmax(s, 1)
    nll = -(log_q * positives).sum(1).mean()
    for weight in (0.0, 0.5, 2.0):
        expected = kl_loss(s, t) + weight * nll
        torch.testing.assert_close(kl_nll_loss(s, t, positives, nll_weight=weight), expected)


def test_wkl_loss_weights_each_kl_term_as_in_the_paper():
    s, t, positives = _batch(3, 5, seed=2)
    gamma2 = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4
    q, p = torch.softmax(s, 1).numpy(), torch.softmax(t, 1).numpy()
    pos, g2 = positives.numpy(), gamma2.numpy()
    weight = np.where(pos, (1 - q) ** 5.0, q**g2)
    expected = (weight * p * np.log(p / q)).sum(1).mean()
    assert float(wkl_loss(s, t, positives, 5.0, gamma2)) == pytest.approx(expected, rel=1e-10)


# ---- β and ranks -------------------------------------------------------------------------
def test_wkl_beta_matches_hand_computation():
    ranks = torch.tensor([[1, 2, 3, 4]])
    positives = torch.tensor([[False, True, False, False]])
    beta = wkl_beta(ranks, positives, alpha=2.0)
    torch.testing.assert_close(beta, 2.0 * torch.tensor([[0.5, 0.0, 1 / 3 - 0.5, -0.25]]))


@PROPERTY
@given(n=st.integers(2, 30), alpha=st.floats(0.01, 3.0), data=st.data())
def test_wkl_beta_is_bounded_by_alpha_and_larger_for_better_ranked_negatives(n, alpha, data):
    permutation = data.draw(st.permutations(list(range(1, n + 1))))
    ranks = torch.tensor([permutation], dtype=torch.float32)
    positive = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    positives = torch.tensor([positive])
    beta = wkl_beta(ranks, positives, alpha)
    assert bool((beta.abs() < alpha).all())
    negatives = [i for i in range(n) if not positive[i]]
    by_rank = sorted(negatives, key=lambda i: permutation[i])
    values = [float(beta[0, i]) for i in by_rank]
    assert all(a > b for a, b in zip(values, values[1:])), "a better-ranked negative must get a larger β"
    assert torch.count_nonzero(wkl_beta(ranks, positives, 0.0)) == 0


def test_wkl_beta_is_detached_and_zero_at_padding():
    scores = torch.tensor([[0.3, 2.0, -1.0, 5.0]], requires_grad=True)
    valid = torch.tensor([[True, True, True, False]])
    beta = wkl_beta(ranks_from_scores(scores, valid), torch.tensor([[True, False, False, False]]), 1.0, valid)
    assert not beta.requires_grad and float(beta[0, 3]) == 0.0
    gamma2 = torch.full((1, 4), 2.0, requires_grad=True)
    wkl_loss(scores, scores.detach(), torch.tensor([[True, False, False, False]]), 2.0, gamma2, valid).backward()
    assert gamma2.grad is None, "γ2 (from β) must be a constant in the loss"


def test_ranks_from_scores_ranks_highest_first_with_stable_ties_and_padding_last():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 9.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True, False], [False, True, True, True, True]])
    ranks = ranks_from_scores(scores, valid)
    assert ranks.tolist() == [[4.0, 1.0, 2.0, 3.0, 5.0], [5.0, 1.0, 2.0, 3.0, 4.0]]
    assert ranks_from_scores(scores[:1]).tolist() == [[5.0, 2.0, 3.0, 4.0, 1.0]]


# ---- dispatch -----------------------------------------------------------------------------
def test_compute_loss_dispatches_each_loss_with_config_parameters():
    s, t, positives = _batch(4, 6, seed=3)
    temps = {"teacher_temperature": 0.5, "student_temperature": 2.0}
    cases = {
        "kl": kl_loss(s, t, positives, **temps),
        "margin_mse": margin_mse_loss(s, t, positives),
        "kl_nll": kl_nll_loss(s, t, positives, nll_weight=0.3, **temps),
    }
    for name, expected in cases.items():
        config = LossConfig(name=name, **({"nll_weight": 0.3} if name == "kl_nll" else {}), **temps)
        torch.testing.assert_close(compute_loss(config, s, t, positives), expected)
    beta = wkl_beta(ranks_from_scores(s), positives, 1.0)
    config = LossConfig(name="wkl", gamma1=3.0, alpha=1.0, kl_warmup_steps=10, **temps)
    ranks = ranks_from_scores(s)
    torch.testing.assert_close(compute_loss(config, s, t, positives, state=ranks, step=9), cases["kl"])
    with_beta = compute_loss(config, s, t, positives, state=ranks, step=10)
    torch.testing.assert_close(with_beta, wkl_loss(s, t, positives, 3.0, 3.0 - beta, **temps))
    torch.testing.assert_close(compute_loss(config, s, t, positives, step=10),
                               wkl_loss(s, t, positives, 3.0, 3.0, **temps))   # no ranks: β = 0
    assert float(with_beta) != pytest.approx(float(cases["kl"]))
    assert set(loss_entries()) == {"kl", "margin_mse", "kl_nll", "wkl", "labels"}


# ---- numerics and padding -----------------------------------------------------------------
LOSS_CONFIGS = {
    "kl": LossConfig(name="kl"),
    "kl_sharp": LossConfig(name="kl", teacher_temperature=0.05, student_temperature=0.05),
    "margin_mse": LossConfig(name="margin_mse"),
    "kl_nll": LossConfig(name="kl_nll", nll_weight=1.0),
    "wkl": LossConfig(name="wkl", gamma1=5.0, alpha=1.0),
    "wkl_gamma1_0": LossConfig(name="wkl", gamma1=0.0, alpha=0.0),
    "wkl_negative_gamma2": LossConfig(name="wkl", gamma1=0.5, alpha=1.5),
    "labels": LossConfig(name="labels", student_temperature=0.5),
}
EXTREMES = {
    "scores_pm_1e4": ([[1e4, -1e4, 0.0, 5e3], [-1e4, 1e4, -1e4, 1e4]],
                      [[-1e4, 1e4, 1e4, -5e3], [1e4, -1e4, 1e4, -1e4]]),
    "q_to_1_and_q_to_0": ([[60.0, 0.0, -60.0, -60.0], [-60.0, 60.0, 0.0, -60.0]],
                          [[0.0, 1.0, 2.0, 3.0], [60.0, -60.0, 0.0, 0.0]]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(EXTREMES))
@pytest.mark.parametrize("loss_name", sorted(LOSS_CONFIGS))
def test_loss_and_gradients_are_finite_on_extreme_scores_and_half_precision(loss_name, case, dtype):
    student, teacher = EXTREMES[case]
    s = torch.tensor(student, dtype=dtype, requires_grad=True)
    t = torch.tensor(teacher, dtype=dtype)
    positives = torch.tensor([[True, False, False, False], [True, False, True, False]])
    loss = compute_loss(LOSS_CONFIGS[loss_name], s, t, positives, state=ranks_from_scores(s))
    assert loss.dtype in (torch.float32, torch.float64) and torch.isfinite(loss)
    loss.backward()
    assert s.grad is not None and bool(torch.isfinite(s.grad).all())


@pytest.mark.parametrize("loss_name", sorted(LOSS_CONFIGS))
def test_loss_in_half_precision_matches_float32_on_the_same_values(loss_name):
    s, t, positives = _batch(4, 6, seed=4, dtype=torch.float32)
    s, t = s.to(torch.float16).float(), t.to(torch.float16).float()   # values exact in fp16
    ranks = ranks_from_scores(s)
    full = compute_loss(LOSS_CONFIGS[loss_name], s, t, positives, state=ranks)
    half = compute_loss(LOSS_CONFIGS[loss_name], s.half(), t.half(), positives, state=ranks)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full)


@pytest.mark.parametrize("loss_name", sorted(LOSS_CONFIGS))
def test_loss_ignores_padded_candidates(loss_name):
    s, t, positives = _batch(3, 7, seed=5)
    sizes = [7, 4, 2]
    valid = torch.arange(7).expand(3, 7) < torch.tensor(sizes).unsqueeze(1)
    positives[:, 0] = True                              # a valid positive in every row
    s_padded = s.masked_fill(~valid, float("nan")).requires_grad_(True)
    t_padded = t.masked_fill(~valid, float("nan"))
    config = LOSS_CONFIGS[loss_name]
    padded = compute_loss(config, s_padded, t_padded, positives, state=ranks_from_scores(s_padded, valid),
                          valid_mask=valid)
    per_query = []
    for row, size in enumerate(sizes):
        s_row, t_row, p_row = s[row:row + 1, :size], t[row:row + 1, :size], positives[row:row + 1, :size]
        per_query.append(compute_loss(config, s_row, t_row, p_row, state=ranks_from_scores(s_row)))
    torch.testing.assert_close(padded, torch.stack(per_query).mean())
    padded.backward()
    assert bool(torch.isfinite(s_padded.grad).all()) and bool((s_padded.grad[~valid] == 0).all())


def test_loss_rejects_queries_without_a_positive_and_bad_shapes():
    s, t, positives = _batch(2, 4, seed=6)
    positives[1] = False
    for loss in (margin_mse_loss, kl_nll_loss):
        with pytest.raises(ValueError, match=r"at least one \(valid\) positive; rows without one: \[1\]"):
            loss(s, t, positives)
    with pytest.raises(ValueError, match="at least one"):
        wkl_loss(s, t, positives, 1.0)
    with pytest.raises(ValueError, match="must both be"):
        kl_loss(s, t[:, :3])
    with pytest.raises(ValueError, match="gamma1 must be non-negative"):
        wkl_loss(s, t, torch.ones_like(positives), -1.0)
    with pytest.raises(ValueError, match="gamma2 must broadcast"):
        wkl_loss(s, t, torch.ones_like(positives), 1.0, torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wkl_loss_is_finite_with_negative_gamma2_on_negatives_with_vanishing_q(dtype):
    # A stale β (ranks from an older student) can give γ2 < 0 where q is now ≈ 0: q^γ2 would overflow.
    s = torch.tensor([[1e4, -1e4, -1e4, 0.0]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.0, 1e4, 0.0, 1.0]], dtype=dtype)
    loss = wkl_loss(s, t, torch.tensor([[True, False, False, False]]), 0.5, torch.tensor([[0.0, -3.0, -3.0, -3.0]]))
    loss.backward()
    assert torch.isfinite(loss)
    if dtype != torch.float16:   # weights up to e^30 (MAX_LOG_WEIGHT) overflow fp16's range in the gradient
        assert bool(torch.isfinite(s.grad).all())


def _fit_cosine_student(teacher: torch.Tensor, positives: torch.Tensor, scale: float, steps: int = 400) -> float:
    """Optimise free cosine scores (tanh of free parameters, in (−1, 1)) on MarginMSE; the final loss."""
    torch.manual_seed(0)
    theta = torch.zeros_like(teacher, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=0.05)
    for _ in range(steps):
        loss = margin_mse_loss(torch.tanh(theta), teacher, positives, student_scale=scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return margin_mse_loss(torch.tanh(theta), teacher, positives, student_scale=scale).item()


def test_margin_mse_with_a_scaled_cosine_student_reaches_a_cross_encoders_margins():
    """Cross-encoder-like logits (margins of several units): a cosine student scaled ×20 (the `auto`
    default) can match them, an unscaled one cannot (its margins are at most 2)."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.cat([torch.full((8, 1), 7.0), torch.empty(8, 6).uniform_(-6.0, 2.0, generator=generator)], dim=1)
    positives = torch.zeros(8, 7, dtype=torch.bool)
    positives[:, 0] = True
    margins = teacher[:, :1] - teacher[:, 1:]
    assert margins.min() > 4.0   # every margin is beyond a cosine's reach of 2
    unreachable = float(((margins - 2.0) ** 2).mean())
    assert _fit_cosine_student(teacher, positives, scale=20.0) < 0.01
    assert _fit_cosine_student(teacher, positives, scale=1.0) >= unreachable * 0.99


def test_margin_mse_scale_auto_follows_the_teacher_and_student():
    cross = TrialConfig.from_dict({"teacher": {"kind": "cross_encoder", "model": "x"}, "loss": {"name": "margin_mse"}})
    assert cross.loss.student_scale == "auto" and cross.loss.margin_scale == COSINE_STUDENT_SCALE
    assert TrialConfig.from_dict({"loss": {"name": "margin_mse"}}).loss.margin_scale == 1.0   # cosine teacher too
    assert cross.with_overrides({"loss.student_scale": 5}).loss.margin_scale == 5.0
    # compute_loss applies it: scores × 20 against the teacher's margins
    s, t = torch.tensor([[0.5, 0.1]]), torch.tensor([[9.0, 1.0]])
    positives = torch.tensor([[True, False]])
    torch.testing.assert_close(compute_loss(cross.loss, s, t, positives), torch.tensor((20 * 0.4 - 8.0) ** 2))


def test_gamma2_floor_keeps_gamma2_at_or_above_it():
    beta = torch.tensor([[0.0, 1.4, -0.3]])
    torch.testing.assert_close(gamma2_values(1.0, beta), torch.tensor([[1.0, -0.4, 1.3]]))
    torch.testing.assert_close(gamma2_values(1.0, beta, floor=0.0), torch.tensor([[1.0, 0.0, 1.3]]))
    s = torch.tensor([[2.0, 0.5, -1.0]])
    t = torch.tensor([[3.0, 1.0, -2.0]])
    positives = torch.tensor([[True, False, False]])
    floored = LossConfig(name="wkl", gamma1=1.0, alpha=1.5, gamma2_floor=0.0)
    ranks = torch.tensor([[1.0, 3.0, 2.0]])   # the student's ranks the step reads: β = 1.5 · (1/π − 1/π_pos)
    beta = wkl_beta(ranks, positives, 1.5)
    expected = wkl_loss(s, t, positives, 1.0, gamma2_values(1.0, beta, 0.0))
    torch.testing.assert_close(compute_loss(floored, s, t, positives, state=ranks), expected)


def test_the_docs_table_of_losses_and_samplers_is_the_registrys():
    """docs/internals.md's table is `registry.markdown_table()` (regenerate it when an entry changes)."""
    from pathlib import Path

    from trainables.registry import markdown_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "internals.md").read_text()
    assert markdown_table(builtin_only=True) in docs


# ---- the no-distillation reference (`labels`) ------------------------------------------------
def _labels_inputs(seed: int):
    s, t, positives = _batch(4, 6, seed=seed)
    positives[:, 0] = True
    in_batch = (torch.randn(4, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
                torch.arange(4) * 6, torch.ones(4, 24, dtype=torch.bool))
    return s, t, positives, in_batch


@pytest.mark.parametrize("with_in_batch", [False, True])
def test_labels_loss_and_its_gradient_ignore_the_teacher_scores(with_in_batch):
    s, t, positives, in_batch = _labels_inputs(seed=11)
    config = LossConfig(name="labels", student_temperature=0.5)
    values, grads = [], []
    for teacher in (t, -3 * t + 1, torch.full_like(t, float("nan"))):
        student = s.clone().requires_grad_(True)
        scores = in_batch[0].clone().requires_grad_(True)
        loss = compute_loss(config, student, teacher, positives,
                            in_batch=(scores, *in_batch[1:]) if with_in_batch else None)
        loss.backward()
        values.append(loss.detach())
        grads.append(scores.grad if with_in_batch else student.grad)
    for value, grad in zip(values[1:], grads[1:]):
        torch.testing.assert_close(value, values[0])
        torch.testing.assert_close(grad, grads[0])
    assert torch.isfinite(values[0])


def test_labels_loss_is_the_in_batch_nll_where_their_inputs_coincide():
    """On the step's in-batch scores it is `in_batch_nll` itself; on one query's list it is `in_batch_nll` of
    that list (the query's own positive column, its other positives and padding masked out)."""
    s, t, positives, in_batch = _labels_inputs(seed=12)
    config = LossConfig(name="labels", student_temperature=0.5)
    torch.testing.assert_close(compute_loss(config, s, t, positives, in_batch=in_batch),
                               in_batch_nll(*in_batch, 0.5))
    positives[:, 3] = True                                  # a second positive: not a negative of its own query
    valid = torch.ones_like(positives)
    valid[1, 5] = False
    expected = []
    for row in range(4):
        mask = valid[row] & ~positives[row]
        mask[0] = True
        expected.append(in_batch_nll(s[row:row + 1], torch.tensor([0]), mask[None], 0.5))
    got = compute_loss(config, s, t, positives, valid_mask=valid)
    torch.testing.assert_close(got, torch.stack(expected).mean())
    torch.testing.assert_close(got, labels_nll(s, positives, valid, 0.5))
    with pytest.raises(ValueError, match="at least one"):
        labels_nll(s, torch.zeros_like(positives))


def test_labels_block_refuses_a_second_in_batch_term_and_asks_the_step_for_in_batch_scores():
    from trainables.train.dispatch import wants_in_batch

    with pytest.raises(ValueError, match="the labels loss is the in-batch NLL already"):
        LossConfig(name="labels", in_batch_weight=1.0)
    assert wants_in_batch(LossConfig(name="labels"))
    assert not wants_in_batch(LossConfig(name="kl")) and wants_in_batch(LossConfig(name="kl", in_batch_weight=0.5))
    assert "no-distillation reference" in loss_entries()["labels"].label
