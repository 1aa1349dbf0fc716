"""KL plus the negative log-likelihood of the positives under the student.

    L_KL+NLL = 1/B Σ_Q [ Σ_i p_i ln(p_i / q_i)  +  λ · (−Σ_{j∈D+} ln q_j) ]

with p = softmax(t / τ_t), q = softmax(s / τ_s) and λ = `nll_weight` (the `kl_nll` loss block's `nll_weight`).
Reference: the KL+NLL baseline of the WKL paper (science.md §2); the NLL term is the usual
contrastive (InfoNCE) loss over the same candidates.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    >>> t = torch.tensor([[3.0, 1.0, -2.0]])
    >>> kl_nll_loss(s, t, torch.tensor([[True, False, False]]), nll_weight=0.5).backward()
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainables.losses.kl import kl_terms, log_probs, prepare_inputs


def kl_nll_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    nll_weight: float = 1.0,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
) -> Tensor:
    """Mean over queries of KL + λ · (−Σ_{j∈D+} log q_j)."""
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be non-negative, got {nll_weight}")
    student, teacher, positives, valid = prepare_inputs(
        student_scores, teacher_scores, positive_mask, valid_mask, require_positive=True
    )
    log_q = log_probs(student, student_temperature, valid)
    log_p = log_probs(teacher, teacher_temperature, valid)
    kl = torch.where(valid, kl_terms(log_q, log_p), 0.0).sum(dim=1)
    nll = -torch.where(positives, log_q, 0.0).sum(dim=1)
    return (kl + nll_weight * nll).mean()
