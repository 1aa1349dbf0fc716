"""The results document's pieces that each read one thing: search progress, timings, power, confirmations.

`study.report.document` assembles them; each function here returns Markdown lines (or the numbers a
table is made of) for one section, from a study's runs, its folder or a benchmark file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from study.paths import StudyPaths
from study.report.best import best_trial, mode_for
from study.report.figures import plot_search_progress
from study.report.ranking import kendall_tau
from study.report.runs import ReportError, StudyRuns
from study.report.text import frame_to_markdown, metric_label
from study.track.tags import OVERHEAD_METRIC, WALL_METRIC
from trainables.outputs import CHECKPOINT_SECONDS, EVAL_SECONDS, TRAIN_SECONDS, WORKER_SETUP_SECONDS


class SearchComparison(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    grid: str = Field(description="study that enumerates the space")
    search: str = Field(description="study that searches the same space with a comparable budget")


@dataclass
class DocumentStudy:
    """One study as the document reads it: its runs, its study.json state and its assets record."""

    name: str
    runs: StudyRuns
    state: dict[str, Any]
    assets: dict[str, Any]


def search_progress(df: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Best-so-far of `metric` in the order the trials started: how quickly a search reaches its best."""
    ordered = df.dropna(subset=[metric]).sort_values(["start_time", "trial_id"], kind="stable")
    values = ordered[metric].astype(float).reset_index(drop=True)
    best = values.cummax() if mode == "max" else values.cummin()
    return pd.DataFrame({"trial": np.arange(1, len(values) + 1), "value": values, "best_so_far": best})


def budget_checkpoints(progress: pd.DataFrame, budget: int, fractions=(1 / 3, 2 / 3, 1.0)) -> list[tuple[int, float]]:
    """(trials used, best so far) after each fraction of `budget` trials (NaN when not reached)."""
    out = []
    for fraction in fractions:
        n = max(1, math.ceil(budget * fraction - 1e-9))
        out.append((n, float(progress["best_so_far"].iloc[n - 1]) if len(progress) >= n else float("nan")))
    return out


def time_split(df: pd.DataFrame) -> dict[str, float]:
    """Median seconds per trial (train, eval, overhead, wall, ...) and the median per-trial overhead share.

    Medians, because a trial resumed after an interruption keeps the downtime in its wall time: one
    such trial would move a mean by minutes.
    """
    out = {}
    for label, column in (("train", TRAIN_SECONDS), ("eval", EVAL_SECONDS), ("overhead", OVERHEAD_METRIC),
                          ("worker setup", WORKER_SETUP_SECONDS), ("checkpoints", CHECKPOINT_SECONDS),
                          ("wall", WALL_METRIC)):
        out[label] = float(df[column].median()) if column in df.columns and df[column].notna().any() else float("nan")
    share = df[OVERHEAD_METRIC] / df[WALL_METRIC] if {OVERHEAD_METRIC, WALL_METRIC} <= set(df.columns) else None
    out["overhead_share"] = float(share.median()) if share is not None and share.notna().any() else float("nan")
    return out


def read_assets(name: str, root: str | None) -> dict[str, Any]:
    """The study's assets file (`StudyPaths.assets`: shared pools and teacher scores, timings, cache hits), or {}."""
    path = StudyPaths.of(name, root).assets
    return json.loads(path.read_text()) if path.is_file() else {}


def best_value(runs: StudyRuns, metric: str) -> float:
    """The study's best value of `metric`, judged in the study's own mode; NaN when no trial has one."""
    try:
        return float(best_trial(runs.trials, metric, mode_for(runs, metric))[metric])
    except ReportError:
        return float("nan")


def selection_metric(study: DocumentStudy, metrics: list[str], df: pd.DataFrame) -> str:
    """The metric a study's tables lead with: its recorded metrics, else its objectives, else the document's."""
    own = [metric for metric, _ in study.runs.objectives]
    candidates = list(study.state.get("metrics") or []) + own + metrics
    for metric in candidates:
        if metric in df.columns:
            return metric
    raise ReportError(f"study {study.name!r}: none of the metrics {candidates} was logged")


def power_section(rows: list[dict[str, Any]]) -> list[str]:
    return ["## Power: the minimum detectable difference per study and metric", "",
            "MDE at 80% power, α = 0.05 two-sided at the corrected level of each contrast's family (α/m for m "
            "tests): the true difference the test over queries and seeds detects 4 times in 5, from each "
            "contrast's own standard error and df. `from` says which contrasts: the space's declared ones, else "
            "each sensitivity table's contrasts with its best cell. A difference smaller than the MDE is one the "
            "study was not built to see; a spread of the point means below it means the study cannot order its "
            "points on that metric.", "",
            frame_to_markdown(pd.DataFrame(rows)), ""]


def confirmations_section(names: list[str], root: str | None) -> list[str]:
    """Each study's `kd-study confirm` tables (confirm/<child>.md), after a summary of the rank correlations."""
    summary, bodies = [], []
    for name in names:
        folder = StudyPaths.of(name, root).dir / "confirm"
        files = sorted(folder.glob("*.md")) if folder.is_dir() else []
        if not files:
            bodies += [f"_No confirmation of `{name}` yet: run `kd-study confirm {name} --top 3`._", ""]
            continue
        for path in files:
            table = path.with_suffix(".csv")
            if table.is_file():
                rows = pd.read_csv(table)
                tau, low, high, p = kendall_tau(rows["sweep_mean"].tolist(), rows["confirm_mean"].tolist())
                summary.append({"study": name, "confirmation": path.stem, "points": len(rows), "Kendall τ": tau,
                                "95% CI low": low, "95% CI high": high,
                                "tied with best": int(rows["tied_with_best"].astype(str).eq("True").sum())})
            body = path.read_text().strip().splitlines()
            body = [("###" + line[1:]) if line.startswith("# ") else line for line in body]
            bodies += [*body, ""]
    md = ["## Confirmation: does the sweep's ranking hold?", "",
          "`kd-study confirm NAME --top N` re-runs each sweep's top points with longer training; Kendall's τ "
          "between the sweep's and the confirmation's means of those points, with a 95% bootstrap interval over "
          "points (from each confirmation's CSV).", ""]
    if summary:
        md += [frame_to_markdown(pd.DataFrame(summary), digits=2), ""]
    return md + bodies


