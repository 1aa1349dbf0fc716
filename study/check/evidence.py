"""What `kd-study check`'s derivations read besides a trial config: `Evidence`, and its `ScoreSample`.

Kept apart from the derivations so the evidence's gatherer (study.check.scores) and the derivations
share one definition; `evidence_for` fills it from a space's study block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from study.space.schema import SearchSpace


@dataclass(frozen=True)
class ScoreSample:
    """Teacher and initial-student scores of training queries' positives and pools ([Q, P], [Q, N], NaN padded)."""

    teacher_positive: np.ndarray
    teacher_pool: np.ndarray
    student_positive: np.ndarray
    student_pool: np.ndarray
    source: str

    def __post_init__(self) -> None:
        q = self.teacher_pool.shape[0]
        for name in ("teacher_positive", "student_positive", "student_pool"):
            if getattr(self, name).shape[0] != q:
                raise ValueError(f"ScoreSample.{name} has {getattr(self, name).shape[0]} rows, expected {q}")

    @property
    def n_queries(self) -> int:
        return self.teacher_pool.shape[0]


@dataclass(frozen=True)
class Evidence:
    """What the derivations read besides a trial config."""

    n_queries: int | None = None          # training queries a trial trains on
    n_queries_source: str = "unknown"
    samplers: tuple[str, ...] = ()        # the sampler names the space's trials use
    scores: ScoreSample | None = None
    scores_note: str = "no teacher scores"
    scheduler: str = "none"
    asha_grace_period: int | None = None
    seed: int = 0


def space_samplers(space: SearchSpace) -> tuple[str, ...]:
    """The sampler names the space's trials can use (searched choices, or the base's one)."""
    for param in space.params:
        if param.name == "sampler.name":
            return tuple(str(c) for c in param.spec.extremes())
    return (space.base.sampler.name,)


def evidence_for(space: SearchSpace, *, n_queries: int | None, n_queries_source: str,
                 scores: ScoreSample | None = None, scores_note: str = "no teacher scores") -> Evidence:
    study = space.study
    return Evidence(n_queries=n_queries, n_queries_source=n_queries_source, samplers=space_samplers(space),
                    scores=scores, scores_note=scores_note, scheduler=study.scheduler,
                    asha_grace_period=study.asha.grace_period or space.base.eval.every_steps, seed=study.seed)
