"""The study's configurations (points) with their CIs, and the set statistically tied with the best one.

A point is one configuration of the searched params; its seed runs are its replicates (POINT_TAG,
REPLICATE_TAG; a one-seed study has one run per point). A point's value is its mean over its seed
runs; its 95% CI, its contrast with the best point and the correction across all points are the
sensitivity tables' (`study.report.stats`): bootstrap over queries and seeds, paired t-test on the
shared queries and replicates, Holm (or BH) across the study's points. The tied set is the best
point and every point not significantly different from it after correction; `kd-study export
--tied` writes it, the report lists it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

import study.report.stats as stats
from study.report.best import best_position, check_mode
from study.report.runs import PerQuery, ReportError
from study.report.cells import cell_values, paired_values
from study.report.sensitivity import CORRECTION, SIGNIFICANCE

# Config fields that differ between runs without making a different configuration.
NOT_A_CONFIGURATION = ("name", "seed", "output_dir", "cache_dir")


def varying_params(trials: pd.DataFrame, param_names: tuple[str, ...] | list[str]) -> list[str]:
    """The params that tell the study's points apart (searched fields; not the name, seed or folders)."""
    return [p for p in param_names if p in trials.columns and p not in NOT_A_CONFIGURATION
            and not p.endswith(".seed") and trials[p].astype(str).nunique() > 1]


def point_table(trials: pd.DataFrame, metric: str, per_query: PerQuery | None, params: list[str], *,
                mode: str = "max", correction: str = CORRECTION, significance: float = SIGNIFICANCE,
                n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """One row per point in first-run order: `point`, `params`, n_seeds, mean, ci_low, ci_high, p vs best, tied.

    Columns: point, run_id (its first replicate's run), the `params`, n_seeds, `mean`, `ci_low`,
    `ci_high`, `diff_vs_best`, `p_value_vs_best`, `p_adjusted_vs_best`, `n_queries`, `best`,
    `tied_with_best` (the best point, and points whose corrected p ≥ `significance`; without
    per-query values only the best). attrs: `tested` (bool), `correction`.
    """
    check_mode(mode)
    data = trials.dropna(subset=[metric])
    if data.empty:
        raise ReportError(f"no finished trial has metric {metric!r}")
    points = data["point"] if "point" in data.columns else data["trial_id"]
    rows, values = [], []
    for point, runs in data.groupby(points, sort=False):
        first = runs.iloc[0]
        v = cell_values(runs, per_query or {}, metric)
        low, high = stats.bootstrap_ci(v.to_numpy(), n_resamples=n_resamples) if v is not None else (math.nan,) * 2
        rows.append({"point": point, "run_id": first["run_id"], **{p: first[p] for p in params},
                     "n_seeds": len(runs), "mean": float(runs[metric].mean()), "ci_low": low, "ci_high": high})
        values.append(v)
    table = pd.DataFrame(rows)
    best = best_position(table["mean"], mode)
    if best is None:
        raise ReportError(f"no finished trial has a finite {metric!r}")
    diff, p_value, n_queries = np.full(len(table), np.nan), np.full(len(table), np.nan), np.zeros(len(table), int)
    if values[best] is not None:
        for i, v in enumerate(values):
            if i == best or v is None:
                continue
            contrast = stats.paired_contrast(*paired_values(v, values[best]))
            diff[i], p_value[i], n_queries[i] = contrast.difference, contrast.p_value, contrast.n_queries
    adjusted = stats.adjust_p_values(p_value, correction)
    is_best = np.arange(len(table)) == best
    table = table.assign(diff_vs_best=diff, p_value_vs_best=p_value, p_adjusted_vs_best=adjusted,
                         n_queries=n_queries, best=is_best,
                         tied_with_best=stats.tied_with_best(adjusted, is_best, significance))
    table.attrs.update(tested=bool(np.isfinite(p_value).any()), correction=correction, metric=metric, mode=mode)
    return table


def tied_points(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of `point_table` tied with the best, the best first, then by mean in the study's mode."""
    tied = table[table["tied_with_best"]]
    ascending = table.attrs.get("mode", "max") == "min"
    return tied.sort_values(["best", "mean"], ascending=[False, ascending], kind="stable")


def describe(row: pd.Series, params: list[str]) -> str:
    """`loss.name=kl, sampler.k=8`: a point by its varying params."""
    return ", ".join(f"{p}={_plain(row[p])}" for p in params) or str(row["point"])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
