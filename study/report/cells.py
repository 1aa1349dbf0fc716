"""A sensitivity cell's values and how two cells are paired for a contrast.

A cell's values are a queries × seeds matrix (one column per replicate index); two cells are
compared on the queries and replicates both have; a cell's baseline partner is the baseline the
space names at the cell's own value of any axis the baseline leaves open. The sensitivity tables,
the declared contrasts and the points table all pair cells through these functions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

import study.report.stats as stats
from study.report.text import fmt_label
from study.space.contrasts import same_value


def cell_values(runs: pd.DataFrame, per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
                metric: str) -> pd.DataFrame | None:
    """A cell's queries × seeds values: per-query values of its runs, one column per replicate (runs averaged).

    `runs` has `run_id` and, when the study ran replicates, `replicate`; None when no run has
    per-query values of `metric`.
    """
    replicates = runs["replicate"] if "replicate" in runs.columns else pd.Series(0, index=runs.index)
    columns: dict[Any, list[pd.Series]] = {}
    for run_id, replicate in zip(runs["run_id"], replicates):
        if run_id in per_query and metric in per_query[run_id]:
            columns.setdefault(replicate, []).append(pd.Series(dict(per_query[run_id][metric]), dtype=float))
    if not columns:
        return None
    return pd.DataFrame({rep: pd.concat(series, axis=1).mean(axis=1) for rep, series in sorted(columns.items())})


def paired_values(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two cells' values on their shared queries and replicates (seed means per query when they share none)."""
    shared = [c for c in a.columns if c in b.columns]
    if shared:
        a, b = a[shared], b[shared]
    else:
        a, b = a.mean(axis=1).to_frame(), b.mean(axis=1).to_frame()
    k = a.shape[1]
    joined = pd.concat([a.set_axis(range(k), axis=1), b.set_axis(range(k, 2 * k), axis=1)], axis=1,
                       join="inner").dropna()
    return joined.iloc[:, :k].to_numpy(), joined.iloc[:, k:].to_numpy()


def paired_test(values: pd.Series, best: pd.Series) -> tuple[float, float, int]:
    """(p-value, mean difference values - best, number of matched queries) of a two-sided paired t-test (one seed)."""
    a, b = paired_values(values.to_frame(0), best.to_frame(0))
    contrast = stats.paired_contrast(a, b)
    return contrast.p_value, contrast.difference, contrast.n_queries


def baseline_partners(data: pd.DataFrame, rows: str, cols: str, cells: Sequence[tuple[Any, Any]],
                      baseline: Mapping[str, Any]) -> tuple[dict[tuple[Any, Any], tuple[Any, Any]], str | None]:
    """({cell: its baseline cell}, note): the baseline at the cell's own value of any axis the baseline leaves open.

    A baseline key off the table's axes must hold for every run of the table (e.g. `loss.name: kl`
    in the KL sampler × K table); otherwise the table has no baseline and the note says why.
    """
    if not baseline:
        return {}, None
    for key, value in baseline.items():
        if key in (rows, cols):
            continue
        if key not in data.columns or not data[key].map(lambda v: same_value(v, value)).all():
            return {}, f"baseline ({_baseline_text(baseline)}) is not in this table ({key} differs)"
    if rows not in baseline and cols not in baseline:
        return {}, f"baseline ({_baseline_text(baseline)}) fixes neither axis of this table: no baseline contrasts"

    def pin(axis: str, own: Any) -> Any:
        if axis not in baseline:
            return own
        return next((c for c in (r if axis == rows else k for r, k in cells) if same_value(c, baseline[axis])), None)

    partners = {}
    for cell in cells:
        partner = (pin(rows, cell[0]), pin(cols, cell[1]))
        if partner in cells:
            partners[cell] = partner
    if not partners:
        return {}, f"baseline ({_baseline_text(baseline)}) has no runs in this table"
    return partners, None


def _baseline_text(baseline: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_label(v)}" for k, v in baseline.items())
