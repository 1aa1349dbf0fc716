"""Weighted KL divergence (WKL, "contrastively-weighted KL") and its rank-based β.

    L_WKL = 1/B Σ_Q [ Σ_{j∈D+} (1 − q_j)^γ1 · p_j ln(p_j / q_j)  +  Σ_{i∈D−} q_i^γ2,i · p_i ln(p_i / q_i) ]

    p = softmax(t / τ_t),  q = softmax(s / τ_s),  γ1 ≥ 0,  γ2,i = γ1 − β_i,
    β_i = α · (1/π(i) − mean_{j∈D+} 1/π(j)),   π = rank by the *student's* score (1 = best)

D+ holds every positive of the query in the list (`data.max_positives`, padded with `valid_mask`):
β's reference is the mean of 1/π over all of them, as in the paper, never one chosen positive.
Positives the student already ranks high (q_j → 1) and negatives it already pushes down (q_i → 0)
are down-weighted; higher-ranked negatives get a larger β, a smaller γ2 and so a larger weight.
γ1 = 0 and γ2 = 0 give exactly KL. The weights keep their gradient (it is what the paper's gradient
ratio g differentiates); β, and so γ2, is a constant (detached), computed from the student's ranks
in a table (`trainables/train/rank_table.py`, kept by the training loop) that is refreshed from the latest student every `beta_refresh_steps` batches.
Reference: Yang, Qiao, He, Yang, "Weighted KL-Divergence for Document Ranking Model Refinement",
SIGIR 2024 (arXiv:2406.05977); science.md §2.

Numerics: weights are computed in log space, q^γ = exp(γ·ln q) and (1 − q)^γ = exp(γ·ln(1 − q))
with ln(1 − q) = log1p(−min(q, 1 − eps)), so q → 1 or q → 0 gives no NaN/inf; a log-weight is
capped at `MAX_LOG_WEIGHT` (reachable only when γ2 < 0, i.e. α > γ1, and q is tiny). fp16/bf16
inputs are upcast to float32.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    >>> t = torch.tensor([[3.0, 1.0, -2.0]])
    >>> positives = torch.tensor([[True, False, False]])
    >>> beta = wkl_beta(ranks_from_scores(s), positives, alpha=1.0)
    >>> wkl_loss(s, t, positives, gamma1=5.0, gamma2=5.0 - beta).backward()

Relations: generalises KL (`kl.py`): γ1 = 0 and γ2 = 0 give `kl_loss`; its rank table is `trainables/train/rank_table.py`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainables.losses.kl import kl_terms, log_probs, prepare_inputs

MAX_LOG_WEIGHT = 30.0   # weights ≤ e^30 ≈ 1e13: finite losses even for negative γ2 and q ≈ 0


def wkl_log_weights(log_q: Tensor, positive_mask: Tensor, gamma1: float, gamma2: Tensor | float) -> Tensor:
    """ln of WKL's per-document weights: γ1 · ln(1 − q_j) at positives, γ2,i · ln q_i at negatives (capped).

    What multiplies each KL term; `kd-study check` reads their spread over a pool.
    """
    eps = torch.finfo(log_q.dtype).eps
    q = torch.exp(log_q)
    log_one_minus_q = torch.log1p(-q.clamp(max=1.0 - eps))
    positive_log_weight = gamma1 * log_one_minus_q
    negative_log_weight = gamma2 * log_q
    log_weight = torch.where(positive_mask, positive_log_weight, negative_log_weight)
    return log_weight.clamp(max=MAX_LOG_WEIGHT)


def wkl_terms(
    log_q: Tensor, log_p: Tensor, positive_mask: Tensor, gamma1: float, gamma2: Tensor | float
) -> Tensor:
    """Per-document WKL terms from log-probabilities; `wkl_loss` sums them over the valid documents.

    positive j: (1 − q_j)^γ1 · p_j ln(p_j/q_j);   negative i: q_i^γ2,i · p_i ln(p_i/q_i).
    Each term depends on its own q only, which is what the gradient ratio g is defined on.
    """
    return torch.exp(wkl_log_weights(log_q, positive_mask, gamma1, gamma2)) * kl_terms(log_q, log_p)


def gamma2_values(gamma1: float, beta: Tensor | None, floor: float | None = None) -> Tensor | float:
    """γ2,i = γ1 − β_i (γ1 where β is None), floored at `floor` when given (`loss.gamma2_floor`).

    The paper requires γ2,i > 0 for every negative, or γ2 = 0 for all: with γ2 < 0 the gradient
    ratio g = q^γ2 (1 − γ2 ln(p/q)) exceeds 1 where the teacher is worse (p < q), the opposite of
    WKL's purpose. |β_i| < α, so α ≤ γ1 keeps γ2 > 0; a floor ≥ 0 keeps it there for any α.
    """
    gamma2 = gamma1 if beta is None else gamma1 - beta
    if floor is None:
        return gamma2
    return torch.clamp(gamma2, min=floor) if isinstance(gamma2, Tensor) else max(gamma2, floor)


def wkl_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor,
    gamma1: float,
    gamma2: Tensor | float | None = None,
    valid_mask: Tensor | None = None,
    *,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
) -> Tensor:
    """Mean over queries of the WKL sum; `gamma2` is [B, n] (per document), a float, or None (= γ1).

    `gamma2` is detached and only read at negatives; use `gamma2 = gamma1 - wkl_beta(...)`.
    """
    if gamma1 < 0:
        raise ValueError(f"gamma1 must be non-negative (science.md: γ1 ≥ 0), got {gamma1}")
    student, teacher, positives, valid = prepare_inputs(
        student_scores, teacher_scores, positive_mask, valid_mask, require_positive=True
    )
    if gamma2 is None:
        gamma2 = gamma1
    if isinstance(gamma2, Tensor):
        try:
            gamma2 = torch.broadcast_to(gamma2.detach().to(student.device, student.dtype), student.shape)
        except RuntimeError:
            raise ValueError(
                f"gamma2 must broadcast to {tuple(student.shape)}, got shape {tuple(gamma2.shape)}"
            ) from None
        gamma2 = torch.where(valid, gamma2, 0.0)   # padding may carry NaN β
    log_q = log_probs(student, student_temperature, valid)
    log_p = log_probs(teacher, teacher_temperature, valid)
    terms = wkl_terms(log_q, log_p, positives, gamma1, gamma2)
    return torch.where(valid, terms, 0.0).sum(dim=1).mean()


def wkl_beta(
    student_ranks: Tensor, positive_mask: Tensor, alpha: float, valid_mask: Tensor | None = None
) -> Tensor:
    """β_i = α · (1/π(i) − mean_{j∈D+} 1/π(j)), detached; 0 at padding.

    `student_ranks` [B, n]: the student's rank of each document (1 = best, int or float), e.g. from
    `ranks_from_scores`. |β_i| < α, and a better-ranked document gets a larger β.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    if student_ranks.shape != positive_mask.shape:
        raise ValueError(
            f"student_ranks and positive_mask must have the same shape, got {tuple(student_ranks.shape)} "
            f"and {tuple(positive_mask.shape)}"
        )
    with torch.no_grad():
        ranks = student_ranks.detach()
        ranks = ranks.to(torch.float64 if ranks.dtype == torch.float64 else torch.float32)
        valid = torch.ones_like(ranks, dtype=torch.bool) if valid_mask is None else valid_mask.to(torch.bool)
        positives = positive_mask.to(torch.bool) & valid
        if not bool(positives.any(dim=1).all()):
            raise ValueError("every query needs at least one (valid) positive to compute β")
        if not bool((ranks[valid] >= 1).all()):
            raise ValueError("student ranks must be ≥ 1 (1 = best) at valid documents")
        inverse_rank = torch.where(valid, 1.0 / torch.where(valid, ranks, 1.0), 0.0)
        positive_mean = (inverse_rank * positives).sum(dim=1, keepdim=True) / positives.sum(dim=1, keepdim=True)
        return torch.where(valid, alpha * (inverse_rank - positive_mean), 0.0)


def ranks_from_scores(scores: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """Rank of each document by score within its row (1 = highest), as float; detached.

    Ties are broken stably (the earlier column ranks first); padded columns rank after every valid
    one (their ranks are not meaningful; `wkl_beta` ignores them).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, n], got shape {tuple(scores.shape)}")
    key = scores.detach().float() if scores.dtype in (torch.float16, torch.bfloat16) else scores.detach()
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    if valid_mask is not None:
        # A second stable sort moves padded columns behind every valid one, keeping score order.
        padded_in_order = (~valid_mask.to(torch.bool)).gather(1, order).to(torch.int8)
        order = order.gather(1, torch.sort(padded_in_order, dim=1, stable=True).indices)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=torch.float32)
    return torch.empty(scores.shape, device=scores.device, dtype=torch.float32).scatter_(
        1, order, positions.expand_as(order).contiguous()
    )
