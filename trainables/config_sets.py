"""The data a trial trains and evaluates on: dataset references, the training data and its pools, the evaluation sets.

Part of the one trial schema (trainables/config.py re-exports every name here); kept apart because it is
the part a reader of the papers' protocols looks up (science.md §1-3) and the part the data room reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.config_io import NAME_PATTERN, NAME_RULE, check_name


class Strict(BaseModel):
    """The base of every trial-config block: unknown keys and non-finite numbers are errors at load."""


    # allow_inf_nan=False: `lr: .inf` or `alpha: .nan` is refused at load in every float field, not
    # discovered as a diverged trial minutes later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DatasetRef(Strict):
    """A data source id plus the split to read.

    Ids: `quickstart` | `quickstart-numpy` | `beir:<folder>` | `irds:<ir_datasets id>`.
    For `irds:` the split is part of the id and `split` is ignored.
    """

    id: str
    split: str = "test"
    name: str | None = Field(None, description="label in metric keys; derived from the id when absent")
    holdout: int | None = Field(
        None, ge=1, description="split the queries: N seeded queries with a positive are held out (for validation)")
    part: Literal["rest", "holdout"] = Field(
        "rest", description="with `holdout`: keep the other queries (train on them) or only the held-out ones")

    @field_validator("id")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not (value in ("quickstart", "quickstart-numpy") or value.startswith(("beir:", "irds:"))):
            raise ValueError(
                f"unknown dataset id {value!r}: expected 'quickstart', 'quickstart-numpy', "
                "'beir:<folder>' or 'irds:<ir_datasets id>'"
            )
        if value.startswith("beir:"):
            # Ray moves workers into their trial folder: a relative path must be fixed here, at the edge.
            value = "beir:" + os.path.abspath(os.path.expanduser(value[5:]))
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        """The label becomes part of metric keys and artifact paths: the one name rule (`check_name`), at load."""
        return None if value is None else check_name(value)

    @model_validator(mode="after")
    def _label_is_a_name(self) -> "DatasetRef":
        """A label derived from the id (a folder's name) meets the name rule too, or the set needs a `name`."""
        if self.name is None and not NAME_PATTERN.match(self.label):
            raise ValueError(f"the label {self.label!r} derived from id {self.id!r} is not a name ({NAME_RULE}): "
                             "give the set a `name`")
        return self

    @property
    def label(self) -> str:
        """Short name used in metric keys, e.g. `scifact` for `beir:../shared/data/scifact`."""
        if self.name:
            return self.name
        if self.id.startswith("irds:"):
            parts = self.id[5:].strip("/").split("/")
            return parts[1] if parts[0] == "beir" and len(parts) > 1 else parts[0].replace("-", "_")
        if self.id.startswith("beir:"):
            return Path(self.id[5:]).name or self.id[5:]
        return self.id.replace("-", "_")


def _coerce_dataset(value: Any, default_split: str) -> Any:
    if isinstance(value, str):
        return {"id": value, "split": default_split}
    return value


class DataConfig(Strict):
    """Training data and the candidate pools (science.md §1-2: how the papers build them).

    `pool_source` says who ranks a query's pool: `student` (dense retrieval with the initial student
    over the corpus), `file` (`candidates_file` as given), or `teacher` (the teacher's top
    `pool_depth` of the first `first_stage_depth` candidates of the file, or of the student's
    retrieval without one: the WKL paper's "top 100 re-ranked by the teacher, top 20 kept").
    `random_additions` R appends R seeded random corpus passages to every pool (the
    score-distribution paper's pools). Without `pool_source` (null), a `candidates_file` means
    `file`, else `student` (`effective_pool_source`).
    """

    train: DatasetRef = DatasetRef(id="quickstart", split="train")
    pool_depth: int = Field(100, ge=1, description="N: candidates kept per query (positives excluded)")
    pool_source: Literal["student", "teacher", "file"] | None = Field(
        None, description="who ranks the pool: the initial student, the candidates file, or the teacher "
                          "(default: file with a candidates_file, else student)")
    first_stage_depth: int = Field(
        100, ge=1, description="pool_source teacher: first-stage candidates the teacher re-ranks (≥ pool_depth)")
    random_additions: int = Field(0, ge=0, description="R seeded random corpus passages added to each pool")
    candidates_file: str | None = Field(
        None, description="TREC run or hard-negative JSONL (sentence-transformers' msmarco-hard-negatives layout)")
    candidates_systems: list[str] | None = Field(
        None, description="hard-negative JSONL: the `neg` systems to read (default all), interleaved by rank")
    max_positives: int = Field(
        1, ge=1, description="positives per query in the KD list (all of them up to this; more: a seeded subset)")
    max_train_queries: int | None = Field(None, ge=1, description="seeded subset of training queries")

    @field_validator("train", mode="before")
    @classmethod
    def _train_ref(cls, value: Any) -> Any:
        return _coerce_dataset(value, "train")

    @property
    def effective_pool_source(self) -> Literal["student", "teacher", "file"]:
        """`pool_source`, or its default: a candidates file alone means its pools (`file`), else `student`."""
        return self.pool_source or ("file" if self.candidates_file else "student")

    @model_validator(mode="after")
    def _pool_source_inputs(self) -> "DataConfig":
        if self.pool_source == "file" and not self.candidates_file:
            raise ValueError("pool_source 'file' needs data.candidates_file")
        if self.pool_source == "student" and self.candidates_file:
            raise ValueError("pool_source 'student' retrieves its pools: drop data.candidates_file "
                             "or set pool_source: file (or teacher, to re-rank the file's candidates)")
        if self.pool_source == "teacher" and self.first_stage_depth < self.pool_depth:
            raise ValueError(f"first_stage_depth={self.first_stage_depth} < pool_depth={self.pool_depth}: "
                             "the teacher keeps its top pool_depth of the first-stage candidates")
        if self.candidates_systems is not None and not self.candidates_systems:
            raise ValueError("candidates_systems: name at least one system, or leave it out for all")
        return self

    @property
    def max_pool_size(self) -> int:
        """The most candidates one query's pool can hold: pool_depth + random_additions."""
        return self.pool_depth + self.random_additions


class EvalConfig(Strict):
    """Evaluation sets; `dev` gives RR@10, `beir` nDCG@10 each + average, `dl` nDCG@10."""

    dev: DatasetRef | None = DatasetRef(id="quickstart", split="test")
    beir: list[DatasetRef] = Field(default_factory=lambda: [DatasetRef(id="quickstart-numpy", split="test")])
    dl: list[DatasetRef] = Field(default_factory=list)
    top_k: int = Field(1000, ge=10)
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    subset_distractors: int | None = Field(
        None, ge=0, description="evaluate on judged docs + N seeded random distractors (metric names say so)"
    )
    batch_size: int = Field(128, ge=1)
    block_size: int = Field(16384, ge=1, description="passages a rank encodes and searches at a time: the corpus "
                                                     "streams through a running top-k, never held whole")
    every_steps: int | None = Field(None, ge=1, description="intermediate evaluation of every set, for pruning")
    intermediate: Literal["full", "subset"] = Field(
        "full", description="what the intermediate points (learning curve, every_steps) search: full = the final "
                            "evaluation's corpus; subset = judged docs + intermediate_distractors (keys say _subset<N>)")
    intermediate_distractors: int = Field(10000, ge=0, description="distractors of an `intermediate: subset` point")
    at_fractions: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        description="learning curve: evaluate the dev (selection) set only at these fractions of the step "
                    "budget (1.0 is the final evaluation); [] for none")

    @field_validator("dev", mode="before")
    @classmethod
    def _dev_ref(cls, value: Any) -> Any:
        return _coerce_dataset(value, "test")

    @field_validator("beir", "dl", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return [_coerce_dataset(v, "test") for v in value] if isinstance(value, list) else value

    @field_validator("at_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < f <= 1.0 for f in value):
            raise ValueError(f"expected fractions of the step budget in (0, 1], got {value}")
        return sorted(set(value))

    def curve_steps(self, steps: int) -> list[int]:
        """The steps (of `steps` in all) at which the learning curve evaluates: `at_fractions` rounded, ≥ 1."""
        if self.dev is None:
            return []
        return sorted({min(steps, max(1, round(f * steps))) for f in self.at_fractions})

    def at_intermediate(self, dev_only: bool = False) -> "EvalConfig":
        """The evaluation an intermediate point runs: this one, or its `intermediate_distractors` subset;
        `dev_only` (a learning-curve point): the dev set alone.

        The final evaluation (and `kd-study confirm`) always runs `self`; a cheap subset at the curve's
        points keeps large corpora affordable during training, and its metric keys say so.
        """
        update: dict[str, Any] = {"beir": [], "dl": []} if dev_only else {}
        if self.intermediate == "subset":
            update.update(subset_distractors=self.intermediate_distractors, intermediate="full")
        return self.model_copy(update=update) if update else self

    @property
    def metric_suffix(self) -> str:
        """`_subset<N>` in subset mode, so a sub-corpus number is never mistaken for a full one."""
        return "" if self.subset_distractors is None else f"_subset{self.subset_distractors}"
