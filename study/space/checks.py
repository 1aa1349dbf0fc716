"""The rules a parsed space must meet before anything runs; each failure is one line naming the file and key.

Searched and fixed fields must be TrialConfig fields; every choice and both ends of every range,
applied to the base config, must give a valid TrialConfig (so γ1 < 0 or K > pool depth fail
here); conditions must be able to hold; fields that shape the shared assets may only be fixed.
The study section is checked against the base config (its trials must report the metric) and the
grid, and `settle_study` returns it with the defaults that depend on them filled in.
"""
from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from trainables.config import ConfigError, TrialConfig, format_validation_error, set_dotted
from trainables.config_choices import CHOSEN_BLOCKS, DROP_OTHER_SETTINGS, with_other_settings
from trainables.registry import loss_entries, sampler_entries
from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10

from study.space.contrasts import contrast_name, pair_points, same_value
from study.space.params import ParamSpec, Scalar, SearchParam, holds

if TYPE_CHECKING:
    from collections.abc import Mapping

    from study.space.settings import StudySettings


class SearchSpace(Protocol):
    """What the checks read of a space (study/space/schema.py's `SearchSpace`, which calls them while it loads)."""

    source: str
    base: TrialConfig
    params: list[SearchParam]
    study: StudySettings

    @property
    def param_names(self) -> list[str]: ...
    def is_active(self, param: SearchParam, chosen: Mapping[str, Any]) -> bool: ...
    def static_value(self, dotted: str) -> Any: ...
    def trial_config(self, params: Mapping[str, Any], name: str | None = None) -> TrialConfig: ...
    def grid_points(self) -> list[dict[str, Scalar]]: ...
    def final_metric_keys(self) -> list[str]: ...


# Fields that shape the shared assets (pools, teacher scores, training set; see trainables/prepare/assets.py).
# A trial that searched one would need assets of its own, so they may only be fixed.
ASSET_FIELDS = ("data.", "student.", "teacher.", "cache_dir")
ASSET_FIELD_EXCEPTIONS = ("teacher.batch_size",)


# ---- fields ---------------------------------------------------------------------------------------
def is_field(dotted: str) -> bool:
    """Whether a dotted path names a leaf (or whole sub-config) of TrialConfig (`loss.gamma1`: a field of any
    registered loss)."""
    models: list[Any] = [TrialConfig]
    for part in dotted.split("."):
        # by name or alias: `init.from` (InitConfig.start), as a space file and a dumped config spell it
        found = [f for m in models for name, f in getattr(m, "model_fields", {}).items() if part in (name, f.alias)]
        if not found:
            return False
        models = [_model_of(f.annotation) for f in found]
        if part in CHOSEN_BLOCKS and not any(isinstance(m, type) and issubclass(m, BaseModel) for m in models):
            models = [e.settings for e in (loss_entries() if part == "loss" else sampler_entries()).values()]
    return True


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside `X | None` (or X itself); anything else is a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else annotation


def check_override(cfg: TrialConfig, overrides: dict[str, Any], where: str, value: Any,
                   other: dict[str, dict[str, Any]] | None = None) -> None:
    """Apply overrides to `cfg` (+ the space's `other` loss / sampler settings); a failure names `where`
    (file + key) and what TrialConfig expected."""
    for dotted in overrides:
        if not is_field(dotted):
            raise ConfigError(f"{where}: {dotted!r} is not a trial config field")
    raw = with_other_settings(cfg.model_dump(mode="json"), other or {})
    for dotted in list(overrides):   # another loss's setting (γ1 on a KL base) is checked as that loss's
        block, _, leaf = dotted.partition(".")
        if block in CHOSEN_BLOCKS and f"{block}.name" not in overrides and leaf not in type(getattr(cfg, block)).model_fields:
            entries = loss_entries() if block == "loss" else sampler_entries()
            owner = next((name for name, e in entries.items() if leaf.split(".")[0] in e.settings.model_fields), None)
            overrides = {**overrides, f"{block}.name": owner} if owner else overrides
    for dotted, v in overrides.items():
        set_dotted(raw, dotted, v)
    try:
        TrialConfig.model_validate(raw, context=DROP_OTHER_SETTINGS)
    except ValidationError as error:
        problems = format_validation_error(error, "").split("; ")
        detail = "; ".join(p.removeprefix(": ").replace("<root>: ", "") for p in problems)
        raise ConfigError(f"{where}: {value!r} is invalid: {detail}") from None


# ---- searched parameters --------------------------------------------------------------------------
def order_params(search: dict[str, ParamSpec], source: str) -> list[SearchParam]:
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


