"""Distillation losses as pure tensor functions (science.md §2), re-exported flat.

Every loss takes `student_scores [B, n]`, `teacher_scores [B, n]`, `positive_mask [B, n]` (bool,
≥ 1 positive per query; KL ignores it) and an optional `valid_mask [B, n]` (False = padding), and
reduces as the mean over queries of per-query sums (MarginMSE: of per-query pair means). `labels_nll`,
the no-distillation reference, takes no teacher scores.
No config here: the registry (trainables/registry.py) names each loss and its settings, and the training
step's dispatch (trainables/train/dispatch.py) binds a trial's settings to these functions. WKL's β reads the
student's ranks from a table the training loop keeps (trainables/train/rank_table.py).
"""
from __future__ import annotations

from trainables.losses.in_batch import in_batch_nll
from trainables.losses.kl import kl_loss
from trainables.losses.kl_nll import kl_nll_loss
from trainables.losses.labels import labels_nll
from trainables.losses.margin_mse import margin_mse_loss
from trainables.losses.wkl import gamma2_values, ranks_from_scores, wkl_beta, wkl_log_weights, wkl_loss, wkl_terms

__all__ = [
    "gamma2_values",
    "in_batch_nll",
    "kl_loss",
    "kl_nll_loss",
    "labels_nll",
    "margin_mse_loss",
    "ranks_from_scores",
    "wkl_beta",
    "wkl_log_weights",
    "wkl_loss",
    "wkl_terms",
]
