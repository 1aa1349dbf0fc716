"""The space's declared contrasts (`study.contrasts`), tested on one metric: one row per pair of points.

Each declared contrast pairs points (study/space/contrasts.py); each pair is tested as the sensitivity
tables test a cell against the best (`study.report.stats`): the difference of the two points'
means on the queries and seed replicates both have, its 95% CI and two-sided p from a paired
t-test over queries on the per-query differences averaged over seeds, and the minimum detectable
difference (MDE) at 80% power from the same standard error. The p-values are corrected (Holm by
default) within each family, across every pair of every contrast in it, for this metric.
`result` is "better" / "worse" (the `of` point is significantly better / worse than its `vs`
point, corrected, in the metric's mode) or "n.s.", and "untested" without per-query values.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from study.space.contrasts import DEFAULT_FAMILY, contrast_name, describe, pair_points, same_value
import study.report.stats as stats
from study.report.best import check_mode
from study.report.runs import PerQuery
from study.report.sensitivity import CORRECTION, SIGNIFICANCE, cell_values, paired_values
from study.report.text import is_missing, markdown_table, plain

COLUMNS = ["family", "contrast", "of", "vs", "at", "of_point", "vs_point", "mean_of", "mean_vs", "difference",
           "ci_low", "ci_high", "p_value", "p_adjusted", "n_queries", "n_seeds", "mde", "sd_seed", "result"]
RESULTS = ("better", "worse", "n.s.", "untested")


def _points(trials: pd.DataFrame, metric: str) -> list[tuple[Any, pd.DataFrame]]:
    """(point id, its finished runs with the metric), in first-run order."""
    data = trials.dropna(subset=[metric])
    key = data["point"] if "point" in data.columns else data["trial_id"]
    return list(data.groupby(key, sort=False))


def declared_contrasts(trials: pd.DataFrame, per_query: PerQuery | None, metric: str,
                       contrasts: Sequence[Mapping[str, Any]], *, params: Sequence[str] = (), mode: str = "max",
                       correction: str = CORRECTION, significance: float = SIGNIFICANCE) -> tuple[pd.DataFrame, list[str]]:
    """(one row per tested pair, notes): the declared contrasts of a study on `metric` (columns: COLUMNS).

    `params` are the fields that tell the study's points apart (`varying_params`). `vs` names the
    baseline point by the contrast's `vs` fields, `of` the compared point by those and every other
    field of `params` (not held by `within`) that differs from its baseline or between the
    contrast's compared points (γ1, α of a WKL cell), `at` by the `within` values; `of_point`/`vs_point` hold all of them, for a
    finding to select rows by.
    """
    check_mode(mode)
    points = _points(trials, metric)
    declared = {f for c in contrasts for f in [*(c.get("of") or {}), *c["vs"], *(c.get("within") or [])]}
    missing = sorted(f for f in declared if f not in trials.columns)
    if missing:
        return pd.DataFrame(columns=COLUMNS), [f"declared contrasts: trials have no column(s) {', '.join(missing)}"]
    fields = list(dict.fromkeys([*(p for p in params if p in trials.columns), *sorted(declared)]))
    values = [{f: plain(runs[f].iloc[0]) for f in fields} for _, runs in points]
    rows, notes, cells = [], [], {}
    for spec in contrasts:
        name, family = contrast_name(spec), spec.get("family") or DEFAULT_FAMILY
        pairs, problems = pair_points(values, spec)
        notes += [f"contrast {name}: {p}" for p in problems]
        within = list(spec.get("within") or [])
        # a field that tells this contrast's `of` points apart names each of them (γ1 and α of WKL cells)
        apart = {k for k in fields if len({repr(values[i][k]) for i, _ in pairs}) > 1}
        for i, j in pairs:
            of_runs, vs_runs = points[i][1], points[j][1]
            for index, runs in ((i, of_runs), (j, vs_runs)):
                if index not in cells:
                    cells[index] = cell_values(runs, per_query or {}, metric)
            row = {"family": family, "contrast": name,
                   "of": describe({k: values[i][k] for k in [*spec["vs"], *fields] if k in spec["vs"] or (
                       k not in within and (k in apart or not same_value(values[i][k], values[j][k])))}),
                   "vs": describe({k: values[j][k] for k in spec["vs"]}),
                   "at": describe({f: values[i][f] for f in within}),
                   "of_point": values[i], "vs_point": values[j],
                   "mean_of": float(of_runs[metric].mean()), "mean_vs": float(vs_runs[metric].mean())}
            row.update(_test(cells[i], cells[j], row))
            rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table, notes
    for family, index in table.groupby("family", sort=False).groups.items():
        table.loc[index, "p_adjusted"] = stats.adjust_p_values(table.loc[index, "p_value"].to_numpy(float), correction)
    table["result"] = [_result(d, p, mode, significance) for d, p in zip(table["difference"], table["p_adjusted"])]
    table.attrs.update(metric=metric, mode=mode, correction=correction, significance=significance)
    return table, notes


def _test(a: pd.DataFrame | None, b: pd.DataFrame | None, row: Mapping[str, Any]) -> dict[str, Any]:
    """The pair's paired contrast (or means only without per-query values)."""
    nan = math.nan
    if a is None or b is None:
        return dict(difference=row["mean_of"] - row["mean_vs"], ci_low=nan, ci_high=nan, p_value=nan,
                    p_adjusted=nan, n_queries=0, n_seeds=0, mde=nan, sd_seed=nan)
    contrast = stats.paired_contrast(*paired_values(a, b))
    return dict(difference=contrast.difference, ci_low=contrast.low, ci_high=contrast.high, p_value=contrast.p_value,
                p_adjusted=nan, n_queries=contrast.n_queries, n_seeds=contrast.n_seeds,
                mde=stats.minimum_detectable_difference(contrast.se, contrast.df), sd_seed=contrast.sd_seed)


