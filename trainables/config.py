"""The single typed schema of one trial (one distillation run), validated at the edge.

A search space is "a base TrialConfig + searched fields"; the exported best config is a TrialConfig, so
`kd-study train best.yaml` re-runs exactly what a trial ran. Beside it: config_choices.py (the `loss:` and
`sampler:` blocks, one model per registered name), config_io.py (YAML, dotted keys, error lines), and
settings.py (the built-in losses' and samplers' settings), config_sets.py (the data and evaluation blocks);
this module re-exports their public names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config_choices import (DROP_OTHER_SETTINGS, LossBlock, SamplerBlock, UpgradePickledBlocks,  # noqa: F401
    loss_config, sampler_config, PickledLossConfig as LossConfig, PickledSamplerConfig as SamplerConfig)
from trainables.config_sets import DataConfig, DatasetRef, EvalConfig, Strict as _Strict  # noqa: F401
from trainables.config_io import (NAME_PATTERN, NAME_RULE, PICKLE_SUFFIXES, check_name,  # noqa: F401
                                  format_validation_error, get_dotted, is_pickle_path, read_yaml_mapping, set_dotted)
from trainables.errors import ConfigError   # noqa: F401  (every caller's ConfigError)
from trainables.samplers import check_k_fits_pool
from trainables.settings import (KLSettings, LossSettings, MarginMSESettings, RandomSettings,  # noqa: F401
                                 SamplerSettings, StratifiedSettings, WKLSettings)


class ModelConfig(_Strict):
    """An encoder: `packaged:all-MiniLM-L6-v2`, `packaged:all-mpnet-base-v2`, `tiny:bert`, a local path or a hub id."""

    model: str = "packaged:all-MiniLM-L6-v2"
    num_layers: int | None = Field(None, ge=1, description="keep only the first N transformer layers")
    pooling: Literal["mean", "cls"] = "mean"
    similarity: Literal["dot", "cosine"] = "cosine"
    query_max_length: int = Field(32, ge=4)
    passage_max_length: int = Field(128, ge=8)


class TeacherConfig(ModelConfig):
    """The teacher: a bi-encoder (offline default), a cross-encoder scoring (query, passage) pairs, or a scores file.

    `scores_file` replaces the model: every (query, passage) score is read from the file and no
    teacher runs (trainables/data/teacher_scores.py: Parquet from `kd-study convert-scores`,
    `{qid: {pid: score}}` pickle, TSV or JSONL).
    """

    kind: Literal["bi_encoder", "cross_encoder"] = "bi_encoder"
    batch_size: int = Field(64, ge=1)
    passage_max_length: int = Field(256, ge=8)
    scores_file: str | None = Field(
        None, description="published teacher scores: Parquet (qid, pid, score; `kd-study convert-scores` writes it "
                          "from the public pickle), {qid: {pid: score}} pickle (.pkl[.gz]), or qid pid score "
                          "lines (.tsv/.txt/.jsonl, gzipped or not)")
    allow_pickle: bool = Field(
        False, description="read a pickle scores_file: unpickling runs code from the file, so only a trusted one")
    shard_queries: int = Field(
        2000, ge=1, description="queries per teacher-scoring shard: each shard is one Ray task and is kept in the "
                                "cache as it finishes, so a killed build re-scores only the missing shards")

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


class WarmupConfig(UpgradePickledBlocks, _Strict):
    """The shared warm-up a refinement starts from (WKL paper: KL first, then WKL at a small lr)."""

    loss: LossBlock = KLSettings()
    sampler: SamplerBlock = RandomSettings(on_small_pool="clip")
    steps: int = Field(1000, ge=1, description="optimiser steps of the warm-up")
    lr: float = Field(3e-5, gt=0.0)
    batch_size: int = Field(32, ge=1, description="queries per step")
    seed: int = Field(0, description="one warm-up per study: not the trial seed, so seeds share it")


class InitConfig(_Strict):
    """Where a trial's student starts: the pretrained weights, or one shared warmed-up student.

    `from: warmup` trains one student with `warmup` once per study (a content-addressed asset,
    trainables/train/warm_start.py) and every trial refines it. The warm-up has its own loss, sampler,
    steps, lr, batch size and seed, so trials that differ in theirs share one warm start.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              serialize_by_alias=True, allow_inf_nan=False)

    start: Literal["pretrained", "warmup"] = Field("pretrained", alias="from")
    warmup: WarmupConfig = WarmupConfig()


Precision = Literal["gpu-bf16", "fp32", "bf16", "auto"]   # resources.precision (trainables/train/precision.py)


