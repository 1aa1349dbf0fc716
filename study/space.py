"""A search space: a base trial config, fixed overrides, searched (conditional) parameters, study settings.

A space file is "a base TrialConfig + searched fields" (YAML):

    base: ../configs/trial.yaml          # or an inline trial config mapping
    fixed:                               # dotted TrialConfig fields, applied to the base
      optim.epochs: 1
    search:                              # dotted TrialConfig fields → how to search them
      loss.name:   {type: categorical, choices: [kl, wkl]}
      loss.gamma1: {type: float, low: 0, high: 6, step: 1, when: {loss.name: wkl}}
      optim.lr:    {type: loguniform, low: 1.0e-5, high: 1.0e-3}
    study:
      name: my-study
      algorithm: tpe                     # tpe | grid | random
      num_samples: 20
      metric: dev_mrr_at_10              # or objectives: [{metric, mode}, ...] (multi-objective)
      mode: max

`when: {field: value}` (or `{field: [v1, v2]}`) makes a parameter conditional: Optuna's
define-by-run only asks for it when `field` (a searched parameter, or the base/fixed value) takes
one of those values; otherwise the trial keeps the base/fixed value. Grid mode enumerates the
product of every parameter's values (choices, or a stepped range), honouring `when`, so a paper's
grid is run exactly once per point. Everything is validated before anything runs: each choice and
both ends of each range are applied to the base config and must give a valid TrialConfig (so
γ1 < 0 or K > pool depth fail here, naming the file and the key).
"""
from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config import ConfigError, TrialConfig, format_validation_error, read_yaml_mapping
from trainables.outputs import FINAL_LOSS