def check_params(space: SearchSpace) -> None:
    src = space.source
    for param in space.params:
        where = f"{src}: search.{param.name}"
        if not is_field(param.name):
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
            if not is_field(dotted):
                raise ConfigError(f"{where}.when: {dotted!r} is not a trial config field")
            searched = next((p for p in space.params if p.name == dotted), None)
            if searched is None:
                value = space.static_value(dotted)
                if not holds(value, allowed):
                    raise ConfigError(f"{where}.when: {dotted} is fixed to {value!r}, so the condition "
                                      f"{dotted} in {allowed} never holds (search {dotted} or drop the parameter)")
            else:
                reachable = [a for a in allowed if searched.spec.contains(a)]
                if not reachable:
                    raise ConfigError(f"{where}.when: {dotted} never takes {allowed} "
                                      f"(its search is {searched.spec.describe()})")
                activation[dotted] = reachable[0]
        # every choice / both ends of the range give a valid TrialConfig (with its condition holding)
        for value in param.spec.extremes():
            check_override(space.base, {**activation, param.name: value}, where, value,
                           getattr(space, "other_settings", {}))


# ---- the study section ----------------------------------------------------------------------------
def settle_study(space: SearchSpace) -> StudySettings:
    """Check `space.study`; return new settings with the default metric and num_samples filled in.

    Both defaults depend on the rest of the space (the metrics its trials report, the grid's size),
    so they are settled after it is validated; the parsed settings are left as they were.
    """
    src, study = space.source, space.study
    if study.algorithm != "grid" and not space.params:
        raise ConfigError(f"{src}: search: empty; nothing to search (add parameters, or use `kd-study train`)")
    # metric(s) must be reported by every trial of this base config
    known = space.final_metric_keys()
    if study.objectives is None and study.metric is None:
        study = study.model_copy(update={"metric": next(
            (k for k in known if k.startswith(DEV_MRR_AT_10)),
            next((k for k in known if k.startswith(BEIR_NDCG_AT_10_AVG)), known[0]))})
    for i, metric in enumerate(study.metrics):
        key = "study.metric" if study.objectives is None else f"study.objectives.{i}.metric"
        if metric not in known:
            raise ConfigError(f"{src}: {key}: {metric!r} is not reported by trials of this base config "
                              f"(expected one of: {', '.join(known)})")
    if study.scheduler == "asha" and space.base.eval.intermediate == "subset":
        raise ConfigError(f"{src}: study.scheduler: asha prunes on the study's metric, which `eval.intermediate: "
                          "subset` points do not report (their keys say _subset<N>): use eval.intermediate: full")
    if study.scheduler == "asha" and space.base.eval.every_steps is None:
        raise ConfigError(f"{src}: study.scheduler: asha stops trials on intermediate evaluations: "
                          "set eval.every_steps in the base config or in `fixed`")
    _check_points_to_evaluate(space)
    _check_replicates(space)
    _check_contrasts(space)
    return study.model_copy(update={"num_samples": _num_samples(space)})


def _check_searched_value(where: str, dotted: str, value: Any, by_name: dict) -> None:
    """`dotted` is a searched parameter and `value` lies inside its search: the rule for every value a space names."""
    if dotted not in by_name:
        raise ConfigError(f"{where}: not a searched parameter (expected one of: {', '.join(by_name) or 'none'})")
    if not by_name[dotted].spec.contains(value):
        raise ConfigError(f"{where}: {value!r} is outside its search ({by_name[dotted].spec.describe()})")


def _check_points_to_evaluate(space: SearchSpace) -> None:
    """Searched keys, values inside the search, conditions respected, a valid config."""
    by_name = {p.name: p for p in space.params}
    for i, point in enumerate(space.study.points_to_evaluate):
        where = f"{space.source}: study.points_to_evaluate.{i}"
        for dotted, value in point.items():
            _check_searched_value(f"{where}.{dotted}", dotted, value, by_name)
        chosen: dict[str, Any] = {}
        for param in space.params:
            active = space.is_active(param, chosen)
            if param.name in point:
                if not active:
                    raise ConfigError(f"{where}.{param.name}: given, but its condition {param.spec.when} does "
                                      "not hold in this point")
                chosen[param.name] = point[param.name]
        space.trial_config(point)  # a point's combination must be a valid config too


