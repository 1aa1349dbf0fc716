"""A results document over several studies: `kd-study report --document docs/results.yaml`.

The spec (YAML) names the studies, the metrics to tabulate, which studies to compare as searches
(e.g. a grid and a TPE search of the same space), the benchmark tables to include and a
hand-written discussion file. Everything else is read from the MLflow store and the study folders,
so re-running the command on the same store rewrites the same document.

    title: SciFact evidence studies
    output: docs/results.md              # figures go to docs/results/ (beside it)
    regenerate: ["kd-study run ...", ...] # shown at the top, verbatim
    studies: [scifact_sampling, scifact_wkl, scifact_wkl_tpe]
    metrics: [dev_mrr_at_10_subset500, ...]   # tables per study and metric (first = selection metric)
    search_comparisons: [{grid: scifact_wkl, search: scifact_wkl_tpe}]
    reference: [bench/results/reference_scifact.md]   # untrained student and teacher on the same sets
    performance: [bench/results/train.md, bench/results/eval.md]   # or a glob: bench/results/*.md
    discussion: docs/results_discussion.md
    findings: docs/findings.yaml         # finding | paper | kd-study | verdict (study/report/findings.py)
    confirmations: [scifact_sampling]    # include `kd-study confirm`'s tables (kd-studies/NAME/confirm/)

Per study and metric it also writes the space's declared contrasts (`study.contrasts`, corrected
per family) and, in one table, the minimum detectable difference (MDE) per study and metric.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from study.confirm import kendall_tau
from study.paths import StudyPaths
from study.report import (ReportError, StudyRuns, best_trial, build_report, frame_to_markdown, load_per_query,
                          load_study_runs, metric_label, mode_for, plot_heatmap, plot_importances,
                          plot_search_progress)
from study.report.contrasts import contrasts_legend, contrasts_markdown, declared_contrasts, median_mde
from study.report.findings import findings_legend, findings_table, load_findings
from study.report.points import varying_params
from study.report.runs import read_yaml_model
from study.report.sensitivity import SIGNIFICANCE
from study.report.text import slug
from study.tags import OVERHEAD_METRIC, WALL_METRIC
from study.tracking import redact
from trainables.outputs import CHECKPOINT_SECONDS, EVAL_SECONDS, TRAIN_SECONDS, WORKER_SETUP_SECONDS


class SearchComparison(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    grid: str = Field(description="study that enumerates the space")
    search: str = Field(description="study that searches the same space with a comparable budget")


class DocumentSpec(BaseModel):
    """What `kd-study report --document` writes; paths are relative to the spec file's folder's parent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    title: str
    output: str
    regenerate: list[str] = Field(default_factory=list)
    studies: list[str] = Field(min_length=1)
    metrics: list[str] = Field(default_factory=list)
    search_comparisons: list[SearchComparison] = Field(default_factory=list)
    reference: list[str] = Field(default_factory=list)
    performance: list[str] = Field(default_factory=list)
    discussion: str | None = None
    findings: str | None = None
    confirmations: list[str] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DocumentSpec":
        return read_yaml_model(path, cls, "the document spec")


# ---- pieces ------------------------------------------------------------------------------------------
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


# ---- the document ------------------------------------------------------------------------------------
@dataclass
class _Study:
    name: str
    runs: StudyRuns
    state: dict[str, Any]
    assets: dict[str, Any]


@dataclass
class _Measured:
    """What the study sections computed and the summary sections read: contrasts per (study, metric), MDE rows."""

    contrasts: dict[tuple[str, str], pd.DataFrame | None]
    power: list[dict[str, Any]]


