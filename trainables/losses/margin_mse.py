"""MarginMSE: the student's score margins regress onto the teacher's.

    L_MarginMSE = 1/B Σ_Q 1/|P_Q| Σ_{(j, i) ∈ P_Q} (c·(s_j - s_i) - (t_j - t_i))²,   P_Q = D+ × D-

i.e. the mean over the query's (positive, negative) pairs, then the mean over queries (with one
positive and one negative per query and c = 1 this is sentence-transformers' MarginMSELoss). No
temperature; c = `student_scale` puts the student's margins on the teacher's scale: a cosine
student's margins are at most 2, a cross-encoder teacher's logit margins span several units, so
with c = 1 the loss cannot be matched and degenerates to "push the margins up" (`loss.student_scale`,
`auto` = 20 for a cosine student of a non-cosine teacher; `kd-study check` compares the ranges).
A query with no negative has no pair and contributes 0.
Reference: Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation" (2020); a baseline of the WKL paper (science.md §2).

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    >>> t = torch.tensor([[3.0, 1.0, -2.0]])
    >>> margin_mse_loss(s, t, torch.tensor([[True, False, False]])).item()  # ((1.5-2)² + (3-5)²) / 2
    2.125
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainables.losses.kl import prepare_inputs


def margin_mse_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    student_scale: float = 1.0,
) -> Tensor:
    """Mean over queries of the mean squared (positive − negative) margin error, student scores × `student_scale`."""
    if not student_scale > 0:
        raise ValueError(f"student_scale must be positive, got {student_scale}")
    student, teacher, positives, valid = prepare_inputs(
        student_scores, teacher_scores, positive_mask, valid_mask, require_positive=True
    )
    student = student * student_scale
    negatives = valid & ~positives
    # [B, n, n]: row j = the positive's index, column i = the negative's index.
    student_margin = student.unsqueeze(2) - student.unsqueeze(1)
    teacher_margin = teacher.unsqueeze(2) - teacher.unsqueeze(1)
    pairs = positives.unsqueeze(2) & negatives.unsqueeze(1)
    squared = torch.where(pairs, (student_margin - teacher_margin) ** 2, 0.0)
    per_query = squared.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
    return per_query.mean()
