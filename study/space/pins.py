"""`--set FIELD=VALUE`: the options parsed (`parse_pins`), and the field fixed for every trial and no longer searched.

`kd-study run --help` promises that a `--set` on a searched field stops searching it. Searching a
field is not only its `search` entry: `study.grid` searches it too, and `points_to_evaluate`,
`baseline` and `contrasts` name its values. Pinned, the field goes into `fixed` and out of all of
them, so `--set sampler.k=4` on the quickstart runs its six points at K = 4 instead of failing
with "not a searched parameter":

- `search` and `study.grid`: the field's entry is dropped;
- `study.points_to_evaluate`: the field is dropped from each point (points that become equal are
  kept once);
- `study.baseline`: the field is dropped (an empty baseline means none);
- `study.contrasts`: the field is dropped from `of`, `vs` and `within`; a contrast left with an
  empty `vs` compared only that field and is dropped.

Works on the raw mapping, before validation, so what is left is validated as any space file is.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from trainables.config import ConfigError
from trainables.yaml_files import safe_load_unique


def parse_pins(items: Sequence[str]) -> dict[str, Any]:
    """`--set FIELD=VALUE` options as {field: YAML value}; a malformed one, or a field given twice, is one ConfigError."""
    pins: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. optim.epochs=1")
        if key in pins:
            raise ConfigError(f"--set {key}: given twice; give it once")
        try:
            pins[key] = safe_load_unique(value) if value.strip() else None
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
    return pins


def pin_fields(raw: dict[str, Any], pin: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` (a space file's mapping) with each field of `pin` fixed to its value and no longer searched."""
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    fixed = raw.get("fixed") if isinstance(raw.get("fixed"), dict) else {}
    pinned = {**raw, "search": _without(search, pin), "fixed": {**fixed, **pin}}
    if isinstance(raw.get("study"), dict):
        pinned["study"] = _unsearched(raw["study"], pin)
    return pinned


def _unsearched(study: dict[str, Any], pin: Mapping[str, Any]) -> dict[str, Any]:
    study = dict(study)
    if isinstance(study.get("grid"), dict):
        study["grid"] = _without(study["grid"], pin)
    if isinstance(study.get("points_to_evaluate"), list):
        points = [_without(p, pin) if isinstance(p, dict) else p for p in study["points_to_evaluate"]]
        keys = [json.dumps(p, sort_keys=True, default=str) for p in points]
        study["points_to_evaluate"] = [p for i, p in enumerate(points) if keys.index(keys[i]) == i]
    if isinstance(study.get("baseline"), dict):
        study["baseline"] = _without(study["baseline"], pin) or None
    if isinstance(study.get("contrasts"), list):
        study["contrasts"] = [c for c in (_unpinned_contrast(c, pin) for c in study["contrasts"]) if c is not None]
    return study


def _unpinned_contrast(contrast: Any, pin: Mapping[str, Any]) -> Any:
    if not isinstance(contrast, dict):
        return contrast
    contrast = dict(contrast)
    for part in ("of", "vs"):
        if isinstance(contrast.get(part), dict):
            contrast[part] = _without(contrast[part], pin)
    if isinstance(contrast.get("within"), list):
        contrast["within"] = [field for field in contrast["within"] if field not in pin]
    return None if contrast.get("vs") == {} else contrast


def _without(mapping: dict[str, Any], pin: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in pin}
