"""KL divergence from the teacher's to the student's distribution over each query's candidates.

    L_KL = 1/B Σ_Q Σ_i p_i ln(p_i / q_i),   p = softmax(t / τ_t),   q = softmax(s / τ_s)

over the documents given to the loss (the query's positives plus its sampled candidates).
Reference: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015); the KL baseline of
the WKL paper (science.md §2). No τ² factor: the formula above is used as written.

Also holds the input handling the other losses share (`prepare_inputs`, `log_probs`, `kl_terms`):
fp16/bf16 scores are upcast to float32, teacher scores are targets (detached), padded entries
(`valid_mask` False) are excluded from the softmax and contribute 0.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    >>> t = torch.tensor([[3.0, 1.0, -2.0]])
    >>> kl_loss(s, t).backward()
"""
from __future__ import annotations

import torch
from torch import Tensor


def _upcast(scores: Tensor) -> Tensor:
    """Half precision is too coarse for log-probabilities and their weights: compute in float32."""
    if not torch.is_floating_point(scores):
        return scores.to(torch.float32)
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def prepare_inputs(
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor | None,
    valid_mask: Tensor | None,
    *,
    require_positive: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Validate shapes; return (student, teacher, positives ∧ valid, valid) with padding zeroed.

    Zeroing padded scores (instead of keeping NaN there) keeps every gradient finite.
    """
    if student_scores.ndim != 2 or student_scores.shape != teacher_scores.shape:
        raise ValueError(
            f"student_scores and teacher_scores must both be [B, n]; got {tuple(student_scores.shape)} "
            f"and {tuple(teacher_scores.shape)}"
        )
    shape = student_scores.shape
    if valid_mask is None:
        valid = torch.ones(shape, dtype=torch.bool, device=student_scores.device)
    else:
        if valid_mask.shape != shape:
            raise ValueError(f"valid_mask must have shape {tuple(shape)}, got {tuple(valid_mask.shape)}")
        valid = valid_mask.to(device=student_scores.device, dtype=torch.bool)
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every query needs at least one valid (unpadded) candidate")
    student = _upcast(student_scores).masked_fill(~valid, 0.0)
    teacher = _upcast(teacher_scores).detach().to(student.dtype).masked_fill(~valid, 0.0)
    positives = None
    if positive_mask is not None:
        if positive_mask.shape != shape:
            raise ValueError(f"positive_mask must have shape {tuple(shape)}, got {tuple(positive_mask.shape)}")
        positives = positive_mask.to(device=student_scores.device, dtype=torch.bool) & valid
        if require_positive and not bool(positives.any(dim=1).all()):
            missing = (~positives.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"every query needs at least one (valid) positive; rows without one: {missing}")
    elif require_positive:
        raise ValueError("positive_mask is required for this loss")
    return student, teacher, positives, valid


def log_probs(scores: Tensor, temperature: float, valid: Tensor) -> Tensor:
    """log softmax(scores / τ) over the valid entries; 0 (not -inf) at padding, so no 0·inf."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = (scores / temperature).masked_fill(~valid, float("-inf"))
    return torch.log_softmax(logits, dim=-1).masked_fill(~valid, 0.0)


def kl_terms(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Per-document p_i ln(p_i / q_i) from log-probabilities (0 where p underflows to 0)."""
    return torch.exp(log_p) * (log_p - log_q)


def kl_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor | None = None,
    valid_mask: Tensor | None = None,
    *,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
) -> Tensor:
    """L_KL = mean over queries of Σ_i p_i ln(p_i / q_i); `positive_mask` is accepted and unused."""
    student, teacher, _, valid = prepare_inputs(
        student_scores, teacher_scores, positive_mask, valid_mask, require_positive=False
    )
    log_q = log_probs(student, student_temperature, valid)
    log_p = log_probs(teacher, teacher_temperature, valid)
    terms = torch.where(valid, kl_terms(log_q, log_p), 0.0)
    return terms.sum(dim=1).mean()
