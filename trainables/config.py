"""The single typed schema of one trial (one distillation run), validated at the edge.

A search space is "a base TrialConfig + searched fields"; the exported best config is a
TrialConfig, so `kd-study train best.yaml` re-runs exactly what a trial ran.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trainables.errors import BadInput


class ConfigError(BadInput):
    """A config file or dict that does not validate; the message names the file and the key."""


# The one rule for every name that becomes a folder: study, trial and run names (`name`, the CLI's NAME
# arguments, `--name`). One path component: no '/', no leading '.' (so never '..'), nothing a shell quotes.
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]*\Z")   # \Z: `$` would let a trailing newline in
NAME_RULE = "expected letters, digits, '.', '_' or '-', starting with a letter or digit (a folder name)"


def check_name(value: Any, what: str | None = None) -> str:
    """`value` if it is a valid study/trial/run name, else a ConfigError naming it as `what` ("study name", "--name").

    Without `what` (inside a pydantic validator, whose error names the key) the message is the rule alone.
    """
    if isinstance(value, str) and NAME_PATTERN.match(value):
        return value
    raise ConfigError(f"{what} {value!r}: {NAME_RULE}" if what else f"{NAME_RULE}, got {value!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetRef(_Strict):
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


class DataConfig(_Strict):
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


class ModelConfig(_Strict):
    """An encoder: `packaged:all-MiniLM-L6-v2`, `packaged:all-mpnet-base-v2`, `tiny:bert`, a local path or a hub id."""

    model: str = "packaged:all-MiniLM-L6-v2"
    num_layers: int | None = Field(None, ge=1, description="keep only the first N transformer layers")
    pooling: Literal["mean", "cls"] = "mean"
    similarity: Literal["dot", "cosine"] = "cosine"
    query_max_length: int = Field(32, ge=4)
    passage_max_length: int = Field(128, ge=8)


PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")


def is_pickle_path(path: str | Path) -> bool:
    """A teacher-scores file in the pickle layout (by its name: .pkl / .pickle, gzipped or not)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


class TeacherConfig(ModelConfig):
    """The teacher: a bi-encoder (offline default), a cross-encoder scoring (query, passage) pairs, or a scores file.

    `scores_file` replaces the model: every (query, passage) score is read from the file and no
    teacher runs (trainables/data/teacher_scores.py: `{qid: {pid: score}}` pickle, TSV or JSONL).
    """

    kind: Literal["bi_encoder", "cross_encoder"] = "bi_encoder"
    batch_size: int = Field(64, ge=1)
    passage_max_length: int = Field(256, ge=8)
    scores_file: str | None = Field(
        None, description="published teacher scores: {qid: {pid: score}} pickle (.pkl[.gz]), or qid pid score "
                          "lines (.tsv/.txt/.jsonl, gzipped or not)")
    allow_pickle: bool = Field(
        False, description="read a pickle scores_file: unpickling runs code from the file, so only a trusted one")

    @model_validator(mode="after")
    def _pickle_is_opt_in(self) -> "TeacherConfig":
        if self.scores_file and is_pickle_path(self.scores_file) and not self.allow_pickle:
            raise ValueError(
                f"scores_file {self.scores_file} is a pickle, and unpickling runs any code the file holds: "
                "set teacher.allow_pickle: true if you trust its source, or convert it to TSV/JSONL (qid pid score)")
        return self


class StudentConfig(ModelConfig):
    """The student bi-encoder (shared weights for query and passage)."""

    num_layers: int | None = Field(2, ge=1)


class SamplerConfig(_Strict):
    """How K candidates are picked from each query's pool (score-distribution paper; WKL paper's `teacher_top_n`)."""

    name: Literal["topk", "random", "stratified", "teacher_top_n"] = "stratified"
    k: int = Field(8, ge=1)
    top_n: int = Field(20, ge=1, description="teacher_top_n: draw K uniformly from the teacher's top N of the pool")
    on_small_pool: Literal["error", "clip"] = Field(
        "error", description="K larger than a query's pool: fail, or use the whole pool for that query"
    )

    @model_validator(mode="after")
    def _k_fits_top_n(self) -> "SamplerConfig":
        if self.name == "teacher_top_n" and self.k > self.top_n:
            raise ValueError(f"k={self.k} > top_n={self.top_n}: teacher_top_n draws K distinct candidates "
                             "from the teacher's top N")
        return self