def write_document(spec_path: str | Path, tracking_uri: str, root: str | None = None) -> Path:
    """Build the document the spec describes and return its path (figures in `<output stem>/`)."""
    spec_path = Path(spec_path)
    spec = DocumentSpec.from_yaml(spec_path)
    base = Path.cwd()
    output = (base / spec.output).resolve()
    findings = load_findings(base / spec.findings) if spec.findings else []
    for i, finding in enumerate(findings):
        if finding.study not in spec.studies:
            raise ReportError(f"{spec.findings}: findings.{i}.study: {finding.study!r} is not one of the document's "
                              f"studies ({', '.join(spec.studies)})")
    figures = output.with_suffix("")
    figures.mkdir(parents=True, exist_ok=True)
    rel = figures.name

    studies = []
    for name in spec.studies:
        paths = StudyPaths.of(name, root)
        state = paths.read_state() if paths.exists() else {}
        studies.append(_Study(name, load_study_runs(name, tracking_uri), state, read_assets(name, root)))

    header = (f"Generated by `kd-study report --document {spec_path.as_posix()}` on {_dt.date.today().isoformat()} "
              f"from the MLflow store `{redact(tracking_uri)}`; do not edit by hand")
    header += f" (the discussion is written in `{spec.discussion}`)." if spec.discussion else "."
    md = [f"# {spec.title}", "", header, ""]
    if spec.regenerate:
        md += ["## Regenerate", "", "```bash", *spec.regenerate, "```", ""]

    measured = _Measured({}, [])
    sections = [_study_section(study, spec, tracking_uri, figures, rel, measured) for study in studies]

    md += _contents(studies, spec)
    if findings:
        by_name = {s.name: s for s in studies}
        text, _ = findings_table(findings, lambda study, metric: _contrasts_of(by_name[study], metric,
                                                                                 tracking_uri, measured))
        md += ["## Findings: the papers' claims and what kd-study measured", "", text, "",
               findings_legend(SIGNIFICANCE), ""]
    if measured.power:
        md += _power_section(measured.power)
    if spec.reference:
        md += ["## Reference points", ""] + _included(base, spec.reference)
    if spec.discussion:
        text = (base / spec.discussion).read_text().strip()
        md += [text, ""]

    for comparison in spec.search_comparisons:
        md += _comparison_section(comparison, {s.name: s for s in studies}, spec, figures, rel)

    for section in sections:
        md += section
    if spec.confirmations:
        md += _confirmations_section(spec.confirmations, root)

    md += _timing_section(studies)
    if spec.performance:
        md += ["## Performance (bench/)", ""] + _included(base, spec.performance)

    output.write_text("\n".join(md).rstrip() + "\n")
    return output


def _contrasts_of(study: _Study, metric: str, tracking_uri: str, measured: _Measured) -> pd.DataFrame | None:
    """The study's declared contrasts on `metric`: the study section's table, or computed here for another metric."""
    key = (study.name, metric)
    if key not in measured.contrasts:
        runs = study.runs
        if not runs.contrasts or metric not in runs.trials.columns:
            measured.contrasts[key] = None
        else:
            per_query = load_per_query(tracking_uri, runs.trials["run_id"], metrics=[metric])
            measured.contrasts[key], _ = declared_contrasts(
                runs.trials, per_query, metric, runs.contrasts, params=varying_params(runs.trials, runs.param_names),
                mode=mode_for(runs, metric))
    return measured.contrasts[key]


def _power_section(rows: list[dict[str, Any]]) -> list[str]:
    return ["## Power: the minimum detectable difference per study and metric", "",
            "MDE at 80% power, α = 0.05 two-sided (before correction): the true difference a paired test over "
            "queries detects 4 times in 5, from each contrast's own standard error. `from` says which contrasts: "
            "the space's declared ones, else each sensitivity table's contrasts with its best cell. A difference "
            "smaller than the MDE is one the study was not built to see; a spread of the point means below it "
            "means the study cannot order its points on that metric.", "",
            frame_to_markdown(pd.DataFrame(rows)), ""]


def _confirmations_section(names: list[str], root: str | None) -> list[str]:
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


def _included(base: Path, files: list[str]) -> list[str]:
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


def _contents(studies: list[_Study], spec: DocumentSpec) -> list[str]:
    lines = ["## Studies", "", "| study | trials finished | not finished (running, failed, killed) | selection metric | best |",
             "|---|---|---|---|---|"]
    for study in studies:
        df = study.runs.trials
        metric = _selection_metric(study, spec, df)
        best = _best_value(study.runs, metric)
        lines.append(f"| {study.name} | {len(df)} | {len(study.runs.excluded)} | {metric_label(metric)} | {best:.4f} |")
    return lines + [""]


def _best_value(runs: StudyRuns, metric: str) -> float:
    """The study's best value of `metric`, judged in the study's own mode; NaN when no trial has one."""
    try:
        return float(best_trial(runs.trials, metric, mode_for(runs, metric))[metric])
    except ReportError:
        return float("nan")


def _selection_metric(study: _Study, spec: DocumentSpec, df: pd.DataFrame) -> str:
    own = [metric for metric, _ in study.runs.objectives]
    candidates = list(study.state.get("metrics") or []) + own + spec.metrics
    for metric in candidates:
        if metric in df.columns:
            return metric
    raise ReportError(f"study {study.name!r}: none of the metrics {candidates} was logged")


def _study_section(study: _Study, spec: DocumentSpec, tracking_uri: str, figures: Path, rel: str,
                   measured: _Measured) -> list[str]:
    df = study.runs.trials
    md = [f"## Study `{study.name}`", ""]
    if df.empty:
        return md + ["No finished trials.", ""]
    metrics = [m for m in (spec.metrics or [_selection_metric(study, spec, df)]) if m in df.columns]
    storage = study.state.get("optuna_storage")
    per_query = load_per_query(tracking_uri, df["run_id"], metrics=metrics)  # once for every metric's tables
    first = True
    for metric in metrics:
        report = build_report(study.name, tracking_uri, metric, storage if first else None, runs=study.runs,
                              per_query=per_query)
        if first:
            best = report.best
            md += [f"{len(df)} finished trials; best by {metric_label(metric)}: `{best['trial_id']}` = "
                   f"{best[metric]:.4f}.", ""]
            md += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
        for key, table in report.tables.items():
            if table.mean.shape == (1, 1):
                continue  # one configuration on both axes (e.g. the WKL study's fixed sampler and K): no table
            stem = f"{study.name}_{key}_{slug(metric)}"
            plot_heatmap(table, figures / f"{stem}.png")
            md += [f"### {table.title}", "", f"![{table.title}]({rel}/{stem}.png)", "", table.to_markdown(), "",
                   table.legend(), *[f"- {n}" for n in table.notes], ""]
        if report.contrasts is not None:
            measured.contrasts[(study.name, metric)] = report.contrasts
            if not report.contrasts.empty:
                md += [f"### Declared contrasts: {metric_label(metric)}", "", contrasts_markdown(report.contrasts), "",
                       contrasts_legend(report.contrasts), ""]
        measured.power.append(_power_row(study.name, metric, report))
        if first:
            if report.importances is not None:
                plot_importances(report.importances, figures / f"{study.name}_importances.png", study.name)
                md += ["### Parameter importances (Optuna fANOVA, selection metric)", "",
                       f"![importances]({rel}/{study.name}_importances.png)", "",
                       frame_to_markdown(report.importances), ""]
            elif report.importance_notes:
                md += ["### Parameter importances", "", *[f"- {n}" for n in report.importance_notes], ""]
            if report.sampler_diagnostics is not None:
                md += ["### Sampled teacher scores per sampler", "",
                       "Mean over trials of the per-query variance and entropy of the K sampled teacher scores.", "",
                       frame_to_markdown(report.sampler_diagnostics), ""]
        first = False
    return md


def _power_row(name: str, metric: str, report) -> dict[str, Any]:
    """One study and metric: the MDE (median and range over its contrasts), the design, the spread of point means."""
    if report.contrasts is not None and report.contrasts["mde"].notna().any():
        source, mdes = "declared contrasts", report.contrasts["mde"].dropna().astype(float)
        design = (f"{int(report.contrasts['n_queries'].median())} × {int(report.contrasts['n_seeds'].max())}")
        largest = float(report.contrasts["difference"].abs().max())
    else:
        powers = [t.power for t in report.tables.values() if t.power is not None]
        source, mdes = "tables vs best", pd.Series([p.mde for p in powers], dtype=float)
        design = f"{powers[0].n_queries} × {powers[0].n_seeds}" if powers else "—"
        largest = float("nan")
    means = report.points["mean"].astype(float) if report.points is not None else pd.Series(dtype=float)
    return {"study": name, "metric": metric_label(metric), "from": source,
            "MDE (median)": median_mde(pd.DataFrame({"mde": mdes})) if len(mdes) else float("nan"),
            "MDE min": float(mdes.min()) if len(mdes) else float("nan"),
            "MDE max": float(mdes.max()) if len(mdes) else float("nan"),
            "queries × seeds": design, "largest declared Δ (absolute)": largest,
            "spread of point means": float(means.max() - means.min()) if len(means) else float("nan")}


def _comparison_section(comparison: SearchComparison, studies: dict[str, _Study], spec: DocumentSpec,
                        figures: Path, rel: str) -> list[str]:
    grid, search = studies.get(comparison.grid), studies.get(comparison.search)
    if grid is None or search is None:
        raise ReportError(f"search_comparisons: {comparison.grid!r} and {comparison.search!r} must be in studies")
    metric = _selection_metric(grid, spec, grid.runs.trials)
    mode = mode_for(grid.runs, metric)
    budget = len(grid.runs.trials)
    curves = {comparison.grid: search_progress(grid.runs.trials, metric, mode),
              comparison.search: search_progress(search.runs.trials, metric, mode)}
    grid_best = _best_value(grid.runs, metric)
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


def _timing_section(studies: list[_Study]) -> list[str]:
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

