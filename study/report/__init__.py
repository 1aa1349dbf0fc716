"""Study report from the MLflow store: sensitivity tables with paired per-query tests, heatmaps,
Optuna parameter importances, sampled-score diagnostics and trial timings.

One job per module: `runs` reads the store, `best` picks the best trial (shared with
`study.report.export`), `sensitivity`, `importances` and `trial_tables` compute, `build` gathers one
study's numbers, and `figures`, `markdown` and `terminal` draw and write them. `report_study`
below is the driver; the best trial and every table's best cell follow the study's own metric
and mode unless told otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

from study.report.best import (DEFAULT_METRICS, Best, available_metrics, best_trial, check_mode, choose_best,
                               mode_for, resolve_metric)
from study.report.build import StudyReport, build_report
from study.report.figures import plot_heatmap, plot_importances, plot_search_progress
from study.report.importances import param_importances
from study.report.markdown import REPORT_FILE, report_markdown, report_sections, write_file
from study.report.runs import (META_COLUMNS, ReportError, StudyRuns, collect_trials, download_artifact,
                               load_per_query, load_study_runs, log_on_parent, mlflow_client)
from study.report.cells import paired_test
from study.report.sensitivity import DAGGER, SIGNIFICANCE, SensitivityTable, sensitivity_table
from study.report.terminal import render_report
from study.report.text import frame_to_markdown, metric_label
from study.report.trial_tables import ENTROPY_METRIC, VARIANCE_METRIC, sampler_diagnostics, trial_times
# Contract names callers used to import from here; their home is study.track.tags.
from study.track.tags import OVERHEAD_METRIC, PER_QUERY_ARTIFACT, REPORT_ARTIFACT_DIR, TRIAL_CONFIG_ARTIFACT, WALL_METRIC


def report_study(name: str, tracking_uri: str, out_dir: str | Path, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, log_to_parent: bool = True, *,
                 mode: str | None = None) -> Path:
    """Write the study report (CSV + Markdown per table, PNG heatmaps, REPORT_FILE) and return REPORT_FILE's path.

    `metric` and `mode` default to the study's own. With `log_to_parent`, every file written is
    logged on the study's parent run under REPORT_ARTIFACT_DIR.
    """
    return write_report(build_report(name, tracking_uri, metric, optuna_storage, mode=mode), out_dir, log_to_parent)


def write_report(report: StudyReport, out_dir: str | Path, log_to_parent: bool = True) -> Path:
    """Write a built report's files (see `report_study`) and return REPORT_FILE's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = report_sections(report)
    files = {filename: content for section in sections for filename, content in section.files.items()}
    files[REPORT_FILE] = report_markdown(sections)
    written = [write_file(out / filename, content) for filename, content in files.items()]
    if log_to_parent:
        log_on_parent(report.study, written, REPORT_ARTIFACT_DIR)
    return out / REPORT_FILE


def print_report(name: str, tracking_uri: str, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, *, mode: str | None = None,
                 console=None) -> None:
    """Compute the study report and render its tables in the terminal (rich)."""
    render_report(build_report(name, tracking_uri, metric, optuna_storage, mode=mode), console)


__all__ = [
    "DAGGER", "DEFAULT_METRICS", "ENTROPY_METRIC", "META_COLUMNS", "OVERHEAD_METRIC", "PER_QUERY_ARTIFACT",
    "REPORT_ARTIFACT_DIR", "REPORT_FILE", "SIGNIFICANCE", "TRIAL_CONFIG_ARTIFACT", "VARIANCE_METRIC", "WALL_METRIC",
    "Best", "ReportError", "SensitivityTable", "StudyReport", "StudyRuns",
    "available_metrics", "best_trial", "build_report", "check_mode", "choose_best", "collect_trials",
    "download_artifact", "frame_to_markdown", "load_per_query", "load_study_runs", "metric_label",
    "mlflow_client", "mode_for", "paired_test", "param_importances", "plot_heatmap", "plot_importances",
    "plot_search_progress", "print_report", "render_report", "report_study", "sampler_diagnostics",
    "sensitivity_table", "trial_times", "write_report",
]
