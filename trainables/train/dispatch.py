"""The training step's loss: a trial's `loss:` block → the registry's function of tensors, plus the in-batch term.

The built-in losses' registry functions are here: each binds its settings (trainables/settings.py) to a
pure tensor function of trainables/losses. A plugin's entry brings its own function with the same signature:

    function(settings, student_scores, teacher_scores, positive_mask, valid_mask, *, step, state) -> Tensor

`step`: completed steps (WKL's KL warm-up); `state`: the entries of the loss's per-step state table
(`LossEntry.state`, e.g. WKL's student ranks [b, n]) for the step's candidates, None without one. An entry
with `in_batch` also gets `in_batch=` (the step's in-batch scores, or None).
"""
from __future__ import annotations

from torch import Tensor

from trainables.losses import (gamma2_values, in_batch_nll, kl_loss, kl_nll_loss, labels_nll, margin_mse_loss, wkl_beta,
                               wkl_loss)
from trainables.registry import loss_entry
from trainables.settings import KLNLLSettings, LossSettings, MarginMSESettings, WKLSettings


def compute_loss(
    loss_cfg: LossSettings,
    student_scores: Tensor,
    teacher_scores: Tensor,
    positive_mask: Tensor,
    *,
    state: Tensor | None = None,
    step: int = 0,
    valid_mask: Tensor | None = None,
    in_batch: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """The registry's loss `loss_cfg.name` with the block's parameters, plus λ_IB · `in_batch_nll` when asked.

    `in_batch`: (scores [B, M] of each query with every passage of the batch, positive column [B], mask
    [B, M]); required when `loss_cfg.in_batch_weight > 0`.
    """
    entry = loss_entry(loss_cfg.name)
    own = {"in_batch": in_batch} if entry.in_batch else {}
    loss = entry.compute()(loss_cfg, student_scores, teacher_scores, positive_mask, valid_mask, step=step, state=state,
                           **own)
    if loss_cfg.in_batch_weight > 0:
        if in_batch is None:
            raise ValueError("loss.in_batch_weight > 0 needs the in-batch scores")
        loss = loss + loss_cfg.in_batch_weight * in_batch_nll(*in_batch, loss_cfg.student_temperature)
    return loss


def wants_in_batch(loss_cfg: LossSettings) -> bool:
    """Whether the step must score every passage of the batch for this loss (λ_IB > 0, or a loss that reads them)."""
    return loss_cfg.in_batch_weight > 0 or loss_entry(loss_cfg.name).in_batch


def _temperatures(cfg: LossSettings) -> dict[str, float]:
    return {"teacher_temperature": cfg.teacher_temperature, "student_temperature": cfg.student_temperature}


def kl(cfg: LossSettings, student: Tensor, teacher: Tensor, positives: Tensor, valid: Tensor | None, *,
       step: int = 0, state: Tensor | None = None) -> Tensor:
    return kl_loss(student, teacher, positives, valid, **_temperatures(cfg))


def margin_mse(cfg: MarginMSESettings, student: Tensor, teacher: Tensor, positives: Tensor, valid: Tensor | None, *,
               step: int = 0, state: Tensor | None = None) -> Tensor:
    """MarginMSE with student scores × `cfg.margin_scale` (the trial's resolved `student_scale`)."""
    return margin_mse_loss(student, teacher, positives, valid, student_scale=cfg.margin_scale)


def kl_nll(cfg: KLNLLSettings, student: Tensor, teacher: Tensor, positives: Tensor, valid: Tensor | None, *,
           step: int = 0, state: Tensor | None = None) -> Tensor:
    return kl_nll_loss(student, teacher, positives, valid, nll_weight=cfg.nll_weight, **_temperatures(cfg))


def wkl(cfg: WKLSettings, student: Tensor, teacher: Tensor, positives: Tensor, valid: Tensor | None, *,
        step: int = 0, state: Tensor | None = None) -> Tensor:
    """Plain KL while `step < kl_warmup_steps` (the paper's KL warm-up), then WKL with γ2 = γ1 − β, β from the
    student ranks `state` (`wkl_beta`; none: γ2 = γ1), floored at `gamma2_floor` when set."""
    if step < cfg.kl_warmup_steps:
        return kl(cfg, student, teacher, positives, valid)
    beta = None if state is None else wkl_beta(state.to(student.device), positives, cfg.alpha, valid)
    gamma2 = gamma2_values(cfg.gamma1, beta, cfg.gamma2_floor)
    return wkl_loss(student, teacher, positives, cfg.gamma1, gamma2, valid, **_temperatures(cfg))


def labels(cfg: LossSettings, student: Tensor, teacher: Tensor, positives: Tensor, valid: Tensor | None, *,
           step: int = 0, state: Tensor | None = None,
           in_batch: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """The no-distillation reference: `in_batch_nll` over the step's passages when it has them, else `labels_nll`
    over each query's list (the same formula on a one-query batch). `teacher` is never read."""
    if in_batch is not None:
        return in_batch_nll(*in_batch, cfg.student_temperature)
    return labels_nll(student, positives, valid, cfg.student_temperature)
