"""Contrastive NLL of each query's positive against its own list, from the relevance labels alone (no teacher).

    L_labels = 1/B Σ_Q −ln softmax(s_Q,· / τ_s)_{pos(Q)}

over the scores s_Q,· of query Q with its list (its first positive and the K sampled pool negatives); the
query's other positives in the list are left out (not negatives), as padding is. The training step hands
the `labels` loss the scores of every passage of the step instead (the in-batch NLL of
trainables/losses/in_batch.py: other queries' passages as further negatives); this function is its value
on a one-query batch. Why: the no-distillation reference of an evidence study, the same student, data and
budget trained without the teacher, says what distilling adds over not distilling (issue 26).

Relations: `in_batch_nll` on the query's own list (its positive column, every valid non-positive entry);
the NLL term of `kl_nll` with one positive per query and no KL.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    >>> labels_nll(s, torch.tensor([[True, False, False]])).backward()
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainables.losses.in_batch import in_batch_nll


def labels_nll(student_scores: Tensor, positive_mask: Tensor, valid_mask: Tensor | None = None,
               student_temperature: float = 1.0) -> Tensor:
    """Mean over queries of −log q(first valid positive), q = softmax over the valid non-positive entries and it."""
    if student_scores.ndim != 2 or positive_mask.shape != student_scores.shape:
        raise ValueError(f"student_scores and positive_mask must both be [B, n], got {tuple(student_scores.shape)} "
                         f"and {tuple(positive_mask.shape)}")
    device = student_scores.device
    valid = torch.ones_like(positive_mask, dtype=torch.bool) if valid_mask is None else valid_mask.to(device, torch.bool)
    positives = positive_mask.to(device, torch.bool) & valid
    if not bool(positives.any(dim=1).all()):
        missing = (~positives.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"every query needs at least one (valid) positive; rows without one: {missing}")
    first = positives.int().argmax(dim=1)                 # the first True column of each row
    mask = valid & ~positives
    mask[torch.arange(len(first), device=device), first] = True
    return in_batch_nll(student_scores, first, mask, student_temperature)
