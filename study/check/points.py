"""Which trials `kd-study check` derives: the grid, or the space's corners plus a seeded random sample.

A corner is every combination of each searched field's extremes (`when` honoured): where a
dimension's value is monotone in a field, its range over the space is reached there; the random
sample covers the interior the way a random search would draw it.
"""
from __future__ import annotations

import numpy as np

from study.space.params import ParamSpec, Scalar, SearchParam
from study.space.schema import SearchSpace

MAX_CORNERS = 4096


def check_points(space: SearchSpace, n_sample: int = 16) -> tuple[list[dict[str, Scalar]], str]:
    """The grid (grid mode), else the corners — each searched field at its extremes, `when` honoured —
    plus `n_sample` points drawn by Optuna's seeded RandomSampler through the space's define-by-run."""
    if space.study.algorithm == "grid":
        points = space.grid_points()
        return points, f"all {len(points)} grid points"
    extremes = [SearchParam(p.name, ParamSpec(type="categorical", choices=_distinct(p.spec.extremes()),
                                              when=p.spec.when)) for p in space.params]
    from study.space import grid

    corners = grid.grid_points(extremes, space.is_active, space.source)
    note = f"{len(corners)} corners"
    if len(corners) > MAX_CORNERS:
        keep = np.random.default_rng(space.study.seed).choice(len(corners), MAX_CORNERS, replace=False)
        corners = [corners[i] for i in sorted(keep)]
        note = f"{MAX_CORNERS} of {note} (seeded)"
    sampled = sample_points(space, n_sample)
    return corners + sampled + list(space.study.points_to_evaluate), \
        f"{note} + {len(sampled)} sampled + {len(space.study.points_to_evaluate)} points to evaluate"


def sample_points(space: SearchSpace, n: int) -> list[dict[str, Scalar]]:
    """`n` points of the space as a random search would draw them (seeded by study.seed)."""
    if n <= 0 or not space.params:
        return []
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # this throwaway study only: `run`'s own is logged
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.study.seed))
        points = []
        for _ in range(n):
            trial = study.ask()
            space.define_by_run(trial)
            points.append(dict(trial.params))
            study.tell(trial, 0.0)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return points


def _distinct(values: list[Scalar]) -> list[Scalar]:
    out: list[Scalar] = []
    for value in values:
        if not any(value == v and type(value) is type(v) for v in out):
            out.append(value)
    return out
