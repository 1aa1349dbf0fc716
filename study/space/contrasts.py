"""Contrasts declared in the space before the study runs (`study.contrasts`): which point is compared with which.

A contrast `{of: {...}, vs: {...}, within: [...]}` pairs every point whose values match `of`
(default: every point that does not match `vs`) with the one point that matches `vs` at the same
values of the `within` fields, e.g. the score-distribution paper's "stratified vs random per loss
and K":

    contrasts:
      - {name: stratified_vs_random, of: {sampler.name: stratified}, vs: {sampler.name: random},
         within: [loss.name, sampler.k]}

Contrasts sharing a `family` are corrected together (Holm by default); without one, every
declared contrast of the study is one family, the conservative reading of "declared before the
study runs". The tests themselves are the report's (`study.report.contrasts`); here is only the
pairing, shared by the space's validation (over the grid's points) and the report (over the
points that ran), so the two cannot pair differently.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_FAMILY = "declared"


def same_value(a: Any, b: Any) -> bool:
    """A logged param equals a space file value: numbers by value (8 == 8.0), anything else by its text."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def matches(values: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    """Whether a point's `values` hold every `field: value` of `selector` (an empty selector matches all)."""
    return all(key in values and same_value(values[key], want) for key, want in selector.items())


def describe(selector: Mapping[str, Any]) -> str:
    """`sampler.name=stratified, sampler.k=8`."""
    return ", ".join(f"{k}={_plain(v)}" for k, v in selector.items())


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def contrast_name(spec: Mapping[str, Any]) -> str:
    """The contrast's `name`, or `<of> vs <vs>` from its selectors."""
    if spec.get("name"):
        return str(spec["name"])
    of = describe(spec.get("of") or {}) or "every other point"
    return f"{of} vs {describe(spec['vs'])}"


def pair_points(points: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> tuple[list[tuple[int, int]], list[str]]:
    """(pairs (i of, j vs) in point order, problems): each `of` point with the `vs` point at its `within` values.

    A point matching both `of` and `vs` is a baseline, not compared. Problems name an `of` point
    with no partner, or with several (a field that tells them apart is missing from `within`).
    """
    of, vs, within = spec.get("of") or {}, spec["vs"], list(spec.get("within") or [])
    baselines = [j for j, p in enumerate(points) if matches(p, vs)]
    pairs, problems = [], []
    for i, point in enumerate(points):
        if i in baselines or not matches(point, of):
            continue
        at = {f: point.get(f) for f in within}
        partners = [j for j in baselines if all(f in points[j] and same_value(points[j][f], at[f]) for f in within)]
        where = f" at {describe(at)}" if within else ""
        if not partners:
            problems.append(f"point ({describe(_own(point, vs, within))}) has no `vs` point ({describe(vs)}){where}")
        elif len(partners) > 1:
            problems.append(f"point ({describe(_own(point, vs, within))}) has {len(partners)} `vs` points "
                            f"({describe(vs)}){where}: add the fields that tell them apart to `within`")
        else:
            pairs.append((i, partners[0]))
    return pairs, problems


def _own(point: Mapping[str, Any], vs: Mapping[str, Any], within: list[str]) -> dict[str, Any]:
    """The point's values that name it in a message: the `vs` fields, then `within`, then the rest."""
    keys = list(vs) + [f for f in within if f not in vs] + [k for k in point if k not in vs and k not in within]
    return {k: point[k] for k in keys if k in point}
