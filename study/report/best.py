"""Which trial is best: the metric and mode a study is judged by, and the one trial that wins.

The report, the terminal view, the results document and the export all choose through `choose_best`,
so that they never disagree. The metric and mode default to the study's own: its space file's
metric and mode, or its first objective, as its parent run logged them (STUDY_METRIC_PARAM,
STUDY_MODE_PARAM, STUDY_OBJECTIVES_PARAM; see `StudyRuns.objectives`). A metric the study did not
optimise is judged higher-is-better. With replicates (several seed runs per point, the `point`
column), the best is the point with the best mean over its seeds, shown by its first seed run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10

from study.report.runs import META_COLUMNS, ReportError, StudyRuns

DEFAULT_METRICS = (DEV_MRR_AT_10, BEIR_NDCG_AT_10_AVG)
MODES = ("max", "min")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ReportError(f"mode must be 'max' or 'min', got {mode!r}")


def available_metrics(df: pd.DataFrame) -> list[str]:
    """Metric columns with at least one value."""
    names = df.attrs.get("metrics") or [c for c in df.columns if c not in META_COLUMNS
                                        and pd.api.types.is_float_dtype(df[c])]
    return [m for m in names if m in df.columns and df[m].notna().any()]


def resolve_metric(df: pd.DataFrame, metric: str | None, study: str = "") -> str:
    """`metric` if the trials have it; by default the first present of DEFAULT_METRICS (or a `_subset<N>` twin)."""
    available = available_metrics(df)
    where = f" in study {study!r}" if study else ""
    listing = ", ".join(available) if available else "(none)"
    if metric is not None:
        if metric not in available:
            raise ReportError(f"unknown metric {metric!r}{where}; available metrics: {listing}")
        return metric
    for default in DEFAULT_METRICS:
        if default in available:
            return default
    for default in DEFAULT_METRICS:
        twins = sorted(m for m in available if re.fullmatch(re.escape(default) + r"_subset\d+", m))
        if twins:
            return twins[0]
    raise ReportError(f"none of the default metrics ({', '.join(DEFAULT_METRICS)}){where}; "
                      f"pass one of: {listing}")


def mode_for(study: StudyRuns, metric: str) -> str:
    """The study's own mode for `metric` when it optimised it, else "max"."""
    return dict(study.objectives).get(metric, "max")


def best_position(values: Iterable[Any], mode: str = "max") -> int | None:
    """The position of the best finite value: highest for `mode="max"`, lowest for "min"; None if none is finite.

    Ties go to the first; NaN, ±inf, None and non-numbers never win. The one rule every best-trial
    choice uses (`best_trial` here, `study.run.outcome` at the end of a run).
    """
    check_mode(mode)
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    finite = np.flatnonzero(np.isfinite(numbers))
    if not finite.size:
        return None
    pick = np.argmax(numbers[finite]) if mode == "max" else np.argmin(numbers[finite])
    return int(finite[pick])


def best_trial(df: pd.DataFrame, metric: str, mode: str = "max") -> pd.Series:
    """The trial with the best finite value of `metric` (`best_position`: ties to the earliest started)."""
    position = best_position(df[metric] if metric in df.columns else [None] * len(df), mode)
    if position is None:
        raise ReportError(f"no finished trial has metric {metric!r}")
    return df.iloc[position]


@dataclass(frozen=True)
class Best:
    """The study's best trial by `metric` in `mode`."""

    metric: str
    mode: str
    trial: pd.Series


def choose_best(study: StudyRuns, metric: str | None = None, mode: str | None = None) -> Best:
    """The best finished trial of `study`; `metric` and `mode` default to the study's own objective."""
    if mode is not None:
        check_mode(mode)
    df = study.trials
    if df.empty:
        raise ReportError(f"study {study.name!r} has no finished trials ({len(study.excluded)} failed/killed)")
    own = study.objectives[0][0] if study.objectives else None
    metric = resolve_metric(df, metric or own, study.name)
    mode = mode or mode_for(study, metric)
    if "point" in df.columns and df["point"].duplicated().any():
        return Best(metric, mode, best_point(df, metric, mode))
    return Best(metric, mode, best_trial(df, metric, mode))


def best_point(df: pd.DataFrame, metric: str, mode: str = "max") -> pd.Series:
    """The first seed run of the point with the best mean `metric` over its seeds, carrying that mean.

    `best_position` on the points' means, in first-run order, so ties go to the earliest point.
    """
    means = df.groupby("point", sort=False)[metric].mean()
    position = best_position(means, mode)
    if position is None:
        raise ReportError(f"no finished trial has metric {metric!r}")
    trial = df[df["point"] == means.index[position]].iloc[0].copy()
    trial[metric] = means.iloc[position]
    return trial