class LossConfig(_Strict):
    """The distillation loss and its parameters (WKL paper)."""

    name: Literal["kl", "margin_mse", "kl_nll", "wkl"] = "kl"
    _scale: float | None = PrivateAttr(None)   # `student_scale` resolved by the TrialConfig holding this block
    gamma1: float = Field(0.0, ge=0.0, description="WKL focusing exponent for positives (γ1 ≥ 0)")
    alpha: float = Field(0.0, ge=0.0, description="WKL scale of β from student ranks")
    nll_weight: float = Field(1.0, ge=0.0, description="λ of KL+NLL")
    teacher_temperature: float = Field(1.0, gt=0.0)
    student_temperature: float = Field(1.0, gt=0.0)
    beta_refresh_steps: int = Field(200, ge=1, description="refresh student ranks for β every N batches")
    beta_pool_depth: int = Field(20, ge=1, description="candidates re-scored per query at a β refresh")
    kl_warmup_steps: int = Field(0, ge=0, description="plain KL steps before WKL (the paper's KL+WKL)")
    gamma2_floor: float | None = Field(
        None, description="WKL: γ2,i = max(γ1 − β_i, floor); the paper needs γ2,i > 0 (or all 0): α > γ1 "
                          "without a floor ≥ 0 breaks it (`kd-study check` says so)")
    student_scale: float | Literal["auto"] = Field(
        "auto", description="MarginMSE: student scores × scale before the margins (KL-family losses use "
                            "student_temperature); auto: see `student_score_scale`")
    in_batch_weight: float = Field(
        0.0, ge=0.0, description="λ_IB: add λ_IB · contrastive NLL of each positive against every passage of "
                                 "the batch (other queries' passages as negatives, student-scored); 0 = off")

    @field_validator("student_scale")
    @classmethod
    def _positive_scale(cls, value: float | str) -> float | str:
        if value != "auto" and not value > 0:
            raise ValueError(f"expected 'auto' or a number > 0, got {value}")
        return value

    @property
    def margin_scale(self) -> float:
        """The student-score multiplier of MarginMSE: a number as given, `auto` as the owning TrialConfig
        resolved it (`student_score_scale`); a bare block's `auto` is 1 (raw scores)."""
        if self.student_scale != "auto":
            return float(self.student_scale)
        return 1.0 if self._scale is None else self._scale


class OptimConfig(_Strict):
    lr: float = Field(3e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    batch_size: int = Field(16, ge=1, description="queries per step, over all workers")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (overrides epochs)")
    max_grad_norm: float = Field(1.0, gt=0.0)
    log_every_steps: int = Field(10, ge=1)
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also checkpoint every N steps (always at each epoch end)"
    )


class EvalConfig(_Strict):
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
    every_steps: int | None = Field(None, ge=1, description="intermediate evaluation of every set, for pruning")
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

    @property
    def metric_suffix(self) -> str:
        """`_subset<N>` in subset mode, so a sub-corpus number is never mistaken for a full one."""
        return "" if self.subset_distractors is None else f"_subset{self.subset_distractors}"


class WarmupConfig(_Strict):
    """The shared warm-up a refinement starts from (WKL paper: KL first, then WKL at a small lr)."""

    loss: LossConfig = LossConfig(name="kl")
    sampler: SamplerConfig = SamplerConfig(name="random", on_small_pool="clip")
    steps: int = Field(1000, ge=1, description="optimiser steps of the warm-up")
    lr: float = Field(3e-5, gt=0.0)
    batch_size: int = Field(32, ge=1, description="queries per step")
    seed: int = Field(0, description="one warm-up per study: not the trial seed, so seeds share it")


