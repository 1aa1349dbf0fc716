"""Distillation losses as pure tensor functions (science.md §2), re-exported flat.

Every loss takes `student_scores [B, n]`, `teacher_scores [B, n]`, `positive_mask [B, n]` (bool,
≥ 1 positive per query; KL ignores it) and an optional `valid_mask [B, n]` (False = padding), and
reduces as the mean over queries of per-query sums (MarginMSE: of per-query pair means).
`compute_loss` picks one from a `LossConfig`. WKL's β reads the student's ranks from a table the training
loop keeps (`trainables/train/rank_table.py`: the table, its refresh schedule and the refresh itself).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from trainables.config import LossConfig
from trainables.losses.in_batch import in_batch_nll
from trainables.losses.kl import kl_loss
from trainables.losses.kl_nll import kl_nll_loss
from trainables.losses.margin_mse import margin_mse_loss
from trainables.losses.wkl import gamma2_values, ranks_from_scores, wkl_beta, wkl_log_weights, wkl_loss, wkl_terms

__all__ = [
    "LOSSES",
    "compute_loss",
    "gamma2_values",
    "in_batch_nll",
    "kl_loss",
    "kl_nll_loss",
    "margin_mse_loss",
    "ranks_from_scores",
    "wkl_beta",
    "wkl_log_weights",
    "wkl_loss",
    "wkl_terms",
]

LOSSES: dict[str, Callable[..., Tensor]] = {
    "kl": kl_loss,
    "margin_mse": margin_mse_loss,
    "kl_nll": kl_nll_loss,
    "wkl": wkl_loss,
}


def compute_loss(
    loss_cfg: LossConfig,
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor,
    *,
    beta: Tensor | None = None,
    step: int = 0,
    valid_mask: Tensor | None = None,
    in_batch: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """The loss `loss_cfg.name` with the config's parameters, plus λ_IB · `in_batch_nll` when asked.

    wkl: γ2 = γ1 − β with `beta` from `wkl_beta` (zeros when None, i.e. γ2 = γ1), floored at
    `loss_cfg.gamma2_floor` when set, and plain KL while `step < loss_cfg.kl_warmup_steps` (the
    paper's KL warm-up before WKL). margin_mse: student scores × `loss_cfg.margin_scale`.
    `in_batch`: (scores [B, M] of each query with every passage of the batch, positive column [B],
    mask [B, M]); required when `loss_cfg.in_batch_weight > 0`.
    """
    loss = _distillation_loss(loss_cfg, student_scores, teacher_scores, positive_mask, beta, step, valid_mask)
    if loss_cfg.in_batch_weight > 0:
        if in_batch is None:
            raise ValueError("loss.in_batch_weight > 0 needs the in-batch scores")
        loss = loss + loss_cfg.in_batch_weight * in_batch_nll(*in_batch, loss_cfg.student_temperature)
    return loss


def _distillation_loss(loss_cfg: LossConfig, student_scores: Tensor, teacher_scores: Tensor, positive_mask: Tensor,
                       beta: Tensor | None, step: int, valid_mask: Tensor | None) -> Tensor:
    temperatures = {
        "teacher_temperature": loss_cfg.teacher_temperature,
        "student_temperature": loss_cfg.student_temperature,
    }
    name = loss_cfg.name
    if name == "kl" or (name == "wkl" and step < loss_cfg.kl_warmup_steps):
        return kl_loss(student_scores, teacher_scores, positive_mask, valid_mask, **temperatures)
    if name == "margin_mse":
        return margin_mse_loss(student_scores, teacher_scores, positive_mask, valid_mask,
                               student_scale=loss_cfg.margin_scale)
    if name == "kl_nll":
        return kl_nll_loss(
            student_scores, teacher_scores, positive_mask, valid_mask, nll_weight=loss_cfg.nll_weight, **temperatures
        )
    if name == "wkl":
        gamma2 = gamma2_values(loss_cfg.gamma1, beta, loss_cfg.gamma2_floor)
        return wkl_loss(
            student_scores, teacher_scores, positive_mask, loss_cfg.gamma1, gamma2, valid_mask, **temperatures
        )
    raise ValueError(f"unknown loss {name!r}: expected one of {sorted(LOSSES)}")