def _result(difference: float, p_adjusted: float, mode: str, significance: float) -> str:
    if is_missing(p_adjusted):
        return "untested"
    if p_adjusted >= significance:
        return "n.s."
    ahead = difference > 0 if mode == "max" else difference < 0
    return "better" if ahead else "worse"


def contrasts_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """The rows as a Markdown table: pair, means, difference [95% CI], raw and corrected p, MDE, result."""
    def number(value: float, fmt: str = f".{digits}f") -> str:
        return "—" if is_missing(value) else format(value, fmt)

    rows = [[r.family, r.contrast, r.of, r.vs, r.at or "—", number(r.mean_of), number(r.mean_vs),
             f"{number(r.difference, f'+.{digits}f')} [{number(r.ci_low, f'+.{digits}f')}, "
             f"{number(r.ci_high, f'+.{digits}f')}]", number(r.p_value, ".3g"), number(r.p_adjusted, ".3g"),
             number(r.mde), f"{int(r.n_queries)} × {int(r.n_seeds)}", r.result]
            for r in table.itertuples()]
    return markdown_table(["family", "contrast", "of", "vs", "at", "mean of", "mean vs", "difference [95% CI]",
                           "p", "corrected p", "MDE", "queries × seeds", "result"], rows)


def contrasts_legend(table: pd.DataFrame) -> str:
    correction = stats.CORRECTIONS[table.attrs.get("correction", CORRECTION)]
    significance = table.attrs.get("significance", SIGNIFICANCE)
    return (f"Declared in the space before the study ran (`study.contrasts`). difference = mean of − mean vs "
            f"on the queries and seed replicates both points have, with its 95% CI; test: two-sided paired "
            f"t-test over queries (per-query values averaged over seeds); corrected p: {correction} within each "
            f"family, for this metric; MDE: the difference this test detects with {stats.POWER:.0%} power at "
            f"α = {stats.ALPHA:g} (uncorrected); result: better / worse = corrected p < {significance:g}, "
            "n.s. otherwise.")


def median_mde(table: pd.DataFrame) -> float:
    """The median MDE over a table's tested pairs (NaN when none was tested)."""
    finite = table["mde"].to_numpy(dtype=float) if len(table) else np.array([])
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan
