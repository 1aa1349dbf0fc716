"""What a space file may say: its top-level keys and the `study:` settings (objectives, ASHA, contrasts, controls).

The pydantic half of a search space, validated at load; `study.space.schema` turns a validated file into
a `SearchSpace` and `study.space.checks` holds the rules that need more than one field.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from trainables.config import check_name

from study.space.params import ParamSpec, Scalar, Strict

ALGORITHMS = ("tpe", "grid", "random")


class Objective(Strict):
    metric: str
    mode: Literal["max", "min"] = "max"


class AshaSettings(Strict):
    """ASHA on the intermediate evaluations (`eval.every_steps`), time measured in training steps."""

    grace_period: int | None = Field(None, ge=1, description="steps before a trial can be stopped; default eval.every_steps")
    reduction_factor: float = Field(2.0, gt=1.0)
    max_t: int | None = Field(None, ge=1, description="default: the base config's total training steps")


class ContrastSpec(Strict):
    """A comparison declared before the study runs: each point matching `of` vs the `vs` point at the same `within`.

    `of` defaults to every point that does not match `vs`; contrasts sharing a `family` (default:
    all of the study's non-control contrasts; a control is a family of its own) are corrected
    together. `margin` (metric units) adds an equivalence test (TOST) beside the difference test.
    `control` makes it a control of the study: `positive` (a known effect that must come out
    significant, in the `expect` direction when given) or `aa` (one configuration against itself with
    disjoint seeds: `of` and `vs` differ only in `seed`, and must not come out significant). Pairing
    rules: study/space/contrasts.py; what the report does with margins and controls: study/report/contrasts.py.
    """

    name: str | None = Field(None, min_length=1)
    of: dict[str, Scalar] = Field(default_factory=dict)
    vs: dict[str, Scalar] = Field(min_length=1)
    within: list[str] = Field(default_factory=list)
    family: str | None = Field(None, min_length=1)
    margin: float | None = Field(None, gt=0, allow_inf_nan=False,
                                 description="equivalence margin in metric units: TOST claims |difference| < margin")
    control: Literal["positive", "aa"] | None = Field(None, description="positive or A/A control of the study")
    expect: Literal["better", "worse"] | None = Field(None, description="a positive control's known direction")


class StudySettings(Strict):
    """The `study:` section. Frozen: the defaults that depend on the rest of the space (metric,
    num_samples) are settled into new settings by study.space.checks.settle_study."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    algorithm: Literal["tpe", "grid", "random"] = "tpe"
    num_samples: int | None = Field(None, ge=1, description="trials; grid mode: the grid size")
    max_concurrent_trials: int = Field(1, ge=1)
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    objectives: list[Objective] | None = Field(None, min_length=2, description="multi-objective (Pareto) search")
    scheduler: Literal["asha", "none"] = "none"
    asha: AshaSettings = AshaSettings()
    seed: int = 0
    points_to_evaluate: list[dict[str, Scalar]] = Field(default_factory=list)
    grid: dict[str, list[Scalar]] | None = Field(None, description="shorthand: field → values, as categorical search params")
    replicates: int = Field(1, ge=1, description="seeds per configuration point (base seed + 0..N-1)")
    baseline: dict[str, Scalar] | None = Field(None, description="searched field → value: the reference cell")
    contrasts: list[ContrastSpec] = Field(default_factory=list, description="declared comparisons (study/space/contrasts.py)")
    storage: str | None = Field(None, min_length=1, description="shared storage root of a cluster (study.storage): "
                                "the study folder, checkpoints and asset cache; --storage overrides it")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if value in ALGORITHMS:
            raise ValueError(f"expected 'max' or 'min' (the search algorithm goes in study.algorithm: {value})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StudySettings":
        if self.objectives is not None and self.metric is not None:
            raise ValueError("give either `metric` (+ `mode`) or `objectives`, not both")
        if self.grid is not None and self.algorithm != "grid":
            raise ValueError(f"`grid` needs algorithm: grid (got {self.algorithm})")
        if self.objectives is not None and self.scheduler == "asha":
            raise ValueError("scheduler asha needs one metric; multi-objective studies run with scheduler: none")
        if self.replicates > 1 and self.scheduler == "asha":
            raise ValueError("scheduler asha stops seeds one by one; a study with replicates > 1 runs with scheduler: none")
        return self

    @property
    def metrics(self) -> list[str]:
        if self.objectives:
            return [o.metric for o in self.objectives]
        return [self.metric]

    @property
    def modes(self) -> list[str]:
        if self.objectives:
            return [o.mode for o in self.objectives]
        return [self.mode]


class SpaceFile(Strict):
    base: str | dict[str, Any] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, ParamSpec] = Field(default_factory=dict)
    study: StudySettings
