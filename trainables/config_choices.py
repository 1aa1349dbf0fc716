"""The trial config's `loss:` and `sampler:` blocks: one typed model per registered name (a discriminated union).

`loss: {name: wkl, gamma1: 2}` validates as the registry's `wkl` settings model; a field another loss
declares is an error ("gamma1=2.0 is a setting of loss wkl, not of 'kl'"), except at its default value:
configs written before the union (study.json, checkpoints, exported configs) dumped every loss's fields
into one flat block, so a KL block carrying WKL's defaults still loads (the defaults are dropped).

A search space's base and fixed values are settings for whichever loss a trial draws (quickstart's base
sets WKL's refresh interval on a `kl` base that searches `loss.name`): spaces validate with the context
`{"other_settings": "drop"}`, which drops another loss's settings whatever their value.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Callable, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, PrivateAttr, Tag, TypeAdapter, ValidationInfo

from trainables.registry import loss_entries, other_fields, sampler_entries

DROP_OTHER_SETTINGS = {"other_settings": "drop"}   # validation context of a search space's configs


def _union(kind: str, entries: Callable[[], dict[str, Any]], default: str) -> Any:
    """`Annotated[Union[model of each entry], ...]` chosen by `name` (default `default`), with the before-step above."""
    models = {name: entry.settings for name, entry in entries().items()}
    others = other_fields(list(models.values()))

    def tag(value: Any) -> str | None:
        return value.get("name", default) if isinstance(value, dict) else getattr(value, "name", None)

    def prepare(raw: Any, info: ValidationInfo) -> Any:
        if not isinstance(raw, dict):
            return raw
        name = raw.get("name", default)
        if name not in models:
            raise ValueError(f"unknown {kind} {name!r}: expected one of {', '.join(models)}")
        own = models[name].model_fields
        drop_all = (info.context or {}).get("other_settings") == "drop"
        kept = {}
        for key, value in raw.items():
            if key in own or key not in others:
                kept[key] = value          # own settings, or an unknown key (the model says "unknown key")
                continue
            owners, defaults = others[key]
            if drop_all or any(value == defaults[o] for o in owners):
                continue
            raise ValueError(f"{key}={value!r} is a setting of {kind} {', '.join(sorted(owners))}, not of {name!r}")
        return kept

    choices = tuple(Annotated[model, Tag(name)] for name, model in models.items())
    return Annotated[Annotated[Union[choices], Discriminator(tag)], BeforeValidator(prepare)]


LossBlock = _union("loss", loss_entries, "kl")
SamplerBlock = _union("sampler", sampler_entries, "stratified")


CHOSEN_BLOCKS = ("loss", "sampler")   # the trial config's blocks whose model its `name` picks


def other_settings(raw: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings a raw config's `loss:` / `sampler:` blocks hold for other losses / samplers than `chosen`
    (a validated config's dump), by block: what a space keeps for the trials that draw those."""
    out: dict[str, dict[str, Any]] = {}
    for block in CHOSEN_BLOCKS:
        given = raw.get(block)
        if isinstance(given, Mapping):
            out[block] = {k: v for k, v in given.items() if k not in chosen.get(block, {})}
    return {block: found for block, found in out.items() if found}


def with_other_settings(raw: dict[str, Any], other: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`raw` (a config dump) with `other` settings under its own: a trial of another loss finds them there."""
    raw = dict(raw)
    for block, settings in other.items():
        raw[block] = {**settings, **raw.get(block, {})}
    return raw


_LOSS, _SAMPLER = TypeAdapter(LossBlock), TypeAdapter(SamplerBlock)


def loss_config(**raw: Any) -> Any:
    """The `loss:` block `raw` (`loss_config(name="wkl", gamma1=2.0)`) as its registered settings model."""
    return _LOSS.validate_python(raw)


def sampler_config(**raw: Any) -> Any:
    """The `sampler:` block `raw` as its registered settings model."""
    return _SAMPLER.validate_python(raw)


def block_for(block: str, raw: Mapping[str, Any]) -> Any:
    """A `loss:` / `sampler:` block from `raw`, other losses' / samplers' settings dropped (as a space's trials)."""
    return (_LOSS if block == "loss" else _SAMPLER).validate_python(dict(raw), context=DROP_OTHER_SETTINGS)


# ---- pickles of older versions ----------------------------------------------------------------------
class _Pickled(BaseModel):
    model_config = ConfigDict(extra="allow")

    def __setstate__(self, state: dict[str, Any]) -> None:
        fields = dict(state.get("__dict__") or {})
        extra = {key: fields.pop(key) for key in list(fields) if key not in type(self).model_fields}
        super().__setstate__({**state, "__dict__": fields,
                              "__pydantic_extra__": {**(state.get("__pydantic_extra__") or {}), **extra}})


class PickledLossConfig(_Pickled):
    """A flat `loss:` block as versions before the per-loss models pickled it (`trainables.config.LossConfig`,
    inside a resumed study's searcher): read back as it was; its dump validates as the block of its name."""

    name: str = "kl"
    _scale: float | None = PrivateAttr(None)


class PickledSamplerConfig(_Pickled):
    """A `sampler:` block pickled before the per-sampler models (`trainables.config.SamplerConfig`)."""

    name: str = "stratified"


for _cls, _old in ((PickledLossConfig, "LossConfig"), (PickledSamplerConfig, "SamplerConfig")):
    _cls.__module__, _cls.__qualname__ = "trainables.config", _old   # where older pickles name them


class UpgradePickledBlocks:
    """Mixin of the configs that hold `loss:` / `sampler:` blocks: one unpickled from an older version holds a
    flat block (above); it becomes the block of its name, other losses' settings dropped."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        for block in CHOSEN_BLOCKS:
            value = self.__dict__.get(block)
            if isinstance(value, _Pickled):
                self.__dict__[block] = block_for(block, value.model_dump())