Scalar = bool | int | float | str | None
ALGORITHMS = ("tpe", "grid", "random")
# Fields that shape the shared assets (pools, teacher scores, training set; see trainables/assets.py).
# A trial that searched one would need assets of its own, so they may only be fixed.
ASSET_FIELDS = ("data.", "student.", "teacher.", "cache_dir")
ASSET_FIELD_EXCEPTIONS = ("teacher.batch_size",)
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """How one dotted TrialConfig field is searched."""

    type: Literal["float", "int", "loguniform", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = None
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical takes `choices`, not low/high/step")
            if len({json.dumps(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high (and step), not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        if self.type == "loguniform":
            if self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {self.low}")
            if self.step is not None:
                raise ValueError("loguniform takes no `step`")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"int needs a whole `{name}`, got {value}")
        return self

    def condition(self) -> dict[str, list[Scalar]]:
        """`when` with every value as a list of allowed values."""
        return {k: (v if isinstance(v, list) else [v]) for k, v in self.when.items()}

    def extremes(self) -> list[Scalar]:
        """The values validated before a study starts: every choice, or both ends of the range."""
        if self.type == "categorical":
            return list(self.choices)
        return [self._typed(self.low), self._typed(self.high)]

    def grid_values(self) -> list[Scalar] | None:
        """Every value of a categorical or stepped range; None when the range is continuous."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 10) for i in range(count)]

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return any(value == c and type(value) is type(c) or _same_number(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.type == "int" and value != int(value):
            return False
        if self.step is not None:
            ratio = (value - self.low) / self.step
            return abs(ratio - round(ratio)) < 1e-8
        return True

    def suggest(self, trial: Any, name: str) -> Any:
        """Declare this parameter on an Optuna trial (define-by-run) and return its value."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        if self.type == "loguniform":
            return trial.suggest_float(name, self.low, self.high, log=True)
        return trial.suggest_float(name, self.low, self.high, step=self.step)

    def _typed(self, value: float) -> int | float:
        return int(value) if self.type == "int" else float(value)


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)


class Objective(_Strict):
    metric: str
    mode: Literal["max", "min"] = "max"


class AshaSettings(_Strict):
    """ASHA on the intermediate evaluations (`eval.every_steps`), time measured in training steps."""

    grace_period: int | None = Field(None, ge=1, description="steps before a trial can be stopped; default eval.every_steps")
    reduction_factor: float = Field(2.0, gt=1.0)
    max_t: int | None = Field(None, ge=1, description="default: the base config's total training steps")


class StudySettings(_Strict):
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

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STUDY_NAME.match(value):
            raise ValueError(f"expected letters, digits, '.', '_' or '-' (a folder name), got {value!r}")
        return value

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
        return self


class SpaceFile(_Strict):
    base: str | dict[str, Any] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, ParamSpec] = Field(default_factory=dict)
    study: StudySettings


@dataclass(frozen=True)
class SearchParam:
    name: str
    spec: ParamSpec


@dataclass
class SearchSpace:
    """A validated space: `base` (base + fixed, the config shared assets are built from) and ordered params."""

    source: str
    raw: dict[str, Any]
    base: TrialConfig
    fixed: dict[str, Any]
    params: list[SearchParam]
    study: StudySettings
    base_source: str | None = None
    _grid: list[dict[str, Scalar]] | None = field(default=None, repr=False)

    # ---- what Optuna and the runner need ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.study.name

    @property
    def metrics(self) -> list[str]:
        if self.study.objectives:
            return [o.metric for o in self.study.objectives]
        return [self.study.metric]

    @property
    def modes(self) -> list[str]:
        if self.study.objectives:
            return [o.mode for o in self.study.objectives]
        return [self.study.mode]

    @property
    def num_samples(self) -> int:
        return self.study.num_samples  # filled in by load_space

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def define_by_run(self, trial: Any) -> None:
        """Declare the (conditional) space on an Optuna trial; computes nothing else."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if self.is_active(param, chosen):
                chosen[param.name] = param.spec.suggest(trial, param.name)

    def is_active(self, param: SearchParam, chosen: Mapping[str, Any]) -> bool:
        """Whether `param`'s `when` holds, reading searched values first, then base + fixed."""
        for dotted, allowed in param.spec.condition().items():
            value = chosen[dotted] if dotted in chosen else self.static_value(dotted)
            if not any(value == a or _same_number(value, a) for a in allowed):
                return False
        return True

    def static_value(self, dotted: str) -> Any:
        node: Any = self.base.model_dump(mode="json")
        for part in dotted.split("."):
            node = node[part]
        return node

    def trial_config(self, params: Mapping[str, Any], name: str | None = None) -> TrialConfig:
        """The full TrialConfig of one trial: base + fixed + the searched values it drew."""
        overrides = {k: v for k, v in params.items() if k in self.param_names}
        if name is not None:
            overrides["name"] = name
        return self.base.with_overrides(overrides, source=f"{self.source}: trial {name or ''}".rstrip())

    def grid_points(self) -> list[dict[str, Scalar]]:
        """Every point of the grid (grid mode), in file order, each exactly once."""
        if self._grid is None:
            continuous = [p.name for p in self.params if p.spec.grid_values() is None]
            if continuous:
                raise ConfigError(f"{self.source}: no grid: {', '.join(continuous)} have continuous ranges")
            self._grid = list(_enumerate(self, self.params, {}))
        return self._grid

    def initial_points(self) -> list[dict[str, Scalar]]:
        """Points Optuna evaluates first: the whole grid in grid mode, else `points_to_evaluate`."""
        return self.grid_points() if self.study.algorithm == "grid" else list(self.study.points_to_evaluate)

    def final_metric_keys(self) -> list[str]:
        return expected_metric_keys(self.base)


def _enumerate(space: SearchSpace, params: list[SearchParam], chosen: dict[str, Scalar]) -> Iterator[dict[str, Scalar]]:
    if not params:
        yield dict(chosen)
        return
    first, rest = params[0], params[1:]
    if not space.is_active(first, chosen):
        yield from _enumerate(space, rest, chosen)
        return
    for value in first.spec.grid_values():
        yield from _enumerate(space, rest, {**chosen, first.name: value})


def expected_metric_keys(cfg: TrialConfig) -> list[str]:
    """Final metric keys a trial of `cfg` reports (mirrors trainables/evaluate.eval_sets, without its imports)."""
    suffix = cfg.eval.metric_suffix
    keys = []
    if cfg.eval.dev is not None:
        keys += [f"dev_{m}{suffix}" for m in ("mrr_at_10", "ndcg_at_10", "recall_at_1000")]
    for ref in cfg.eval.beir:
        keys += [f"beir/{ref.label}/{m}{suffix}" for m in ("ndcg_at_10", "mrr_at_10")]
    if cfg.eval.beir:
        keys.append(f"beir_ndcg_at_10_avg{suffix}")
    for ref in cfg.eval.dl:
        keys += [f"{ref.label}_{m}{suffix}" for m in ("ndcg_at_10", "mrr_at_10", "recall_at_1000")]
    return keys + [FINAL_LOSS]


# ---- loading and validation --------------------------------------------------------------------
def load_space(path: str | Path, *, overrides: Mapping[str, Any] | None = None,
               pin: Mapping[str, Any] | None = None) -> SearchSpace:
    """Read and validate a space file; every error is a one-line ConfigError naming the file and key.

    `overrides` (dotted keys, e.g. `study.name`, `study.num_samples`) replace values of the file
    before validation (the CLI's --name, --num-samples, ...). `pin` fixes trial config fields
    (`{"optim.epochs": 1}`, the CLI's --set), taking them out of `search` when they were searched.
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    source = str(path)
    for dotted, value in (overrides or {}).items():
        raw = _with_dotted(raw, dotted, value)
    if pin:
        search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
        fixed = raw.get("fixed") if isinstance(raw.get("fixed"), dict) else {}
        raw = {**raw, "search": {k: v for k, v in search.items() if k not in pin}, "fixed": {**fixed, **pin}}
    if "study" not in raw:
        raise ConfigError(f"{source}: study: missing (expected a mapping with at least `name`)")
    try:
        parsed = SpaceFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_space_error(error, source)) from None

    base_cfg, base_source = _load_base(parsed.base, path)
    study = parsed.study
    search = dict(parsed.search)
    if study.grid:
        for dotted, values in study.grid.items():
            if dotted in search:
                raise ConfigError(f"{source}: study.grid.{dotted}: also in `search`; give it in one place")
            if not values:
                raise ConfigError(f"{source}: study.grid.{dotted}: expected a non-empty list of values")
            search[dotted] = ParamSpec(type="categorical", choices=values)

    # fixed values: each must be a known field with a valid value
    for dotted, value in parsed.fixed.items():
        if dotted in search:
            raise ConfigError(f"{source}: fixed.{dotted}: also searched in `search`; give it in one place")
        _check_override(base_cfg, {dotted: value}, f"{source}: fixed.{dotted}", value)
    base = _apply(base_cfg, parsed.fixed, f"{source}: fixed")

    params = _order_params(search, source)
    space = SearchSpace(source=source, raw=raw, base=base, fixed=dict(parsed.fixed), params=params,
                        study=study, base_source=base_source)
    _validate_params(space)
    _validate_study(space)
    return space


def _with_dotted(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    if not rest:
        return {**raw, head: value}
    inner = raw.get(head)
    return {**raw, head: _with_dotted(inner if isinstance(inner, dict) else {}, rest, value)}


def _space_error(error: ValidationError, source: str) -> str:
    """Pydantic errors of the space file as `file: key: expected …` (unknown keys list the known ones)."""
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "<root>"
        if item["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            lines.append(f"{source}: {key}: unknown key" + (f" (expected one of: {', '.join(known)})" if known else ""))
            continue
        if item["type"] == "missing":
            lines.append(f"{source}: {key}: missing")
            continue
        message = item["msg"].removeprefix("Value error, ")
        # `search.x.float` style locs from unions/literals: keep the user's key only.
        if loc and loc[0] == "search" and len(loc) > 2 and loc[2] not in ParamSpec.model_fields:
            key = ".".join(loc[:2])
        lines.append(f"{source}: {key}: {message}")
    return "; ".join(dict.fromkeys(lines))


def _known_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] | None = SpaceFile
    for part in parent:
        if model is SpaceFile and part == "search":
            model = None
            continue
        if model is None:  # inside search.<param>
            model = ParamSpec
            continue
        annotation = model.model_fields.get(part)
        target = getattr(annotation, "annotation", None)
        model = target if isinstance(target, type) and issubclass(target, BaseModel) else None
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def _load_base(base: str | dict[str, Any], space_path: Path) -> tuple[TrialConfig, str | None]:
    if isinstance(base, str):
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = space_path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{space_path}: base: {base!r} is not a file (expected a trial config YAML "
                              "path relative to the space file, or an inline mapping)")
        return TrialConfig.from_yaml(base_path), str(base_path)
    return TrialConfig.from_dict(base, source=f"{space_path}: base"), None


def _apply(cfg: TrialConfig, overrides: dict[str, Any], source: str) -> TrialConfig:
    return cfg.with_overrides(overrides, source=source) if overrides else cfg


def _check_override(cfg: TrialConfig, overrides: dict[str, Any], where: str, value: Any) -> None:
    """Apply overrides to `cfg`; a failure names `where` (file + key) and what TrialConfig expected."""
    for dotted in overrides:
        if not _is_field(dotted):
            raise ConfigError(f"{where}: {dotted!r} is not a trial config field")
    raw = cfg.model_dump(mode="json")
    from trainables.config import set_dotted

    for dotted, v in overrides.items():
        set_dotted(raw, dotted, v)
    try:
        TrialConfig.model_validate(raw)
    except ValidationError as error:
        problems = format_validation_error(error, "").split("; ")
        detail = "; ".join(p.removeprefix(": ").replace("<root>: ", "") for p in problems)
        raise ConfigError(f"{where}: {value!r} is invalid: {detail}") from None


def _is_field(dotted: str) -> bool:
    """Whether a dotted path names a leaf (or whole sub-config) of TrialConfig."""
    model: Any = TrialConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = _model_of(fields[part].annotation)
    return True


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside `X | None` (or X itself); anything else is a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else annotation


def _order_params(search: dict[str, ParamSpec], source: str) -> list[SearchParam]:
    """File order, moved so that a parameter comes after every searched field its `when` reads."""
    ordered: list[SearchParam] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            raise ConfigError(f"{source}: search.{name}.when: conditions form a cycle")
        visiting.add(name)
        for dep in search[name].when:
            if dep in search:
                place(dep)
        visiting.discard(name)
        placed.add(name)
        ordered.append(SearchParam(name, search[name]))

    for name in search:
        place(name)
    return ordered


def _validate_params(space: SearchSpace) -> None:
    src = space.source
    for param in space.params:
        where = f"{src}: search.{param.name}"
        if not _is_field(param.name):
            raise ConfigError(f"{where}: {param.name!r} is not a trial config field")
        if param.name.startswith(ASSET_FIELDS) and param.name not in ASSET_FIELD_EXCEPTIONS:
            raise ConfigError(f"{where}: {param.name} shapes the shared assets (pools, teacher scores) built "
                              "once per study; it cannot be searched: put it in `fixed` or the base config")
        if space.study.algorithm == "grid" and param.spec.grid_values() is None:
            raise ConfigError(f"{where}: grid mode needs `choices` or a stepped range (add `step`)")
        # conditions read known fields, can hold, and name values the field can take
        activation: dict[str, Any] = {}
        for dotted, allowed in param.spec.condition().items():
            if dotted == param.name:
                raise ConfigError(f"{where}.when: a parameter cannot depend on itself")
            if not _is_field(dotted):
                raise ConfigError(f"{where}.when: {dotted!r} is not a trial config field")
            searched = next((p for p in space.params if p.name == dotted), None)
            if searched is None:
                value = space.static_value(dotted)
                if not any(value == a or _same_number(value, a) for a in allowed):
                    raise ConfigError(f"{where}.when: {dotted} is fixed to {value!r}, so the condition "
                                      f"{dotted} in {allowed} never holds (search {dotted} or drop the parameter)")
            else:
                reachable = [a for a in allowed if searched.spec.contains(a)]
                if not reachable:
                    raise ConfigError(f"{where}.when: {dotted} never takes {allowed} "
                                      f"(its search is {_describe(searched.spec)})")
                activation[dotted] = reachable[0]
        # every choice / both ends of the range give a valid TrialConfig (with its condition holding)
        for value in param.spec.extremes():
            _check_override(space.base, {**activation, param.name: value}, where, value)


def _describe(spec: ParamSpec) -> str:
    if spec.type == "categorical":
        return f"choices {spec.choices}"
    return f"{spec.type} [{spec.low}, {spec.high}]" + (f" step {spec.step}" if spec.step else "")


def _validate_study(space: SearchSpace) -> None:
    src, study = space.source, space.study
    if study.algorithm != "grid" and not space.params:
        raise ConfigError(f"{src}: search: empty; nothing to search (add parameters, or use `kd-study train`)")
    # metric(s) must be reported by every trial of this base config
    known = space.final_metric_keys()
    if study.objectives is None and study.metric is None:
        study.metric = next((k for k in known if k.startswith("dev_mrr_at_10")),
                            next((k for k in known if k.startswith("beir_ndcg_at_10_avg")), known[0]))
    for i, metric in enumerate(space.metrics):
        key = "study.metric" if study.objectives is None else f"study.objectives.{i}.metric"
        if metric not in known:
            raise ConfigError(f"{src}: {key}: {metric!r} is not reported by trials of this base config "
                              f"(expected one of: {', '.join(known)})")
    if study.scheduler == "asha" and space.base.eval.every_steps is None:
        raise ConfigError(f"{src}: study.scheduler: asha stops trials on intermediate evaluations: "
                          "set eval.every_steps in the base config or in `fixed`")
    # points to evaluate: searched keys, values inside the search, conditions respected
    for i, point in enumerate(study.points_to_evaluate):
        where = f"{src}: study.points_to_evaluate.{i}"
        by_name = {p.name: p for p in space.params}
        for dotted, value in point.items():
            if dotted not in by_name:
                raise ConfigError(f"{where}.{dotted}: not a searched parameter (expected one of: "
                                  f"{', '.join(by_name)})")
            if not by_name[dotted].spec.contains(value):
                raise ConfigError(f"{where}.{dotted}: {value!r} is outside its search ({_describe(by_name[dotted].spec)})")
        chosen: dict[str, Any] = {}
        for param in space.params:
            active = space.is_active(param, chosen)
            if param.name in point:
                if not active:
                    raise ConfigError(f"{where}.{param.name}: given, but its condition {param.spec.when} does "
                                      "not hold in this point")
                chosen[param.name] = point[param.name]
        space.trial_config(point)  # a point's combination must be a valid config too
    if study.algorithm == "grid":
        if study.points_to_evaluate:
            raise ConfigError(f"{src}: study.points_to_evaluate: grid mode evaluates the whole grid; drop it")
        size = len(space.grid_points())
        if study.num_samples is not None and study.num_samples != size:
            raise ConfigError(f"{src}: study.num_samples: grid mode runs each of the {size} grid points once: "
                              f"leave num_samples out or set it to {size} (got {study.num_samples})")
        study.num_samples = size
        for point in space.grid_points():
            try:
                space.trial_config(point)
            except ConfigError as error:
                raise ConfigError(f"{src}: study.grid: point {point} is invalid: {error}") from None
    elif study.num_samples is None:
        study.num_samples = max(10, len(study.points_to_evaluate))
    elif study.num_samples < len(study.points_to_evaluate):
        raise ConfigError(f"{src}: study.num_samples: {study.num_samples} is fewer than the "
                          f"{len(study.points_to_evaluate)} points_to_evaluate")


def dump_space(space: SearchSpace) -> str:
    """The space as YAML with its base resolved inline (fixed values included, re-applying them is a no-op).

    This is what a study folder keeps and `resume` reads: it does not depend on the original file,
    the base file it named, or the command-line overrides, any of which may change after the run.
    """
    raw = dict(space.raw)
    raw["base"] = space.base.model_dump(mode="json")
    raw["fixed"] = dict(space.fixed)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
