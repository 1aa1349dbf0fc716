"""Everything one study's report shows, computed once from the store: `build_report`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from study.report.best import choose_best
from study.report.contrasts import declared_contrasts
from study.report.curves import LearningCurves, learning_curves
from study.report.importances import param_importances
from study.report.runs import (PerQuery, ReportError, StudyRuns, load_per_query, load_study_runs,
                               read_artifact_text)
from study.report.points import point_table, varying_params
from study.report.sensitivity import CORRECTION, SIGNIFICANCE, SensitivityTable, sensitivity_table
from study.report.text import metric_label, ordered, slug
from study.report.trial_tables import ENTROPY_METRIC, VARIANCE_METRIC, sampler_diagnostics, trial_times
from study.track.tags import PER_QUERY_ARTIFACT, TRIAL_CONFIG_ARTIFACT


@dataclass
class StudyReport:
    """Everything a report shows, computed once; `report_study` writes it and `render_report` prints it.

    `mode` is the direction `metric` is judged in: it picks `best` and each table's best cell.
    `points` is `point_table` (every configuration with its CI and whether it is tied with the
    best), over `point_params`; `correction` is the multiple-comparison correction of every table.
    """

    study: StudyRuns
    metric: str
    mode: str
    best: pd.Series
    best_config_yaml: str | None
    tables: dict[str, SensitivityTable] = field(default_factory=dict)
    importances: pd.DataFrame | None = None
    sampler_diagnostics: pd.DataFrame | None = None
    trial_times: pd.DataFrame | None = None
    curves: LearningCurves | None = None
    notes: list[str] = field(default_factory=list)
    importance_notes: list[str] = field(default_factory=list)
    correction: str = CORRECTION
    points: pd.DataFrame | None = None
    point_params: list[str] = field(default_factory=list)
    contrasts: pd.DataFrame | None = None


def build_report(name: str, tracking_uri: str, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, *, mode: str | None = None,
                 significance: float = SIGNIFICANCE, runs: StudyRuns | None = None,
                 per_query: PerQuery | None = None, correction: str = CORRECTION) -> StudyReport:
    """Read the study from MLflow (and Optuna) and compute every table of the report.

    `metric` and `mode` default to the study's own objective (see `choose_best`). `runs` and
    `per_query` (`load_study_runs`, `load_per_query` with this metric among its metrics) skip
    reading them again: a caller reporting several metrics of one study loads them once.
    `correction` ("holm" or "bh") corrects each table's contrasts and the points' contrasts.
    """
    study = runs if runs is not None else load_study_runs(name, tracking_uri)
    chosen = choose_best(study, metric, mode)
    metric, mode, best = chosen.metric, chosen.mode, chosen.trial
    best_config = read_artifact_text(tracking_uri, best["run_id"], TRIAL_CONFIG_ARTIFACT)
    report = StudyReport(study, metric, mode, best, best_config, notes=list(study.notes), correction=correction)
    if best_config is None:
        report.notes.append(f"best trial run {best['run_id']} has no {TRIAL_CONFIG_ARTIFACT} artifact")

    df = study.trials
    if per_query is None:
        per_query = load_per_query(tracking_uri, df["run_id"], metrics=[metric])
    if not any(metric in v for v in per_query.values()):
        report.notes.append(f"no trial has per-query values of {metric} in {PER_QUERY_ARTIFACT}: "
                            "tables carry no significance marks")
    _add_tables(report, per_query, significance)
    report.point_params = varying_params(df, study.param_names)
    report.points = point_table(df, metric, per_query, report.point_params, mode=mode, correction=correction,
                                significance=significance)
    if study.contrasts:
        report.contrasts, notes = declared_contrasts(df, per_query, metric, study.contrasts, params=report.point_params,
                                                     mode=mode, correction=correction, significance=significance)
        report.notes += notes

    if optuna_storage is not None:
        report.importances, report.importance_notes = param_importances(optuna_storage, name)
    report.sampler_diagnostics = sampler_diagnostics(df)
    if report.sampler_diagnostics is None:
        report.notes.append(f"no {VARIANCE_METRIC} / {ENTROPY_METRIC} metrics: sampler diagnostics skipped")
    report.trial_times = trial_times(df)
    report.curves = learning_curves(study, metric)
    if report.curves is None:
        report.notes.append("trials log no dev-set learning curve (eval.at_fractions): curves skipped")
    else:
        report.notes += report.curves.notes
    return report


def _add_tables(report: StudyReport, per_query: PerQuery, significance: float) -> None:
    """γ1 × α over the WKL trials, and sampler × K per loss: the papers' tables."""
    df, label = report.study.trials, metric_label(report.metric)
    losses = df["loss.name"] if "loss.name" in df.columns else pd.Series(dtype=object)
    wkl = df[losses == "wkl"]
    if wkl.empty:
        report.notes.append("no finished WKL trials: γ1 × α table skipped")
    else:
        _add_table(report, "gamma1_alpha", wkl, "loss.gamma1", "loss.alpha", per_query, significance,
                   f"{label} by γ1 × α (WKL)")
    if not {"sampler.name", "sampler.k"} <= set(df.columns):
        report.notes.append("trials have no sampler.name / sampler.k: sampler × K tables skipped")
    elif losses.empty or losses.isna().all():
        _add_table(report, "sampler_k", df, "sampler.name", "sampler.k", per_query, significance,
                   f"{label} by sampler × K")
    else:
        for loss in ordered(losses.dropna()):
            _add_table(report, f"sampler_k_{slug(loss)}", df[losses == loss], "sampler.name", "sampler.k",
                       per_query, significance, f"{label} by sampler × K (loss: {loss})")


def _add_table(report: StudyReport, key: str, df: pd.DataFrame, rows: str, cols: str,
               per_query: PerQuery, significance: float, title: str) -> None:
    try:
        report.tables[key] = sensitivity_table(df, rows, cols, report.metric, per_query,
                                               significance=significance, mode=report.mode, title=title,
                                               correction=report.correction, baseline=report.study.baseline)
    except ReportError as error:
        report.notes.append(f"{title}: skipped ({error})")
