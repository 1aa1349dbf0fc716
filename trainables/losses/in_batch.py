"""Contrastive NLL of each query's positive against every passage of the batch (in-batch negatives).

    L_IB = 1/B Σ_Q −ln softmax(s_Q,· / τ_s)_{pos(Q)}

over the scores s_Q,· of query Q with all b·n passages of the step: its own positive and candidates
and every other query's. Added to the distillation loss as λ_IB · L_IB (`loss.in_batch_weight`).
Why: KL and MarginMSE only see a query's own top-N candidates, all near its topic; nothing in them
holds the student's other passages away from the query, so the embedding space can drift (the
out-of-domain drop of issue 13). Other queries' passages are the classic cheap random negatives
(DPR, Karpukhin et al. 2020). Only the student scores them: the cached teacher scores cover a
query's own pool, not other queries' passages. Entries masked out (`in_batch_mask` False) are
padding and the query's other positives met elsewhere in the batch (false negatives).

Relations: with one query per batch and no padding it is the NLL term of `kl_nll` (λ = 1).

Example:
    >>> import torch
    >>> s = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.0, 0.4, 0.8, 0.1]], requires_grad=True)
    >>> in_batch_nll(s, torch.tensor([0, 2]), torch.ones(2, 4, dtype=torch.bool), 0.05).backward()
"""
from __future__ import annotations

import torch
from torch import Tensor


def in_batch_nll(scores: Tensor, positive_col: Tensor, in_batch_mask: Tensor, student_temperature: float = 1.0) -> Tensor:
    """Mean over queries of −log q(positive) with q = softmax over the unmasked in-batch scores [B, M]."""
    if scores.ndim != 2 or in_batch_mask.shape != scores.shape:
        raise ValueError(f"scores and in_batch_mask must both be [B, M], got {tuple(scores.shape)} "
                         f"and {tuple(in_batch_mask.shape)}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    mask = in_batch_mask.to(scores.device, torch.bool)
    if not bool(mask[rows, positive_col].all()):
        raise ValueError("every query's positive must be unmasked")
    logits = (scores.float() / student_temperature).masked_fill(~mask, float("-inf"))
    return -torch.log_softmax(logits, dim=1)[rows, positive_col].mean()
