"""The exact grid of a space: the product of every parameter's values, honouring `when` conditions.

A parameter whose condition does not hold at a point is left out of it (the trial keeps the
base/fixed value), so `loss.name: [kl, wkl]` × `loss.gamma1: [1, 2, 3] when wkl` is 1 + 3 points,
not 2 × 3: a paper's grid is run exactly once per point, in file order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from trainables.config import ConfigError

from study.space.params import Scalar, SearchParam

IsActive = Callable[[SearchParam, Mapping[str, Any]], bool]


def grid_points(params: Sequence[SearchParam], is_active: IsActive, source: str) -> list[dict[str, Scalar]]:
    """Every point of the grid, in file order, each exactly once; `is_active(param, chosen)` reads `when`."""
    continuous = [p.name for p in params if p.spec.grid_values() is None]
    if continuous:
        raise ConfigError(f"{source}: no grid: {', '.join(continuous)} have continuous ranges")
    return list(_enumerate(list(params), is_active, {}))


def _enumerate(params: list[SearchParam], is_active: IsActive,
               chosen: dict[str, Scalar]) -> Iterator[dict[str, Scalar]]:
    if not params:
        yield dict(chosen)
        return
    first, rest = params[0], params[1:]
    if not is_active(first, chosen):
        yield from _enumerate(rest, is_active, chosen)
        return
    for value in first.spec.grid_values():
        yield from _enumerate(rest, is_active, {**chosen, first.name: value})