class ResourcesConfig(_Strict):
    """Workers, devices and numeric precision of a trial.

    `precision`: bf16 autocast of the student's forward passes (training and corpus/query encoding)
    — `auto` (the default) where the device runs bf16 natively (a GPU with bf16, a CPU with
    avx512_bf16 or AMX), `gpu-bf16` on CUDA only (the default before bench/results/precision.md's
    study), `fp32` never, `bf16` always. The legacy `mixed_precision: true|false` reads as
    `gpu-bf16|fp32`. `loader_workers`: processes per trial worker that assemble the next steps' batches
    from token ids while a step computes (`input_pipeline.py`); 0 assembles them in one prefetching
    thread of the training process (no second process's memory; the default, and enough on CPU), 1–2
    on a GPU host.
    """

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    precision: Precision = Field("auto", description="bf16 autocast: auto | gpu-bf16 | fp32 | bf16")
    loader_workers: int = Field(0, ge=0, le=16, description="input-pipeline processes per trial worker")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources each worker holds, e.g. {node2: 0.01} to pin the trials to the nodes "
                    "started with `ray start --resources '{\"node2\": 1}'`")

    @field_validator("custom")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name!r} is set by num_workers/cpus_per_worker/use_gpu, not as a custom resource")
            if not amount > 0:
                raise ValueError(f"custom resource {name!r} needs an amount > 0, got {amount}")
        return value

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


class TrialConfig(UpgradePickledBlocks, _Strict):
    """Everything one trial needs; hashes of its parts address the shared on-disk assets."""

    name: str = "trial"
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    init: InitConfig = InitConfig()
    sampler: SamplerBlock = StratifiedSettings()
    loss: LossBlock = KLSettings()
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
        """MarginMSE's `loss.student_scale: auto` becomes a number for the loss function, which sees the block only.

        Kept beside the block (its `_scale`, not written into it), so a dumped or overridden config still
        says `auto` and re-resolves against its own teacher and student.
        """
        if isinstance(self.loss, MarginMSESettings):
            self.loss._scale = student_score_scale(self)
        return self

    @model_validator(mode="after")
    def _k_fits_pool(self) -> "TrialConfig":
        """No pool is deeper than `data.pool_depth`; the real pools are checked once they exist."""
        pool = f"data.pool_depth={self.data.pool_depth}" + (
            f" + data.random_additions={self.data.random_additions}" if self.data.random_additions else "")
        check_k_fits_pool(self.sampler.k, self.data.max_pool_size, self.sampler.on_small_pool, pool=pool)
        return self

    # ---- loading and saving -------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>", *, other_settings: str = "error") -> "TrialConfig":
        """Validate `raw`; `other_settings="drop"` (a search space's configs) drops the settings of losses and
        samplers other than the chosen ones instead of refusing them (trainables/config_choices.py)."""
        context = DROP_OTHER_SETTINGS if other_settings == "drop" else None
        try:
            return cls.model_validate(raw, context=context)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, other_settings: str = "error") -> "TrialConfig":
        """A trial config file: a non-empty mapping (an empty file would silently run the default trial).
        `other_settings="drop"` reads one kd-study wrote before the loss blocks were per loss (`from_dict`)."""
        raw = read_yaml_mapping(path, what="a trial config")
        if not raw:
            raise ConfigError(f"{path}: empty trial config: give at least the fields that differ from the "
                              "defaults (e.g. `name: my-run`)")
        return cls.from_dict(raw, source=str(path), other_settings=other_settings)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def with_overrides(self, overrides: dict[str, Any], source: str = "<overrides>", *,
                       other_settings: str = "error") -> "TrialConfig":
        """A copy with dotted keys (`loss.gamma1`) replaced, re-validated as a whole (`other_settings`: `from_dict`)."""
        raw = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        return TrialConfig.from_dict(raw, source=source, other_settings=other_settings)


# sentence-transformers' scale for cosine scores (MultipleNegativesRankingLoss, scale=20 ≡ τ = 0.05): cosine
# margins are at most 2, a cross-encoder's logit margins span several units.
COSINE_STUDENT_SCALE = 20.0


def student_score_scale(cfg: TrialConfig) -> float:
    """The multiplier MarginMSE applies to student scores: `loss.student_scale`, or for `auto`
    COSINE_STUDENT_SCALE when a cosine student distils a teacher whose scores are not cosines (a
    cross-encoder's logits, a dot-product bi-encoder), else 1 (both on the same scale)."""
    scale = getattr(cfg.loss, "student_scale", "auto")
    if scale != "auto":
        return float(scale)
    same_scale = cfg.teacher.kind == "bi_encoder" and cfg.teacher.similarity == cfg.student.similarity
    return COSINE_STUDENT_SCALE if cfg.student.similarity == "cosine" and not same_scale else 1.0


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