class InitConfig(_Strict):
    """Where a trial's student starts: the pretrained weights, or one shared warmed-up student.

    `from: warmup` trains one student with `warmup` once per study (a content-addressed asset,
    trainables/warm_start.py) and every trial refines it. The warm-up has its own loss, sampler,
    steps, lr, batch size and seed, so trials that differ in theirs share one warm start.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              serialize_by_alias=True)

    start: Literal["pretrained", "warmup"] = Field("pretrained", alias="from")
    warmup: WarmupConfig = WarmupConfig()


Precision = Literal["gpu-bf16", "fp32", "bf16", "auto"]   # resources.precision (trainables/precision.py)


class ResourcesConfig(_Strict):
    """Workers, devices and numeric precision of a trial.

    `precision`: bf16 autocast of the student's forward passes (training and corpus/query encoding)
    — `gpu-bf16` on CUDA only (the default, as before the knob existed), `fp32` never, `bf16`
    always, `auto` where the device runs bf16 natively (a GPU with bf16, a CPU with avx512_bf16 or
    AMX). The legacy `mixed_precision: true|false` reads as `gpu-bf16|fp32`. `loader_workers`:
    processes per trial worker that assemble the next steps' batches from token ids while a step
    computes (`input_pipeline.py`); 0 assembles them in the training process (CPU: a step takes
    seconds, assembling one a millisecond); 1–2 on a GPU host.
    """

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    precision: Precision = Field("gpu-bf16", description="bf16 autocast: gpu-bf16 | fp32 | bf16 | auto")
    loader_workers: int = Field(0, ge=0, le=16, description="input-pipeline processes per trial worker")

    @model_validator(mode="before")
    @classmethod
    def _legacy_mixed_precision(cls, raw: Any) -> Any:
        """Configs written before `precision` (checkpoints, study.json) say `mixed_precision`: read it as precision."""
        if isinstance(raw, dict) and "mixed_precision" in raw:
            raw = dict(raw)
            legacy = raw.pop("mixed_precision")
            if "precision" in raw:
                raise ValueError("give resources.precision only (mixed_precision is its old, GPU-only form)")
            if not isinstance(legacy, bool):
                raise ValueError(f"mixed_precision must be true or false, got {legacy!r}")
            raw["precision"] = "gpu-bf16" if legacy else "fp32"
        return raw


class TrialConfig(_Strict):
    """Everything one trial needs; hashes of its parts address the shared on-disk assets."""

    name: str = "trial"
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    init: InitConfig = InitConfig()
    sampler: SamplerConfig = SamplerConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    resources: ResourcesConfig = ResourcesConfig()
    cache_dir: str = Field(".kd-cache", description="shared assets (pools, teacher scores, models)")
    output_dir: str = Field("kd-runs", description="trial outputs (checkpoints, per-query scores)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        """The run's folder under output_dir: one path component, never `../escape`."""
        return check_name(value)

    @model_validator(mode="after")
    def _resolve_student_scale(self) -> "TrialConfig":
        """`loss.student_scale: auto` becomes a number for the loss functions, which see the loss block only.

        Kept beside the block (not written into it), so a dumped or overridden config still says
        `auto` and re-resolves against its own teacher and student.
        """
        self.loss._scale = student_score_scale(self)
        return self

    @model_validator(mode="after")
    def _k_fits_pool(self) -> "TrialConfig":
        """No pool is deeper than `data.pool_depth`; the real pools are checked once they exist."""
        from trainables.samplers import check_k_fits_pool   # samplers imports this module

        pool = f"data.pool_depth={self.data.pool_depth}" + (
            f" + data.random_additions={self.data.random_additions}" if self.data.random_additions else "")
        check_k_fits_pool(self.sampler.k, self.data.max_pool_size, self.sampler.on_small_pool, pool=pool)
        return self

    # ---- loading and saving -------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> "TrialConfig":
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrialConfig":
        """A trial config file: a non-empty mapping (an empty file would silently run the default trial)."""
        raw = read_yaml_mapping(path, what="a trial config")
        if not raw:
            raise ConfigError(f"{path}: empty trial config: give at least the fields that differ from the "
                              "defaults (e.g. `name: my-run`)")
        return cls.from_dict(raw, source=str(path))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def with_overrides(self, overrides: dict[str, Any], source: str = "<overrides>") -> "TrialConfig":
        """A copy with dotted keys (`loss.gamma1`) replaced, re-validated as a whole."""
        raw = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        return TrialConfig.from_dict(raw, source=source)


# sentence-transformers' scale for cosine scores (MultipleNegativesRankingLoss, scale=20 ≡ τ = 0.05): cosine
# margins are at most 2, a cross-encoder's logit margins span several units.
COSINE_STUDENT_SCALE = 20.0


def student_score_scale(cfg: TrialConfig) -> float:
    """The multiplier MarginMSE applies to student scores: `loss.student_scale`, or for `auto`
    COSINE_STUDENT_SCALE when a cosine student distils a teacher whose scores are not cosines (a
    cross-encoder's logits, a dot-product bi-encoder), else 1 (both on the same scale)."""
    if cfg.loss.student_scale != "auto":
        return float(cfg.loss.student_scale)
    same_scale = cfg.teacher.kind == "bi_encoder" and cfg.teacher.similarity == cfg.student.similarity
    return COSINE_STUDENT_SCALE if cfg.student.similarity == "cosine" and not same_scale else 1.0


def get_dotted(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key (`loss.gamma1`) of a nested mapping; KeyError/TypeError when it is not there."""
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def read_yaml_mapping(path: str | Path, what: str = "a mapping") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file (and line for syntax).

    An empty file (or one holding only comments) is an error too: it is never what was meant.
    `what` names the expected content in the messages ("a trial config", "a search space").
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: empty file (expected {what}: a YAML mapping of fields)")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(raw), type(raw).__name__)
        raise ConfigError(f"{path}: expected {what} (a YAML mapping of fields) at the top level, got {kind}")
    return raw


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `file: key.path: what was expected`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}")
    return "; ".join(lines)


def absolute_paths(cfg: TrialConfig) -> TrialConfig:
    """`cfg` with cache_dir, output_dir, candidates_file, scores_file and `beir:` folders resolved against the cwd."""
    raw = cfg.model_dump(mode="json")
    raw["cache_dir"] = os.path.abspath(raw["cache_dir"])
    raw["output_dir"] = os.path.abspath(raw["output_dir"])
    for block, key in (("data", "candidates_file"), ("teacher", "scores_file")):
        if raw[block].get(key):
            raw[block][key] = os.path.abspath(os.path.expanduser(raw[block][key]))
    refs = [raw["data"]["train"], raw["eval"]["dev"], *raw["eval"]["beir"], *raw["eval"]["dl"]]
    for ref in refs:
        if ref is not None and ref["id"].startswith("beir:"):
            ref["id"] = "beir:" + os.path.abspath(os.path.expanduser(ref["id"][5:]))
    return TrialConfig.from_dict(raw, source=f"trial {cfg.name}")