def included(base: Path, files: list[str]) -> list[str]:
    """Each file's text under its name; a glob (`bench/results/*.md`) includes every match, sorted."""
    md = []
    names = []
    for name in files:
        matched = sorted(p.relative_to(base).as_posix() for p in base.glob(name)) if any(c in name for c in "*?[") else []
        names += matched or [name]
    for name in names:
        path = base / name
        body = path.read_text().strip() if path.is_file() else f"_{name} is missing: run the benchmark._"
        md += [f"### `{name}`", "", body, ""]
    return md


def comparison_section(comparison: SearchComparison, studies: dict[str, DocumentStudy], metrics: list[str],
                       figures: Path, rel: str) -> list[str]:
    """A grid and a search of the same space: best so far after each third of the grid's budget, and a figure."""
    grid, search = studies.get(comparison.grid), studies.get(comparison.search)
    if grid is None or search is None:
        raise ReportError(f"search_comparisons: {comparison.grid!r} and {comparison.search!r} must be in studies")
    metric = selection_metric(grid, metrics, grid.runs.trials)
    mode = mode_for(grid.runs, metric)
    budget = len(grid.runs.trials)
    curves = {comparison.grid: search_progress(grid.runs.trials, metric, mode),
              comparison.search: search_progress(search.runs.trials, metric, mode)}
    grid_best = best_value(grid.runs, metric)
    stem = f"search_{comparison.grid}_vs_{comparison.search}"
    plot_search_progress(curves, grid_best, metric, figures / f"{stem}.png", mode)
    rows = []
    for label, progress in curves.items():
        marks = budget_checkpoints(progress, budget)
        gap = progress["best_so_far"] - grid_best if mode == "max" else grid_best - progress["best_so_far"]
        reached = progress.index[gap >= -1e-12]
        first = int(progress["trial"].iloc[reached[0]]) if len(reached) else None
        rows.append({"study": label, "trials run": len(progress),
                     **{f"best after {n} trials": value for n, value in marks},
                     "trials to reach the grid's best": first if first is not None else "not reached"})
    return [f"## Grid vs search: `{comparison.grid}` vs `{comparison.search}`", "",
            f"Best {metric_label(metric)} so far after each third of the grid's budget ({budget} trials); "
            f"the grid's best is {grid_best:.4f}. The grid runs its points in a fixed order, so its curve "
            "is only a reference.", "",
            frame_to_markdown(pd.DataFrame(rows)), "", f"![search progress]({rel}/{stem}.png)", ""]


def timing_section(studies: list[DocumentStudy]) -> list[str]:
    """Where a trial's time goes (medians over trials) and what the shared assets cost each study."""
    rows, asset_rows = [], []
    for study in studies:
        split = time_split(study.runs.trials)
        rows.append({"study": study.name, "trials": len(study.runs.trials), "train s": split["train"],
                     "eval s": split["eval"], "overhead s": split["overhead"],
                     "of which worker setup s": split["worker setup"], "of which checkpoints s": split["checkpoints"],
                     "wall s": split["wall"], "overhead share": split["overhead_share"]})
        stats = study.assets.get("stats", {})
        if stats:
            asset_rows.append({"study": study.name, "pools s": stats.get("pools_seconds"),
                               "pools cache": stats.get("pool_cache_status"),
                               "teacher s": stats.get("teacher_seconds"),
                               "teacher cache": stats.get("teacher_cache_status"),
                               "teacher pairs scored": stats.get("teacher_pairs_scored")})
    md = ["## Where the time goes", "",
          "Per trial (medians, so that a trial resumed after an interruption, which keeps the downtime in its wall "
          "time, does not move them; the share is the median of the trials' shares): `train` and `eval` are "
          "measured inside the Ray Train loop; `wall` is the trial's "
          "MLflow run from start to end (Tune trial, Ray Train worker start-up, model loading, checkpoints, "
          "logging); `overhead` = wall − train − eval, of which `worker setup` (model, training set and DDP "
          "set-up inside the Ray Train worker) and `checkpoints` (intermediate ones) are measured; the rest is "
          "process start-up, the final checkpoint and logging. The teacher never runs inside a trial: its scores "
          "are a shared asset built once (below) and read by every trial.", "",
          frame_to_markdown(pd.DataFrame(rows), digits=3), ""]
    if asset_rows:
        hits = sum(1 for r in asset_rows if r["teacher cache"] == "hit")
        md += ["Shared assets, built by each study's driver before its first trial:", "",
               frame_to_markdown(pd.DataFrame(asset_rows), digits=1), "",
               f"Teacher-cache hit rate: {hits} of {len(asset_rows)} studies found the teacher scores cached; "
               f"every trial ({sum(len(s.runs.trials) for s in studies)} in all) read them from the cache "
               "and scored 0 pairs itself.", ""]
    return md
