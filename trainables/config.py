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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    """Training data and the first-stage candidate pools."""

    train: DatasetRef = DatasetRef(id="quickstart", split="train")
    pool_depth: int = Field(100, ge=1, description="N: first-stage candidates kept per query")
    candidates_file: str | None = Field(None, description="TREC run file; else dense retrieval with the initial student")
    max_train_queries: int | None = Field(None, ge=1, description="seeded subset of training queries")

    @field_validator("train", mode="before")
    @classmethod
    def _train_ref(cls, value: Any) -> Any:
        return _coerce_dataset(value, "train")


class ModelConfig(_Strict):
    """An encoder: `packaged:all-MiniLM-L6-v2`, `packaged:all-mpnet-base-v2`, `tiny:bert`, a local path or a hub id."""

    model: str = "packaged:all-MiniLM-L6-v2"
    num_layers: int | None = Field(None, ge=1, description="keep only the first N transformer layers")
    pooling: Literal["mean", "cls"] = "mean"
    similarity: Literal["dot", "cosine"] = "cosine"
    query_max_length: int = Field(32, ge=4)
    passage_max_length: int = Field(128, ge=8)


class TeacherConfig(ModelConfig):
    """The teacher: a bi-encoder (offline default) or a cross-encoder scoring (query, passage) pairs."""

    kind: Literal["bi_encoder", "cross_encoder"] = "bi_encoder"
    batch_size: int = Field(64, ge=1)
    passage_max_length: int = Field(256, ge=8)


class StudentConfig(ModelConfig):
    """The student bi-encoder (shared weights for query and passage)."""

    num_layers: int | None = Field(2, ge=1)


class SamplerConfig(_Strict):
    """How K candidates are picked from each query's pool (score-distribution paper)."""

    name: Literal["topk", "random", "stratified"] = "stratified"
    k: int = Field(8, ge=1)
    on_small_pool: Literal["error", "clip"] = Field(
        "error", description="K larger than a query's pool: fail, or use the whole pool for that query"
    )


class LossConfig(_Strict):
    """The distillation loss and its parameters (WKL paper)."""

    name: Literal["kl", "margin_mse", "kl_nll", "wkl"] = "kl"
    gamma1: float = Field(0.0, ge=0.0, description="WKL focusing exponent for positives (γ1 ≥ 0)")
    alpha: float = Field(0.0, ge=0.0, description="WKL scale of β from student ranks")
    nll_weight: float = Field(1.0, ge=0.0, description="λ of KL+NLL")
    teacher_temperature: float = Field(1.0, gt=0.0)
    student_temperature: float = Field(1.0, gt=0.0)
    beta_refresh_steps: int = Field(200, ge=1, description="refresh student ranks for β every N batches")
    beta_pool_depth: int = Field(20, ge=1, description="candidates re-scored per query at a β refresh")
    kl_warmup_steps: int = Field(0, ge=0, description="plain KL steps before WKL (the paper's KL+WKL)")
    in_batch_weight: float = Field(
        0.0, ge=0.0, description="λ_IB: add λ_IB · contrastive NLL of each positive against every passage of "
                                 "the batch (other queries' passages as negatives, student-scored); 0 = off")


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


class ResourcesConfig(_Strict):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    mixed_precision: bool = Field(True, description="autocast on GPU (bf16 where supported); ignored on CPU")


class TrialConfig(_Strict):
    """Everything one trial needs; hashes of its parts address the shared on-disk assets."""

    name: str = "trial"
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
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
    def _k_fits_pool(self) -> "TrialConfig":
        """No pool is deeper than `data.pool_depth`; the real pools are checked once they exist."""
        from trainables.samplers import check_k_fits_pool   # samplers imports this module

        check_k_fits_pool(self.sampler.k, self.data.pool_depth, self.sampler.on_small_pool,
                          pool=f"data.pool_depth={self.data.pool_depth}")
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
    """`cfg` with cache_dir, output_dir, candidates_file and `beir:` folders resolved against the cwd."""
    raw = cfg.model_dump(mode="json")
    raw["cache_dir"] = os.path.abspath(raw["cache_dir"])
    raw["output_dir"] = os.path.abspath(raw["output_dir"])
    if raw["data"].get("candidates_file"):
        raw["data"]["candidates_file"] = os.path.abspath(raw["data"]["candidates_file"])
    refs = [raw["data"]["train"], raw["eval"]["dev"], *raw["eval"]["beir"], *raw["eval"]["dl"]]
    for ref in refs:
        if ref is not None and ref["id"].startswith("beir:"):
            ref["id"] = "beir:" + os.path.abspath(os.path.expanduser(ref["id"][5:]))
    return TrialConfig.from_dict(raw, source=f"trial {cfg.name}")
