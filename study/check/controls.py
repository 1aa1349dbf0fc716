"""Which checked points serve only a declared positive control: the auxiliary-term warning does not apply to them.

A positive control (`control: positive`, study/space/schema.py's ContrastSpec) reruns a configuration whose
effect was measured before (docs/recipe.md: lr 3e-5 vs 8e-5 at two epochs, with the in-batch term), so it
keeps that configuration's auxiliary terms on purpose: it shows the study can detect a known effect and is
no arm of a claim. `kd-study check` still prints the share at those points, as `ok` with this reason.
Points that any other contrast (a claim's, or the A/A control's) reads keep the warning.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from study.space.contrasts import pair_points
from study.space.schema import SearchSpace

EXEMPT_DIMENSIONS = ("auxiliary gradient share",)


def positive_control_only(space: SearchSpace, points: Sequence[dict[str, Any]]) -> set[int]:
    """Indices of `points` that some positive control pairs and no other declared contrast does."""
    full = [{p.name: point.get(p.name, space.static_value(p.name)) for p in space.params} for point in points]
    control, compared = set(), set()
    for contrast in space.study.contrasts:
        pairs, _ = pair_points(full, contrast.model_dump())
        (control if contrast.control == "positive" else compared).update(i for pair in pairs for i in pair)
    return control - compared


def exempt_positive_controls(space: SearchSpace, points: Sequence[dict[str, Any]], dimensions: list[Any]) -> list[Any]:
    """`dimensions`, the auxiliary-term warning downgraded to `ok` (with the reason) at the positive-control-only
    points: a control keeps its measured configuration's terms on purpose."""
    only = [points[i] for i in sorted(positive_control_only(space, points))]
    for dim in dimensions:
        if dim.dimension not in EXEMPT_DIMENSIONS:
            continue
        dim.results = [(point, replace(derived, level="ok", why="", text=f"{derived.text}; a positive control's "
                                       "point (its known effect was measured with this term)")
                        if derived.level == "warning" and point in only else derived)
                       for point, derived in dim.results]
    return dimensions
