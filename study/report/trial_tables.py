"""Per-sampler and per-trial tables: sampled teacher-score diagnostics and where each trial's time went."""
from __future__ import annotations

import pandas as pd

from study.report.text import ordered
from trainables.outputs import SAMPLED_SCORE_ENTROPY as ENTROPY_METRIC
from trainables.outputs import SAMPLED_SCORE_VARIANCE as VARIANCE_METRIC
from trainables.outputs import TIME_PREFIX


def sampler_diagnostics(df: pd.DataFrame) -> pd.DataFrame | None:
    """Mean variance and entropy of the sampled teacher scores per sampler (and K): why stratified should win."""
    diagnostics = [m for m in (VARIANCE_METRIC, ENTROPY_METRIC) if m in df.columns and df[m].notna().any()]
    if "sampler.name" not in df.columns or not diagnostics:
        return None
    keys = ["sampler.name"] + (["sampler.k"] if "sampler.k" in df.columns else [])
    data = df.dropna(subset=keys)
    grouped = data.groupby(keys, sort=False)
    table = grouped[diagnostics].mean()
    table.insert(0, "n_trials", grouped.size())
    table = table.reset_index()
    order = {v: i for i, v in enumerate(ordered(table["sampler.name"]))}
    table = table.sort_values(keys, key=lambda s: s.map(order) if s.name == "sampler.name" else s)
    return table.rename(columns={VARIANCE_METRIC: "mean sampled-score variance",
                                 ENTROPY_METRIC: "mean sampled-score entropy"}).reset_index(drop=True)


def _time_order(column: str) -> tuple[int, str]:
    for i, part in enumerate(("teacher", "train", "eval", "overhead", "wall")):
        if part in column[len(TIME_PREFIX):]:
            return i, column
    return 5, column


def trial_times(df: pd.DataFrame) -> pd.DataFrame | None:
    """Per-trial timing metrics (TIME_PREFIX; teacher, train, eval, overhead first), with the config that ran."""
    times = sorted((c for c in df.columns if c.startswith(TIME_PREFIX) and df[c].notna().any()), key=_time_order)
    if not times:
        return None
    config = [c for c in ("loss.name", "sampler.name", "sampler.k", "seed") if c in df.columns]
    return df[["trial_id", "run_id"] + config + times].reset_index(drop=True)


def with_mean_row(times: pd.DataFrame) -> pd.DataFrame:
    """Trial times with short run ids and a last row of means: the form the report shows."""
    shown = times.assign(run_id=times["run_id"].str[:8])
    mean = {c: (shown[c].mean() if c.startswith(TIME_PREFIX) else "") for c in shown.columns}
    mean["trial_id"] = "mean"
    return pd.concat([shown, pd.DataFrame([mean])], ignore_index=True)
