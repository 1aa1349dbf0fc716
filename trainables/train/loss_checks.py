"""`kd-study check` rows of the built-in losses (registry `LossEntry.check`): WKL's and MarginMSE's dimensions.

Each row is a `CheckRow(dimension, reads, derive)`; `derive(cfg, evidence)` runs for the trials of its own
loss only (study.check.dimensions asks the registry) and returns a `Derived` (None: nothing to say).
`evidence` is study.check's Evidence (n_queries, scores: a ScoreSample of teacher and initial-student
scores over training pools, seed); `loss_lists` draws a trial's first-epoch loss lists from it with the
trial's own sampler settings (teacher_top_n's N included) and `trial_steps` counts its steps, for the
study's rows too.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from trainables.config import TrialConfig
from trainables.registry import CheckRow, Derived, sampler_function
from trainables.samplers import sample_candidates
from trainables.train.epoch_plan import total_steps

# WKL weights whose max/min ratio over a list is below this barely re-weight KL.
FLAT_WEIGHT_RATIO = 1.05
# Without teacher scores, a cross-encoder's margins are taken from its usual logit range (about
# −10 … +10, margins of several units); measured margins replace this whenever scores exist.
CROSS_ENCODER_MARGIN_PRIOR = 5.0
NO_SCORES = "n/a (no scores)"
Evidence = Any


def derive_warmup(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """WKL's KL warm-up share of the steps: at ≥ 100 % the trial never runs WKL (it is plain KL)."""
    if cfg.loss.name != "wkl":
        return None
    steps = trial_steps(cfg, ev)
    warmup = cfg.loss.kl_warmup_steps
    if warmup == 0 and cfg.init.start == "warmup":   # the WKL paper's protocol: the warm-up is a shared student
        shared = cfg.init.warmup
        return Derived(0.0, f"refines a shared {shared.loss.name} warm-up student ({shared.steps:,} steps, init.warmup)")
    if steps is None or warmup == 0:
        return Derived(0.0 if warmup == 0 else None, "no KL warm-up" if warmup == 0 else f"{warmup:,} steps")
    share = warmup / steps
    text = f"KL {warmup:,} of {steps:,} steps ({share:.0%}); LR warm-up {cfg.optim.warmup_ratio:.0%}"
    if warmup >= steps:
        return Derived(share, text, "error", f"loss.kl_warmup_steps={warmup:,} ≥ the {steps:,} steps: WKL never "
                                             "runs, the trial is plain KL (γ1 and α cannot change it)")
    return Derived(share, text)


