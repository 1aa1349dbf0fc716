"""The typed settings of each built-in loss and sampler: one pydantic model per name (the registry's `settings`).

A trial's `loss:` / `sampler:` block is one of these, picked by its `name` (trainables/registry.py builds the
discriminated union, plugins' models included), so a WKL field on a KL loss is an error at load. Every
model derives from `LossSettings` / `SamplerSettings`, which hold what every loss / sampler has. A
plugin's model derives from them too (and must not import trainables.config: the config imports it).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class _Strict(BaseModel):
    # allow_inf_nan=False: `alpha: .nan` is refused at load, as in every config block
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# WKL's exponents: weights are exp(γ · ln q), capped at e^MAX_LOG_WEIGHT (30). Past |γ| = 100 every weight
# with q outside (e^-0.3, 1) sits at the cap or at 0, so the value no longer changes the loss: a typo (1e12),
# not a setting. Refused at load rather than warned by `kd-study check`: `train` and `run` would still run it.
MAX_WKL_EXPONENT = 100.0


# ---- losses ---------------------------------------------------------------------------------------
class LossSettings(_Strict):
    """What every distillation loss has: its name, the two softmax temperatures and the in-batch term."""

    name: str
    teacher_temperature: float = Field(1.0, gt=0.0)
    student_temperature: float = Field(1.0, gt=0.0)
    in_batch_weight: float = Field(
        0.0, ge=0.0, description="λ_IB: add λ_IB · contrastive NLL of each positive against every passage of "
                                 "the batch (other queries' passages as negatives, student-scored); 0 = off")


class KLSettings(LossSettings):
    """KL(p_teacher ‖ q_student) over each query's list."""

    name: Literal["kl"] = "kl"


class KLNLLSettings(LossSettings):
    """KL + λ · NLL of the positive (the WKL paper's KL+NLL baseline)."""

    name: Literal["kl_nll"] = "kl_nll"
    nll_weight: float = Field(1.0, ge=0.0, description="λ of KL+NLL")


class MarginMSESettings(LossSettings):
    """MSE between teacher and student margins (positive − candidate).

    `student_scale: auto` is resolved by the TrialConfig holding this block (`student_score_scale`: it
    depends on the teacher's and the student's similarity) and kept beside the block in `_scale`, not
    written into it, so a dumped config still says `auto` and re-resolves against its own models.
    """

    name: Literal["margin_mse"] = "margin_mse"
    _scale: float | None = PrivateAttr(None)
    student_scale: float | Literal["auto"] = Field(
        "auto", description="student scores × scale before the margins (KL-family losses use "
                            "student_temperature); auto: see `student_score_scale`")

    @field_validator("student_scale")
    @classmethod
    def _positive_scale(cls, value: float | str) -> float | str:
        if value != "auto" and not value > 0:
            raise ValueError(f"expected 'auto' or a number > 0, got {value}")
        return value

    @property
    def margin_scale(self) -> float:
        """The student-score multiplier: a number as given, `auto` as the owning TrialConfig resolved it; a
        bare block's `auto` is 1 (raw scores)."""
        if self.student_scale != "auto":
            return float(self.student_scale)
        return 1.0 if self._scale is None else self._scale


class WKLSettings(LossSettings):
    """Weighted KL (Yang et al., SIGIR 2024): γ1 on positives, γ2 = γ1 − β from the student's ranks."""

    name: Literal["wkl"] = "wkl"
    gamma1: float = Field(0.0, ge=0.0, le=MAX_WKL_EXPONENT, description="focusing exponent for positives (γ1 ≥ 0)")
    alpha: float = Field(0.0, ge=0.0, le=MAX_WKL_EXPONENT, description="scale of β from student ranks")
    beta_refresh_steps: int = Field(200, ge=1, description="refresh student ranks for β every N batches")
    beta_pool_depth: int = Field(20, ge=1, description="candidates re-scored per query at a β refresh")
    kl_warmup_steps: int = Field(0, ge=0, description="plain KL steps before WKL (the paper's KL+WKL)")
    gamma2_floor: float | None = Field(
        None, description="γ2,i = max(γ1 − β_i, floor); the paper needs γ2,i > 0 (or all 0): α > γ1 "
                          "without a floor ≥ 0 breaks it (`kd-study check` says so)")


class LabelsSettings(LossSettings):
    """The no-distillation reference: contrastive NLL of the positive over its list and the batch, no teacher.

    The loss already holds the in-batch passages (the registry entry's `in_batch`), so an added in-batch
    term would count them twice: `in_batch_weight` stays 0. `teacher_temperature` is unused.
    """

    name: Literal["labels"] = "labels"

    @model_validator(mode="after")
    def _no_second_in_batch_term(self) -> "LabelsSettings":
        if self.in_batch_weight != 0:
            raise ValueError(f"in_batch_weight={self.in_batch_weight:g}: the labels loss is the in-batch NLL "
                             "already (the positive against its list and every passage of the batch); leave it 0")
        return self


# ---- samplers -------------------------------------------------------------------------------------
class SamplerSettings(_Strict):
    """What every sampler has: its name, K and what to do with a pool smaller than K."""

    name: str
    k: int = Field(8, ge=1)
    on_small_pool: Literal["error", "clip"] = Field(
        "error", description="K larger than a query's pool: fail, or use the whole pool for that query")


class TopKSettings(SamplerSettings):
    name: Literal["topk"] = "topk"


class RandomSettings(SamplerSettings):
    name: Literal["random"] = "random"


class StratifiedSettings(SamplerSettings):
    name: Literal["stratified"] = "stratified"


class EqualWidthSettings(SamplerSettings):
    name: Literal["equal_width"] = "equal_width"


class TeacherTopNSettings(SamplerSettings):
    """K drawn uniformly from the teacher's top N of the pool (the WKL paper's negatives, N = 20)."""

    name: Literal["teacher_top_n"] = "teacher_top_n"
    top_n: int = Field(20, ge=1, description="draw K uniformly from the teacher's top N of the pool")

    @model_validator(mode="after")
    def _k_fits_top_n(self) -> "TeacherTopNSettings":
        if self.k > self.top_n:
            raise ValueError(f"k={self.k} > top_n={self.top_n}: teacher_top_n draws K distinct candidates "
                             "from the teacher's top N")
        return self