def _check_replicates(space: SearchSpace) -> None:
    """Replicates vary the seed: a searched seed (an A/A control's points) only where every point is listed (a grid,
    or a search that runs just its `points_to_evaluate`, as a confirmation does) and the seeds are ≥ `replicates`
    apart, so each point's seeds (its seed + 0..N-1) are its own; the baseline names searched values."""
    src, study = space.source, space.study
    if study.replicates > 1 and "seed" in space.param_names:
        listed = study.algorithm == "grid" or 0 < study.num_samples <= len(study.points_to_evaluate)
        # a conditional seed (only the A/A arm's points search it): the other points run from the base seed
        seeds = sorted({int(p.get("seed", space.base.seed)) for p in space.initial_points()}) if listed else []
        if not seeds or any(b - a < study.replicates for a, b in zip(seeds, seeds[1:])):
            raise ConfigError(f"{src}: search.seed: with study.replicates: {study.replicates} each point runs seeds "
                              f"seed + 0..N-1; search the seed only where every point is listed (a grid, or "
                              f"points_to_evaluate) with seeds ≥ {study.replicates} apart (an A/A control), else not "
                              "at all")
    by_name = {p.name: p for p in space.params}
    for dotted, value in (study.baseline or {}).items():
        _check_searched_value(f"{src}: study.baseline.{dotted}", dotted, value, by_name)


def _check_contrasts(space: SearchSpace) -> None:
    """Declared contrasts name searched values; in grid mode every `of` point has exactly one `vs` partner."""
    src, study = space.source, space.study
    by_name = {p.name: p for p in space.params}
    names = [contrast_name(c.model_dump()) for c in study.contrasts]
    for i, contrast in enumerate(study.contrasts):
        where = f"{src}: study.contrasts.{i}"
        if names.count(names[i]) > 1:
            raise ConfigError(f"{where}: name {names[i]!r} is declared twice (give each contrast its own `name`)")
        for part in ("of", "vs"):
            for dotted, value in getattr(contrast, part).items():
                _check_searched_value(f"{where}.{part}.{dotted}", dotted, value, by_name)
        for dotted in contrast.within:
            if dotted not in by_name:
                raise ConfigError(f"{where}.within: {dotted!r} is not a searched parameter "
                                  f"(expected one of: {', '.join(by_name) or 'none'})")
            if dotted in contrast.vs:
                raise ConfigError(f"{where}.within: {dotted} is fixed by `vs`; a field is compared or held, not both")
        _check_control(where, contrast)
        if study.algorithm == "grid":
            points = [{p.name: point.get(p.name, space.static_value(p.name)) for p in space.params}
                      for point in space.grid_points()]
            pairs, problems = pair_points(points, contrast.model_dump())
            if problems:
                raise ConfigError(f"{where}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
            if not pairs:
                raise ConfigError(f"{where}: pairs no two grid points (no point matches `of` but not `vs`)")


def _check_control(where: str, contrast) -> None:
    """A positive control may say its direction; an A/A control compares one configuration with other seeds
    (disjoint replicate seeds: `_check_replicates`)."""
    if contrast.expect is not None and contrast.control != "positive":
        raise ConfigError(f"{where}.expect: only a positive control (control: positive) states a direction")
    if contrast.control == "aa":
        if set(contrast.of) != set(contrast.vs) or "seed" not in contrast.vs:
            raise ConfigError(f"{where}.control: an A/A control compares one configuration with disjoint seeds: "
                              f"`of` and `vs` must name the same fields, `seed` among them")
        differing = sorted(k for k in contrast.vs if k != "seed" and not same_value(contrast.of[k], contrast.vs[k]))
        if differing or same_value(contrast.of["seed"], contrast.vs["seed"]):
            raise ConfigError(f"{where}.control: an A/A control's `of` and `vs` differ only in `seed`, got "
                              f"{', '.join(differing) or 'the same seed'}")
        if contrast.margin is not None:
            raise ConfigError(f"{where}.margin: an A/A control has no margin (it must simply not be significant)")


def _num_samples(space: SearchSpace) -> int:
    """Grid mode: the grid's size (every point once, each a valid config); else the file's, or ≥ 10."""
    src, study = space.source, space.study
    if study.algorithm == "grid":
        if study.points_to_evaluate:
            raise ConfigError(f"{src}: study.points_to_evaluate: grid mode evaluates the whole grid; drop it")
        size = len(space.grid_points())
        if study.num_samples is not None and study.num_samples != size:
            raise ConfigError(f"{src}: study.num_samples: grid mode runs each of the {size} grid points once: "
                              f"leave num_samples out or set it to {size} (got {study.num_samples})")
        for point in space.grid_points():
            try:
                space.trial_config(point)
            except ConfigError as error:
                raise ConfigError(f"{src}: study.grid: point {point} is invalid: {error}") from None
        return size
    if study.num_samples is None:
        return max(10, len(study.points_to_evaluate))
    if study.num_samples < len(study.points_to_evaluate):
        raise ConfigError(f"{src}: study.num_samples: {study.num_samples} is fewer than the "
                          f"{len(study.points_to_evaluate)} points_to_evaluate")
    return study.num_samples