def derive_beta_refreshes(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """β refreshes from the student's ranks (trainables.losses.is_refresh_step) over the trial's steps."""
    from trainables.train.rank_table import is_refresh_step, uses_beta

    if not uses_beta(cfg.loss):
        return None
    steps = trial_steps(cfg, ev)
    if steps is None:
        return Derived(None, "unknown")
    count = _refreshes(cfg, steps, is_refresh_step)
    text = f"{count:,} (every {cfg.loss.beta_refresh_steps:,} of {steps:,} steps)"
    if count == 0:
        return Derived(0, text, "error", f"loss.beta_refresh_steps={cfg.loss.beta_refresh_steps:,} with "
                                         f"{steps:,} steps (KL warm-up {cfg.loss.kl_warmup_steps:,}): β is never "
                                         "refreshed and stays at the initial student's ranks all run")
    return Derived(count, text)


def derive_gamma2(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """γ2,i = γ1 − β_i over |β| < α: its lowest value γ1 − α (or the floor); the paper needs γ2 > 0 or all 0."""
    if cfg.loss.name != "wkl":
        return None
    gamma1, alpha, floor = cfg.loss.gamma1, cfg.loss.alpha, cfg.loss.gamma2_floor
    if alpha == 0:
        return Derived(gamma1, f"γ2 = γ1 = {gamma1:g}")
    low = gamma1 - alpha if floor is None else max(gamma1 - alpha, floor)
    text = f"γ2 ∈ ({low:g}, {gamma1 + alpha:g})" + (f", floor {floor:g}" if floor is not None else "")
    if low < 0:
        return Derived(low, text, "error", f"γ2 = γ1 − β reaches γ1 − α = {gamma1 - alpha:g} < 0: the paper needs "
                                           "γ2 > 0 for every negative (or all 0); keep α ≤ γ1 or set "
                                           "loss.gamma2_floor: 0")
    return Derived(low, text)


def derive_wkl_weights(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Median over queries of max/min WKL weight in the loss list (initial student's q, ranks and β)."""
    if cfg.loss.name != "wkl" or (cfg.loss.gamma1 == 0 and cfg.loss.alpha == 0):
        return None
    lists = loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    ratio = wkl_weight_ratio(lists[1], lists[2], cfg)
    text = f"max/min weight {number(ratio)} (median over {len(lists[1])} queries)"
    if ratio < FLAT_WEIGHT_RATIO:
        return Derived(ratio, text, "warning", f"WKL's weights are near equal (max/min {ratio:.3f}): the trial is "
                                               "KL times a constant; γ1 and α change nothing")
    return Derived(ratio, text)


def derive_margins(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Teacher |margin| (positive − negative, 95th percentile) against the largest margin the student can score."""
    if cfg.loss.name != "margin_mse":
        return None
    scale = cfg.loss.margin_scale
    reach = 2.0 * scale if cfg.student.similarity == "cosine" else math.inf
    lists = loss_lists(cfg, ev)
    if lists is not None:
        teacher_margin = _margin_p95(lists[0])
        student_margin = _margin_p95(lists[1]) * scale
        seen = f"teacher p95 {teacher_margin:.3g}, initial student p95 {student_margin:.3g}"
    elif cfg.teacher.kind == "cross_encoder" or cfg.teacher.similarity == "dot":
        teacher_margin, seen = CROSS_ENCODER_MARGIN_PRIOR, f"teacher ~{CROSS_ENCODER_MARGIN_PRIOR:g} (logit prior)"
    else:
        teacher_margin, seen = 2.0, "teacher ≤ 2 (cosine)"
    text = f"{seen}; student reaches ≤ {number(reach)} (×{scale:g})"
    if teacher_margin > reach:
        return Derived(teacher_margin / reach, text, "error",
                       f"the teacher's margins ({teacher_margin:.3g}) exceed the most a {cfg.student.similarity} "
                       f"student scaled ×{scale:g} can score ({reach:g}): MarginMSE cannot be matched; raise "
                       "loss.student_scale")
    return Derived(teacher_margin / reach, text)


def wkl_weight_ratio(student_lists: np.ndarray, ranks: np.ndarray, cfg: TrialConfig) -> float:
    """Median over queries of max/min WKL weight over the list (column 0 the positive), from WKL's own code."""
    import torch

    from trainables.losses import gamma2_values, wkl_beta, wkl_log_weights

    s = torch.from_numpy(student_lists.astype(np.float64))
    positives = torch.zeros(s.shape, dtype=torch.bool)
    positives[:, 0] = True
    log_q = torch.log_softmax(s / cfg.loss.student_temperature, dim=1)
    beta = wkl_beta(torch.from_numpy(ranks.astype(np.float64)), positives, cfg.loss.alpha)
    gamma2 = gamma2_values(cfg.loss.gamma1, beta, cfg.loss.gamma2_floor)
    log_w = wkl_log_weights(log_q, positives, cfg.loss.gamma1, gamma2)
    spread = (log_w.max(dim=1).values - log_w.min(dim=1).values).numpy()
    return float(np.exp(np.median(spread)))


def loss_lists(cfg: TrialConfig, ev: Evidence) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per query: [positive, K sampled candidates] of teacher scores, initial student scores, and the
    student's ranks of them among positive + pool (what β reads), drawn as a trial's first epoch would."""
    if ev.scores is None:
        return None
    sc = ev.scores
    rows = np.flatnonzero(~np.isnan(sc.teacher_positive[:, 0]) & (~np.isnan(sc.teacher_pool)).any(axis=1))
    if rows.size == 0:
        return None
    rng = np.random.default_rng([cfg.seed, 0, 0])
    picked = sample_candidates(sampler_function(cfg.sampler), sc.teacher_pool[rows], cfg.sampler.k, rng, "clip")
    width = min(len(p) for p in picked)
    cols = np.stack([p[:width] for p in picked])
    teacher = np.concatenate([sc.teacher_positive[rows, :1], np.take_along_axis(sc.teacher_pool[rows], cols, 1)], 1)
    student = np.concatenate([sc.student_positive[rows, :1], np.take_along_axis(sc.student_pool[rows], cols, 1)], 1)
    table = np.concatenate([sc.student_positive[rows, :1], sc.student_pool[rows]], 1)
    table = np.where(np.isnan(table), -np.inf, table)
    # rank among positive + pool, 1 = best (the rank table's initial ranks)
    ranks = (table[:, None, :] > student[:, :, None]).sum(axis=2) + 1
    return teacher, student, ranks.astype(np.float64)


def _margin_p95(lists: np.ndarray) -> float:
    return float(np.percentile(np.abs(lists[:, :1] - lists[:, 1:]), 95))


def trial_steps(cfg: TrialConfig, ev: Evidence) -> int | None:
    if cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    return None if ev.n_queries is None else total_steps(cfg, ev.n_queries)


def _refreshes(cfg: TrialConfig, steps: int, is_refresh_step: Callable[[Any, int], bool]) -> int:
    """Refreshes before steps 1..steps (`completed` = 0 … steps − 1), by the loop's own rule."""
    return sum(1 for completed in range(steps) if is_refresh_step(cfg.loss, completed))


def number(value: float) -> str:
    if value == math.inf:
        return "∞"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


def entropy_share(scores: np.ndarray, temperature: float) -> float:
    """Mean entropy of softmax(scores / τ) per row, as a share of ln(row length)."""
    z = scores / temperature
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    entropy = -(np.exp(log_p) * log_p).sum(axis=1)
    return float(np.mean(entropy / np.log(scores.shape[1]))) if scores.shape[1] > 1 else 0.0


STEPS = ("optim.batch_size", "optim.epochs", "optim.max_steps")
LIST = ("sampler", "seed")          # the loss list: the sampler's K picks (+ the positive), seeded
WKL_ROWS = (
    CheckRow("warm-up (KL → WKL)", (*STEPS, "optim.warmup_ratio", "loss.name", "loss.kl_warmup_steps", "init"),
             derive_warmup),
    CheckRow("β refreshes", (*STEPS, "loss.name", "loss.alpha", "loss.beta_refresh_steps", "loss.kl_warmup_steps"),
             derive_beta_refreshes),
    CheckRow("γ2 range", ("loss.name", "loss.gamma1", "loss.alpha", "loss.gamma2_floor"), derive_gamma2),
    CheckRow("WKL weight spread", ("loss.name", "loss.gamma1", "loss.alpha", "loss.gamma2_floor",
                                   "loss.student_temperature", *LIST), derive_wkl_weights),
)
MARGIN_ROWS = (CheckRow("MarginMSE margins", ("loss.name", "loss.student_scale", *LIST), derive_margins),)
