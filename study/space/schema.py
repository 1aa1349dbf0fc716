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
      replicates: 1                      # seeds per point (study/space/replicates.py); num_samples counts points
      baseline: {loss.name: kl}          # optional: the cell the report compares against
      contrasts:                         # optional: comparisons declared before the study runs
        - {of: {sampler.name: stratified}, vs: {sampler.name: random}, within: [loss.name, sampler.k],
           margin: 0.005}                # optional: TOST against ±margin beside the difference test
        - {name: lr, of: {optim.lr: 8.0e-5}, vs: {optim.lr: 3.0e-5}, control: positive, expect: better}
        - {name: aa, of: {seed: 100}, vs: {seed: 0}, control: aa}   # same config, disjoint seeds

`when: {field: value}` (or `{field: [v1, v2]}`) makes a parameter conditional: Optuna's
define-by-run only asks for it when `field` (a searched parameter, or the base/fixed value) takes
one of those values; otherwise the trial keeps the base/fixed value. Grid mode enumerates the
product of every parameter's values (choices, or a stepped range), honouring `when`, so a paper's
grid is run exactly once per point. Everything is validated before anything runs: each choice and
both ends of each range are applied to the base config and must give a valid TrialConfig (so
γ1 < 0 or K > pool depth fail here, naming the file and the key).

Here: the file's schema, `SearchSpace`, `load_space` and `dump_space`. One parameter's spec is in
study/space/params.py, the rules a space must meet in study/space/checks.py, the grid's enumeration in
study/space/grid.py.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trainables.config import NAME_PATTERN, ConfigError, TrialConfig, get_dotted, read_yaml_mapping, set_dotted
from trainables.config_choices import CHOSEN_BLOCKS, other_settings, with_other_settings
from trainables.outputs import final_metric_keys

from study.space import grid
from study.space.pins import pin_fields
from study.space.params import ParamSpec, Scalar, SearchParam, holds
from study.space.replicates import REPLICATE_KEY, replicate_seed
from study.space.checks import check_override, check_params, order_params, settle_study
from study.space.settings import ALGORITHMS, AshaSettings, ContrastSpec, Objective, SpaceFile, StudySettings  # noqa: F401

__all__ = ["ALGORITHMS", "AshaSettings", "ContrastSpec", "Objective", "ParamSpec", "Scalar", "SearchParam", "SearchSpace",
           "SpaceFile", "StudySettings", "dump_space", "expected_metric_keys", "load_space"]

STUDY_NAME = NAME_PATTERN   # the one name rule (trainables.config.check_name): studies, trials, runs


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
    # base and fixed settings of losses / samplers other than the base's (quickstart's base is `kl` with WKL's
    # refresh interval): the trials that draw those get them (trainables/config_choices.py)
    other_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    _grid: list[dict[str, Scalar]] | None = field(default=None, repr=False)

    # ---- what Optuna and the runner need ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.study.name

    @property
    def metrics(self) -> list[str]:
        return self.study.metrics

    @property
    def modes(self) -> list[str]:
        return self.study.modes

    @property
    def num_samples(self) -> int:
        return self.study.num_samples  # settled by load_space

    @property
    def replicates(self) -> int:
        return self.study.replicates

    @property
    def num_trials(self) -> int:
        """Tune trials: every point once per replicate (seed)."""
        return self.num_samples * self.replicates

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
            if not holds(value, allowed):
                return False
        return True

    def static_value(self, dotted: str) -> Any:
        """The base + fixed value at `dotted`; None for a setting the base's loss or sampler does not have."""
        raw = with_other_settings(self.base.model_dump(mode="json"), getattr(self, "other_settings", {}))
        try:
            return get_dotted(raw, dotted)
        except (KeyError, TypeError):
            if dotted.split(".")[0] in CHOSEN_BLOCKS:
                return None
            raise

    def trial_config(self, params: Mapping[str, Any], name: str | None = None) -> TrialConfig:
        """The full TrialConfig of one trial: base + fixed + the searched values it drew (+ its replicate's seed).

        A searched `seed` (an A/A control's points) is the base its replicates count from.
        """
        overrides = {k: v for k, v in params.items() if k in self.param_names}
        if REPLICATE_KEY in params:
            first = int(overrides.get("seed", self.base.seed))
            overrides["seed"] = replicate_seed(first, int(params[REPLICATE_KEY]))
        if name is not None:
            overrides["name"] = name
        return self.with_values(overrides, source=f"{self.source}: trial {name or ''}".rstrip())

    def with_values(self, overrides: Mapping[str, Any], source: str) -> TrialConfig:
        """base + fixed + `overrides` (dotted keys); a loss's or sampler's settings apply where the trial's has them."""
        raw = with_other_settings(self.base.model_dump(mode="json"), getattr(self, "other_settings", {}))
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        return TrialConfig.from_dict(raw, source=source, other_settings="drop")

    def grid_points(self) -> list[dict[str, Scalar]]:
        """Every point of the grid (grid mode), in file order, each exactly once (study/space/grid.py)."""
        if self._grid is None:
            self._grid = grid.grid_points(self.params, self.is_active, self.source)
        return self._grid

    def initial_points(self) -> list[dict[str, Scalar]]:
        """Points Optuna evaluates first: the whole grid in grid mode, else `points_to_evaluate`."""
        return self.grid_points() if self.study.algorithm == "grid" else list(self.study.points_to_evaluate)

    def final_metric_keys(self) -> list[str]:
        return expected_metric_keys(self.base)


def expected_metric_keys(cfg: TrialConfig) -> list[str]:
    """Final metric keys a trial of `cfg` reports: the one list evaluation also derives its keys from."""
    return final_metric_keys(cfg.eval)


# ---- loading and validation --------------------------------------------------------------------
def load_space(path: str | Path, *, overrides: Mapping[str, Any] | None = None,
               pin: Mapping[str, Any] | None = None) -> SearchSpace:
    """Read and validate a space file; every error is a one-line ConfigError naming the file and key.

    `overrides` (dotted keys, e.g. `study.name`, `study.num_samples`) replace values of the file
    before validation (the CLI's --name, --num-samples, ...). `pin` fixes trial config fields
    (`{"optim.epochs": 1}`, the CLI's --set), taking them out of everything that searched them (study.space.pins).
    """
    path = Path(path)
    raw = read_yaml_mapping(path, what="a search space")
    source = str(path)
    for dotted, value in (overrides or {}).items():
        raw = _with_dotted(raw, dotted, value)
    if pin:
        raw = pin_fields(raw, pin)   # fixed, and no longer searched anywhere (study.space.pins)
    if "study" not in raw:
        raise ConfigError(f"{source}: study: missing (expected a mapping with at least `name`)")
    try:
        parsed = SpaceFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_space_error(error, source)) from None

    base_cfg, base_source, other = _load_base(parsed.base, path)
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
        check_override(base_cfg, {dotted: value}, f"{source}: fixed.{dotted}", value, other)
    base_raw = with_other_settings(base_cfg.model_dump(mode="json"), other)
    for dotted, value in parsed.fixed.items():
        set_dotted(base_raw, dotted, value)
    base = TrialConfig.from_dict(base_raw, source=f"{source}: fixed", other_settings="drop")
    other = other_settings(base_raw, base.model_dump(mode="json"))

    params = order_params(search, source)
    space = SearchSpace(source=source, raw=raw, base=base, fixed=dict(parsed.fixed), params=params,
                        study=study, base_source=base_source, other_settings=other)
    check_params(space)
    return replace(space, study=settle_study(space))


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


def _load_base(base: str | dict[str, Any], space_path: Path) -> tuple[TrialConfig, str | None, dict[str, Any]]:
    """The base config, its file (None inline), and its settings of other losses / samplers than its own."""
    base_path = None
    if isinstance(base, str):
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = space_path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{space_path}: base: {base!r} is not a file (expected a trial config YAML "
                              "path relative to the space file, or an inline mapping)")
        base = read_yaml_mapping(base_path, what="a trial config")
        if not base:
            TrialConfig.from_yaml(base_path)   # says why an empty trial config is refused
    cfg = TrialConfig.from_dict(base, source=str(base_path) if base_path else f"{space_path}: base",
                                other_settings="drop")
    return cfg, str(base_path) if base_path else None, other_settings(base, cfg.model_dump(mode="json"))


def dump_space(space: SearchSpace) -> str:
    """The space as YAML with its base resolved inline (fixed values included, re-applying them is a no-op).

    This is what a study folder keeps and `resume` reads: it does not depend on the original file,
    the base file it named, or the command-line overrides, any of which may change after the run.
    """
    raw = dict(space.raw)
    raw["base"] = with_other_settings(space.base.model_dump(mode="json"), getattr(space, "other_settings", {}))
    raw["fixed"] = dict(space.fixed)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
