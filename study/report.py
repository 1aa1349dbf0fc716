"""Study report from the MLflow store: sensitivity tables with paired per-query tests, heatmaps,
Optuna parameter importances, sampled-score diagnostics and trial timings.

Reads only the tracking contract of `study/tracking.py`: a parent run tagged
`kd_study.name=<NAME>`, `kd_study.kind=study`; nested trial runs (`mlflow.parentRunId`) with the
flattened trial config as dotted params (`loss.gamma1`, `sampler.k`, ...), final metrics, and the
artifacts `trial_config.yaml` and `per_query.json` (`{metric_key: {qid: value}}`). Only FINISHED
trial runs count; failed or killed runs are listed in the report and left out of every number.

Sensitivity tables follow the WKL paper (Tables 3/5/6: Dev MRR@10 by γ1 × α) and the
score-distribution paper (sampler × K, per loss). A cell is the mean of the metric over the
finished trials of that configuration (seeds, and any searched parameter not on the table's axes).

Significance (†): every cell is compared with the best cell of its table by a two-sided paired
t-test (`scipy.stats.ttest_rel`) over queries. A cell's per-query values are the per-query values
of the metric averaged over the cell's trials; the two cells are matched by qid (queries present in
both). † marks p < 0.05 with a mean below the best (above it for `mode="min"`). There is no
multiple-testing correction: in a table of many cells, a few marks (or missing marks) are expected
by chance alone. Metrics without per-query values (e.g. `beir_ndcg_at_10_avg`) get no marks.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.errors import BadInput
from trainables.outputs import TIME_PREFIX

from study.tags import (
    OVERHEAD_METRIC, PARENT_RUN_TAG, PER_QUERY_ARTIFACT, REPORT_ARTIFACT_DIR, STUDY_KIND_TAG, STUDY_NAME_TAG,
    TAG_FALLBACKS, TRIAL_CONFIG_ARTIFACT, TRIAL_ID_TAG, WALL_METRIC,
)

DEFAULT_METRICS = ("dev_mrr_at_10", "beir_ndcg_at_10_avg")
SIGNIFICANCE = 0.05
DAGGER = "†"
VARIANCE_METRIC = "train/sampled_score_variance"
ENTROPY_METRIC = "train/sampled_score_entropy"
# Table order of the papers; anything else follows alphabetically.
KNOWN_ORDER = ("topk", "random", "stratified", "kl", "margin_mse", "kl_nll", "wkl")
AXIS_LABELS = {
    "loss.gamma1": "γ1 (loss.gamma1)",
    "loss.alpha": "α (loss.alpha)",
    "sampler.name": "sampler",
    "sampler.k": "K (sampler.k)",
    "loss.name": "loss",
}
SHORT_AXIS = {"loss.gamma1": "γ1", "loss.alpha": "α", "sampler.name": "sampler", "sampler.k": "K",
              "loss.name": "loss"}
MEASURE_LABELS = {"mrr_at_10": "MRR@10", "ndcg_at_10": "nDCG@10", "recall_at_1000": "R@1000"}
META_COLUMNS = ("run_id", "trial_id", "run_name", "status", "start_time", "end_time")


class ReportError(BadInput, LookupError):
    """A study, metric or artifact the report or export needs is missing; the message is one line."""


# ---- reading the store ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyRuns:
    """A study's parent run and its trial runs: `trials` (FINISHED) and `excluded` (any other status)."""

    name: str
    tracking_uri: str
    parent_run_id: str
    experiment_id: str
    trials: pd.DataFrame
    excluded: pd.DataFrame
    param_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def load_study_runs(name: str, tracking_uri: str) -> StudyRuns:
    """Find the study's parent run (the latest, if several share the name) and read its trial runs."""
    client = _client(tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    study_filter = f"tags.`{STUDY_KIND_TAG}` = 'study'"
    parents = _search_all(client, experiment_ids, f"{study_filter} and tags.`{STUDY_NAME_TAG}` = {_quote(name)}")
    if not parents:
        studies = _search_all(client, experiment_ids, study_filter)
        known = sorted({r.data.tags.get(STUDY_NAME_TAG, "?") for r in studies})
        there = f"known studies: {', '.join(known)}" if known else "it holds no kd-study studies"
        raise ReportError(f"no study named {name!r} in {tracking_uri} ({there})")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    parent = parents[0]
    notes = []
    if len(parents) > 1:
        others = ", ".join(r.info.run_id for r in parents[1:])
        notes.append(f"{len(parents) - 1} older parent run(s) named {name!r} ignored: {others}")

    children = _search_all(client, [parent.info.experiment_id],
                           f"tags.`{PARENT_RUN_TAG}` = {_quote(parent.info.run_id)}")
    rows, param_names, metric_names = [], set(), set()
    for run in children:
        params = {k: _parse_param(v) for k, v in run.data.params.items()}
        for param, tag in TAG_FALLBACKS.items():
            if param not in params and tag in run.data.tags:
                params[param] = _parse_param(run.data.tags[tag])
        param_names.update(params)
        metric_names.update(run.data.metrics)
        rows.append({
            "run_id": run.info.run_id,
            "trial_id": run.data.tags.get(TRIAL_ID_TAG, run.info.run_name or run.info.run_id[:8]),
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            **params,
            # A metric named like a param keeps the `metrics.` prefix rather than overwrite it.
            **{(f"metrics.{k}" if k in params else k): v for k, v in run.data.metrics.items()},
        })
    columns = list(META_COLUMNS) + sorted(param_names) + sorted(metric_names - param_names) \
        + sorted(f"metrics.{m}" for m in metric_names & param_names)
    frame = _with_wall_and_overhead(pd.DataFrame(rows, columns=columns))
    for param in param_names:
        frame[param] = _coerce_column(frame[param])
    frame = frame.sort_values(["start_time", "trial_id"], kind="stable").reset_index(drop=True)
    finished = frame["status"] == "FINISHED"
    trials = frame[finished].reset_index(drop=True)
    excluded = frame.loc[~finished, ["run_id", "trial_id", "status"]].reset_index(drop=True)
    metrics = tuple(c for c in columns if c in metric_names or c.startswith("metrics."))
    trials.attrs.update(study=name, parent_run_id=parent.info.run_id, metrics=metrics)
    return StudyRuns(name, tracking_uri, parent.info.run_id, parent.info.experiment_id, trials, excluded,
                     tuple(sorted(param_names)), metrics, tuple(notes))


def _with_wall_and_overhead(frame: pd.DataFrame) -> pd.DataFrame:
    """Add each run's wall time and its overhead: what is neither training nor evaluation."""
    if frame.empty:
        return frame
    wall = (frame["end_time"] - frame["start_time"]) / 1000.0
    frame[WALL_METRIC] = wall.where(frame["end_time"].notna())
    parts = [c for c in ("time/train_s", "time/eval_s") if c in frame.columns]
    if parts and OVERHEAD_METRIC not in frame.columns:  # a logged overhead wins
        frame[OVERHEAD_METRIC] = frame[WALL_METRIC] - frame[parts].sum(axis=1, min_count=len(parts))
    return frame


def collect_trials(name: str, tracking_uri: str) -> pd.DataFrame:
    """One row per FINISHED trial run of study `name`: `run_id`, `trial_id`, params (dotted, typed), metrics.

    `df.attrs` holds `study`, `parent_run_id` and `metrics` (the metric columns).
    Raises `ReportError` (one line) when the store has no study of that name.
    """
    return load_study_runs(name, tracking_uri).trials


def _parse_param(value: str) -> Any:
    return None if value == "None" else value


def _coerce_column(column: pd.Series) -> pd.Series:
    """MLflow params are strings: make a column numeric or boolean when every present value is."""
    present = column.dropna()
    if present.empty:
        return column
    if present.isin(["True", "False"]).all():
        return column.map({"True": True, "False": False})
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        return pd.to_numeric(column, errors="coerce")
    return column


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per artifact download; one per trial is noise in a report."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def download_artifact(tracking_uri: str, run_id: str, artifact: str, dst_dir: str | Path) -> Path | None:
    """Local copy of one run artifact, or None when the run does not have it."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        with _quiet_downloads():
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                        dst_path=str(dst_dir), tracking_uri=tracking_uri)
    except (MlflowException, OSError):
        return None
    path = Path(local)
    return path if path.is_file() else None


def load_per_query(tracking_uri: str, run_ids: Iterable[str],
                   metrics: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """`{run_id: {metric_key: {qid: value}}}` from each run's `per_query.json` (runs without it are absent).

    Only `metrics` are kept when given: MS MARCO Dev has ~7k queries per metric per trial.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kd_report_") as tmp:
        for run_id in run_ids:
            path = download_artifact(tracking_uri, run_id, PER_QUERY_ARTIFACT, Path(tmp) / run_id)
            if path is None:
                continue
            raw = json.loads(path.read_text())
            out[run_id] = {m: {str(q): float(v) for q, v in values.items()}
                           for m, values in raw.items() if metrics is None or m in metrics}
    return out


# ---- metrics and best trial ------------------------------------------------------------------------
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


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ReportError(f"mode must be 'max' or 'min', got {mode!r}")


def best_trial(df: pd.DataFrame, metric: str, mode: str = "max") -> pd.Series:
    """The finished trial with the best value of `metric` (ties: the earliest started)."""
    _check_mode(mode)
    scored = df[df[metric].notna()] if metric in df.columns else df.iloc[0:0]
    if scored.empty:
        raise ReportError(f"no finished trial has metric {metric!r}")
    values = scored[metric].to_numpy()
    position = int(np.argmax(values) if mode == "max" else np.argmin(values))
    return scored.iloc[position]


def metric_label(key: str) -> str:
    """Readable name of a metric key: `dev_mrr_at_10` → `Dev MRR@10`, `beir/x/ndcg_at_10` → `BEIR x nDCG@10`."""
    suffix = ""
    subset = re.fullmatch(r"(.*)_subset(\d+)", key)
    if subset:
        key, suffix = subset.group(1), f" (judged + {subset.group(2)} distractors)"
    if key == "beir_ndcg_at_10_avg":
        return "BEIR nDCG@10 (avg)" + suffix
    if key.startswith("beir/") and key.count("/") == 2:
        _, dataset, measure = key.split("/")
        return f"BEIR {dataset} {MEASURE_LABELS.get(measure, measure)}" + suffix
    for measure, label in MEASURE_LABELS.items():
        if key.endswith("_" + measure):
            prefix = key[: -len(measure) - 1]
            return f"{'Dev' if prefix == 'dev' else prefix} {label}" + suffix
    return key + suffix


def _axis(name: str) -> str:
    return AXIS_LABELS.get(name, name)


def _fmt_label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def _ordered(values: Iterable[Any]) -> list[Any]:
    values = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    rank = {name: i for i, name in enumerate(KNOWN_ORDER)}
    return sorted(values, key=lambda v: (rank.get(str(v), len(rank)), str(v)))


# ---- sensitivity tables ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityTable:
    """A metric by two config fields: cell means over trials, and each cell's paired test against the best.

    `mean`, `std`, `count`, `p_value`, `n_queries`, `worse` are DataFrames indexed by the `rows` values
    with the `cols` values as columns; `worse` marks p < `significance` in the wrong direction.
    """

    title: str
    metric: str
    rows: str
    cols: str
    mean: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    p_value: pd.DataFrame
    n_queries: pd.DataFrame
    worse: pd.DataFrame
    best: tuple[Any, Any]
    mode: str = "max"
    significance: float = SIGNIFICANCE
    notes: tuple[str, ...] = ()

    @property
    def tested(self) -> bool:
        return bool(self.p_value.notna().to_numpy().any())

    def cell_text(self, row: Any, col: Any, digits: int = 4, counts: bool | None = None) -> str:
        value = self.mean.loc[row, col]
        if pd.isna(value):
            return "—"
        text = f"{value:.{digits}f}" + (DAGGER if self.worse.loc[row, col] else "")
        n = int(self.count.loc[row, col])
        if counts or (counts is None and n != 1):
            text += f" (n={n})"
        return text

    def formatted(self, digits: int = 4) -> pd.DataFrame:
        """The table as text: mean, † when significantly worse than the best, (n=…) when a cell pools trials."""
        return pd.DataFrame([[self.cell_text(r, c, digits) for c in self.mean.columns] for r in self.mean.index],
                            index=self.mean.index, columns=self.mean.columns)

    def long(self) -> pd.DataFrame:
        """One row per configuration: the CSV form, with numbers rather than marks."""
        records = []
        for r in self.mean.index:
            for c in self.mean.columns:
                if pd.isna(self.mean.loc[r, c]):
                    continue
                records.append({
                    self.rows: r, self.cols: c, "n_trials": int(self.count.loc[r, c]),
                    f"{self.metric}_mean": self.mean.loc[r, c], f"{self.metric}_std": self.std.loc[r, c],
                    "p_value_vs_best": self.p_value.loc[r, c], "n_queries_tested": self.n_queries.loc[r, c],
                    "significantly_worse": bool(self.worse.loc[r, c]), "best": (r, c) == self.best,
                })
        return pd.DataFrame.from_records(records)

    def to_markdown(self, digits: int = 4) -> str:
        corner = f"{SHORT_AXIS.get(self.rows, self.rows)} \\ {SHORT_AXIS.get(self.cols, self.cols)}"
        header = [corner] + [_fmt_label(c) for c in self.mean.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in self.mean.index:
            cells = [self.cell_text(r, c, digits) for c in self.mean.columns]
            cells = [f"**{t}**" if (r, c) == self.best else t for c, t in zip(self.mean.columns, cells)]
            lines.append("| " + " | ".join([_fmt_label(r)] + cells) + " |")
        return "\n".join(lines)

    def legend(self) -> str:
        better = "higher" if self.mode == "max" else "lower"
        best = f"{SHORT_AXIS.get(self.rows, self.rows)}={_fmt_label(self.best[0])}, " \
               f"{SHORT_AXIS.get(self.cols, self.cols)}={_fmt_label(self.best[1])}"
        text = (f"Cells: mean {metric_label(self.metric)} over finished trials ({better} is better), "
                f"(n=…) where a cell pools more than one trial; best ({best}) in bold.")
        if self.tested:
            text += (f" {DAGGER}: significantly worse than the best (two-sided paired t-test over queries, "
                     f"p < {self.significance:g}, no multiple-testing correction).")
        return text


def _cell_per_query(run_ids: Sequence[str], per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
                    metric: str) -> pd.Series | None:
    """Per-query values of a configuration: the mean over its trials (seeds) for each qid."""
    series = [pd.Series(dict(per_query[r][metric]), dtype=float) for r in run_ids
              if r in per_query and metric in per_query[r]]
    if not series:
        return None
    return pd.concat(series, axis=1).mean(axis=1)


def paired_test(values: pd.Series, best: pd.Series) -> tuple[float, float, int]:
    """(p-value, mean difference values - best, number of matched queries) of a two-sided paired t-test."""
    from scipy.stats import ttest_rel

    joined = pd.concat([values.rename("a"), best.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    if n < 2:
        return math.nan, math.nan, n
    diff = joined["a"].to_numpy() - joined["b"].to_numpy()
    mean_diff = float(diff.mean())
    # The t statistic is undefined for constant differences: equal everywhere is no evidence,
    # a constant non-zero shift on every query is as strong as evidence gets.
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return (1.0 if abs(mean_diff) <= 1e-12 else 0.0), mean_diff, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_rel(joined["a"], joined["b"]).pvalue)
    return p_value, mean_diff, n


def sensitivity_table(df: pd.DataFrame, rows: str, cols: str, metric: str,
                      per_query: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None, *,
                      significance: float = SIGNIFICANCE, mode: str = "max",
                      title: str | None = None) -> SensitivityTable:
    """`metric` by `rows` × `cols` (e.g. `loss.gamma1` × `loss.alpha`): cell means over trials, † marks.

    `per_query` is `{run_id: {metric_key: {qid: value}}}` (see `load_per_query`); without it, or
    without the metric in it, cells are not tested (the table's notes say so). The caller filters
    `df` (e.g. to WKL runs); the module docstring describes the test.
    """
    _check_mode(mode)
    missing = [c for c in (rows, cols, metric) if c not in df.columns]
    if missing:
        raise ReportError(f"trials have no column(s) {', '.join(missing)}")
    data = df.dropna(subset=[rows, cols, metric])
    if data.empty:
        raise ReportError(f"no trial has {rows}, {cols} and {metric}")
    row_values, col_values = _ordered(data[rows]), _ordered(data[cols])
    grouped = data.groupby([rows, cols], sort=False)[metric]

    def grid(stat: pd.Series) -> pd.DataFrame:
        table = stat.unstack(cols) if len(stat) else pd.DataFrame()
        return table.reindex(index=row_values, columns=col_values)

    mean, std, count = grid(grouped.mean()), grid(grouped.std()), grid(grouped.count()).fillna(0).astype(int)
    for frame in (mean, std, count):
        frame.index.name, frame.columns.name = rows, cols
    stacked = mean.stack().dropna()
    best = stacked.idxmax() if mode == "max" else stacked.idxmin()

    p_value = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    n_queries = pd.DataFrame(0, index=mean.index, columns=mean.columns)
    worse = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    notes = []
    cell_runs = {key: list(group["run_id"]) for key, group in data.groupby([rows, cols], sort=False)}
    best_values = _cell_per_query(cell_runs[best], per_query or {}, metric)
    if per_query is None:
        notes.append("no per-query values given: no significance test")
    elif best_values is None:
        notes.append(f"no per-query values of {metric} (per_query.json) for the best configuration: "
                     "no significance test")
    else:
        untested = []
        for key, run_ids in cell_runs.items():
            if key == best:
                continue
            values = _cell_per_query(run_ids, per_query, metric)
            if values is None:
                untested.append(key)
                continue
            p, mean_diff, n = paired_test(values, best_values)
            p_value.loc[key], n_queries.loc[key] = p, n
            wrong_way = mean_diff < 0 if mode == "max" else mean_diff > 0
            worse.loc[key] = bool(not math.isnan(p) and p < significance and wrong_way)
            if math.isnan(p):
                untested.append(key)
        if untested:
            cells = ", ".join(f"({_fmt_label(r)}, {_fmt_label(c)})" for r, c in untested)
            notes.append(f"not tested (no per-query values or < 2 shared queries): {cells}")
    if title is None:
        title = f"{metric_label(metric)} by {SHORT_AXIS.get(rows, rows)} × {SHORT_AXIS.get(cols, cols)}"
    return SensitivityTable(title, metric, rows, cols, mean, std, count, p_value, n_queries, worse,
                            tuple(best), mode, significance, tuple(notes))


# ---- other tables --------------------------------------------------------------------------------------
def param_importances(optuna_storage: str | os.PathLike, study_name: str) -> tuple[pd.DataFrame | None, list[str]]:
    """Optuna parameter importances of the study (fANOVA, seeded), and notes on what could not be done.

    `optuna_storage` is a storage URL or the path of an `optuna.db` sqlite file. fANOVA, not Optuna 5's
    default PED-ANOVA: PED-ANOVA contrasts the top 10% of trials with the rest, which for an 18- or
    28-point grid is two trials and gives degenerate shares (0.5 / 0.25 / 0.25).
    """
    import optuna

    notes: list[str] = []
    storage = str(optuna_storage)
    if "://" not in storage:
        if not Path(storage).is_file():
            return None, [f"no Optuna storage at {storage}: importances skipped"]
        storage = f"sqlite:///{Path(storage).resolve()}"
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None, [f"no Optuna study named {study_name!r} in {storage}: importances skipped"]
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2:
        return None, [f"importances need at least 2 completed Optuna trials, the study has {len(completed)}"]
    values_by_param: dict[str, set] = {}
    for trial in completed:
        for param, value in trial.params.items():
            values_by_param.setdefault(param, set()).add(repr(value))
    constant = sorted(p for p, values in values_by_param.items() if len(values) < 2)
    varied = sorted(p for p, values in values_by_param.items() if len(values) >= 2)
    if constant:
        notes.append(f"constant in every completed trial, so no importance: {', '.join(constant)}")
    if not varied:
        return None, notes + ["no searched parameter varies over the completed trials: importances skipped"]
    target = None
    if len(study.directions) > 1:
        target = lambda t: t.values[0]  # noqa: E731 - a one-line projection
        notes.append("multi-objective study: importances for the first objective")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(
                study, params=varied, target=target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as error:
        return None, notes + [f"importances failed: {str(error).splitlines()[0]}"]
    notes.extend(f"Optuna: {str(w.message).splitlines()[0]}" for w in caught
                 if "importance" in str(w.message).lower())
    table = pd.DataFrame({"param": list(importances), "importance": [float(v) for v in importances.values()]})
    table.attrs["n_trials"] = len(completed)
    return table, notes


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
    order = {v: i for i, v in enumerate(_ordered(table["sampler.name"]))}
    table = table.sort_values(keys, key=lambda s: s.map(order) if s.name == "sampler.name" else s)
    return table.rename(columns={VARIANCE_METRIC: "mean sampled-score variance",
                                 ENTROPY_METRIC: "mean sampled-score entropy"}).reset_index(drop=True)


def _time_order(column: str) -> tuple[int, str]:
    for i, part in enumerate(("teacher", "train", "eval", "overhead", "wall")):
        if part in column[len(TIME_PREFIX):]:
            return i, column
    return 5, column


def trial_times(df: pd.DataFrame) -> pd.DataFrame | None:
    """Per-trial `time/*` metrics (teacher, train, eval, overhead first), with the config that ran."""
    times = sorted((c for c in df.columns if c.startswith(TIME_PREFIX) and df[c].notna().any()), key=_time_order)
    if not times:
        return None
    config = [c for c in ("loss.name", "sampler.name", "sampler.k", "seed") if c in df.columns]
    return df[["trial_id", "run_id"] + config + times].reset_index(drop=True)


# ---- the report ----------------------------------------------------------------------------------------
@dataclass
class StudyReport:
    """Everything a report shows, computed once; `report_study` writes it and `render_report` prints it."""

    study: StudyRuns
    metric: str
    best: pd.Series
    best_config_yaml: str | None
    tables: dict[str, SensitivityTable] = field(default_factory=dict)
    importances: pd.DataFrame | None = None
    sampler_diagnostics: pd.DataFrame | None = None
    trial_times: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    importance_notes: list[str] = field(default_factory=list)


def build_report(name: str, tracking_uri: str, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, *,
                 significance: float = SIGNIFICANCE, runs: StudyRuns | None = None,
                 per_query: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> StudyReport:
    """Read the study from MLflow (and Optuna) and compute every table of the report.

    `runs` and `per_query` (`load_study_runs`, `load_per_query` with this metric among its metrics)
    skip reading them again: a caller reporting several metrics of one study loads them once.
    """
    study = runs if runs is not None else load_study_runs(name, tracking_uri)
    df = study.trials
    if df.empty:
        raise ReportError(f"study {name!r} has no finished trials ({len(study.excluded)} failed/killed)")
    metric = resolve_metric(df, metric, name)
    best = best_trial(df, metric)
    with tempfile.TemporaryDirectory(prefix="kd_report_") as tmp:
        config_path = download_artifact(tracking_uri, best["run_id"], TRIAL_CONFIG_ARTIFACT, tmp)
        best_config = config_path.read_text() if config_path else None
    report = StudyReport(study, metric, best, best_config, notes=list(study.notes))
    if best_config is None:
        report.notes.append(f"best trial run {best['run_id']} has no {TRIAL_CONFIG_ARTIFACT} artifact")

    if per_query is None:
        per_query = load_per_query(tracking_uri, df["run_id"], metrics=[metric])
    if not any(metric in v for v in per_query.values()):
        report.notes.append(f"no trial has per-query values of {metric} in {PER_QUERY_ARTIFACT}: "
                            "tables carry no significance marks")

    losses = df["loss.name"] if "loss.name" in df.columns else pd.Series(dtype=object)
    wkl = df[losses == "wkl"]
    if wkl.empty:
        report.notes.append("no finished WKL trials: γ1 × α table skipped")
    else:
        _add_table(report, "gamma1_alpha", wkl, "loss.gamma1", "loss.alpha", per_query, significance,
                   f"{metric_label(metric)} by γ1 × α (WKL)")
    if not {"sampler.name", "sampler.k"} <= set(df.columns):
        report.notes.append("trials have no sampler.name / sampler.k: sampler × K tables skipped")
    elif losses.empty or losses.isna().all():
        _add_table(report, "sampler_k", df, "sampler.name", "sampler.k", per_query, significance,
                   f"{metric_label(metric)} by sampler × K")
    else:
        for loss in _ordered(losses.dropna()):
            _add_table(report, f"sampler_k_{_slug(loss)}", df[losses == loss], "sampler.name", "sampler.k",
                       per_query, significance, f"{metric_label(metric)} by sampler × K (loss: {loss})")

    if optuna_storage is not None:
        report.importances, report.importance_notes = param_importances(optuna_storage, name)
    report.sampler_diagnostics = sampler_diagnostics(df)
    if report.sampler_diagnostics is None:
        report.notes.append(f"no {VARIANCE_METRIC} / {ENTROPY_METRIC} metrics: sampler diagnostics skipped")
    report.trial_times = trial_times(df)
    return report


def _add_table(report: StudyReport, slug: str, df: pd.DataFrame, rows: str, cols: str,
               per_query: Mapping, significance: float, title: str) -> None:
    try:
        report.tables[slug] = sensitivity_table(df, rows, cols, report.metric, per_query,
                                                significance=significance, title=title)
    except ReportError as error:
        report.notes.append(f"{title}: skipped ({error})")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))


def plot_heatmap(table: SensitivityTable, path: str | Path) -> Path:
    """PNG heatmap of a sensitivity table: annotated means, † marks, the best cell boxed."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, Agg canvas on save
    from matplotlib.patches import Rectangle

    nrows, ncols = table.mean.shape
    fig = Figure(figsize=(max(5.0, 2.4 + 1.35 * ncols), max(3.2, 1.9 + 0.62 * nrows)), dpi=130,
                 layout="constrained")
    ax = fig.subplots()
    values = np.ma.masked_invalid(table.mean.to_numpy(dtype=float))
    cmap = _colormap()
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.9)
    colorbar.set_label(metric_label(table.metric))
    low, high = image.norm.vmin, image.norm.vmax
    for i, r in enumerate(table.mean.index):
        for j, c in enumerate(table.mean.columns):
            value = table.mean.loc[r, c]
            if pd.isna(value):
                ax.text(j, i, "—", ha="center", va="center", color="#555555", fontsize=11)
                continue
            shade = cmap(0.5 if high == low else (value - low) / (high - low))
            luminance = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
            is_best = (r, c) == table.best
            ax.text(j, i, table.cell_text(r, c), ha="center", va="center", fontsize=10,
                    color="black" if luminance > 0.5 else "white", fontweight="bold" if is_best else "normal")
            if is_best:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2.5))
    ax.set_xticks(range(ncols), [_fmt_label(c) for c in table.mean.columns])
    ax.set_yticks(range(nrows), [_fmt_label(r) for r in table.mean.index])
    ax.set_xlabel(_axis(table.cols))
    ax.set_ylabel(_axis(table.rows))
    ax.set_title(table.title, fontsize=11)
    caption = "cell: mean over trials (n = trials pooled, 1 unless shown); red box: best"
    if table.tested:
        caption += (f"\n{DAGGER}: worse than best, two-sided paired t-test over queries,"
                    f"\np < {table.significance:g}, no multiple-testing correction")
    else:
        caption += "\nno per-query values: no significance test"
    # supxlabel, unlike fig.text, gets room from the constrained layout.
    fig.supxlabel(caption, fontsize=7.5, color="#444444")
    path = Path(path)
    fig.savefig(path)
    return path


def _colormap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#e6e6e6")


def plot_importances(importances: pd.DataFrame, path: str | Path, study: str) -> Path:
    """Horizontal bar PNG of Optuna parameter importances (largest on top)."""
    from matplotlib.figure import Figure

    data = importances.sort_values("importance")
    fig = Figure(figsize=(6.4, max(2.6, 1.3 + 0.42 * len(data))), dpi=130, layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(data["param"], data["importance"], color="#3b75af")
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=9, fontfamily="sans-serif")
    ax.set_xlim(0, max(1.0, float(data["importance"].max()) * 1.15))
    ax.set_xlabel("importance (Optuna, sums to 1)")
    ax.set_title(f"Parameter importances — study {study}", fontsize=11)
    path = Path(path)
    fig.savefig(path)
    return path


def frame_to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table (pandas' own needs `tabulate`, which the project does not install)."""
    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return "—" if pd.isna(value) else f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"
        return _fmt_label(value)

    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _times_with_mean(times: pd.DataFrame) -> pd.DataFrame:
    shown = times.assign(run_id=times["run_id"].str[:8])
    mean = {c: (shown[c].mean() if c.startswith(TIME_PREFIX) else "") for c in shown.columns}
    mean["trial_id"] = "mean"
    return pd.concat([shown, pd.DataFrame([mean])], ignore_index=True)


def report_study(name: str, tracking_uri: str, out_dir: str | Path, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, log_to_parent: bool = True) -> Path:
    """Write the study report (CSV + Markdown per table, PNG heatmaps, `report.md`) and return `report.md`.

    With `log_to_parent`, every file written is logged on the study's parent run under `report/`.
    """
    report = build_report(name, tracking_uri, metric, optuna_storage)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(filename: str, text: str) -> Path:
        path = out / filename
        path.write_text(text)
        written.append(path)
        return path

    study, metric = report.study, report.metric
    best = report.best
    trials_table = study.trials.drop(columns=["start_time", "end_time"])
    trials_table.to_csv(out / "trials.csv", index=False)
    written.append(out / "trials.csv")

    md = [f"# kd-study report: {name}", ""]
    md += [f"- tracking store: `{tracking_uri}`; parent run `{study.parent_run_id}`",
           f"- trials: {len(study.trials)} finished"
           + (f", {len(study.excluded)} excluded (not FINISHED, see below)" if len(study.excluded) else ""),
           f"- metric: {metric_label(metric)} (`{metric}`), higher is better",
           f"- best trial: `{best['trial_id']}` (run `{best['run_id']}`): {metric} = {best[metric]:.4f}"
           + _key_params(best),
           "- all trials: [trials.csv](trials.csv)", ""]
    if report.notes:
        md += ["Notes:", ""] + [f"- {n}" for n in report.notes] + [""]

    if report.tables:
        md += ["## How to read the sensitivity tables", "",
               "A cell is the mean of the metric over the finished trials of that configuration (seeds, and "
               "any searched parameter not on the table's axes); the best cell is bold. Each other cell is "
               "compared with the best cell by a two-sided paired t-test (`scipy.stats.ttest_rel`) over "
               "queries: per-query values (`per_query.json`) averaged over the cell's trials, matched by "
               f"qid. {DAGGER} marks p < {SIGNIFICANCE:g} with a lower mean. No multiple-testing correction "
               "is applied, so with many cells a few marks are expected by chance.", ""]
    for slug, table in report.tables.items():
        stem = f"sensitivity_{slug}"
        table.long().to_csv(out / f"{stem}.csv", index=False)
        written.append(out / f"{stem}.csv")
        body = table.to_markdown() + "\n\n" + table.legend() + "".join(f"\n- {n}" for n in table.notes)
        write(f"{stem}.md", f"# {table.title}\n\n{body}\n")
        written.append(plot_heatmap(table, out / f"{stem}.png"))
        md += [f"## {table.title}", "", f"![{table.title}]({stem}.png)", "", body, "",
               f"Files: [{stem}.csv]({stem}.csv), [{stem}.md]({stem}.md)", ""]

    if optuna_storage is not None:
        md += ["## Parameter importances (Optuna)", ""]
        if report.importances is not None:
            report.importances.to_csv(out / "importances.csv", index=False)
            written.append(out / "importances.csv")
            table_md = frame_to_markdown(report.importances)
            write("importances.md", f"# Parameter importances: {name}\n\n{table_md}\n")
            written.append(plot_importances(report.importances, out / "importances.png", name))
            md += ["![importances](importances.png)", "", table_md, "",
                   f"Over {report.importances.attrs.get('n_trials', '?')} completed Optuna trials.", ""]
        md += [f"- {n}" for n in report.importance_notes] + ([""] if report.importance_notes else [])

    md += ["## Sampled teacher scores per sampler", ""]
    if report.sampler_diagnostics is not None:
        report.sampler_diagnostics.to_csv(out / "sampler_diagnostics.csv", index=False)
        written.append(out / "sampler_diagnostics.csv")
        table_md = frame_to_markdown(report.sampler_diagnostics)
        write("sampler_diagnostics.md", f"# Sampled teacher-score diagnostics: {name}\n\n{table_md}\n")
        md += ["Mean over trials of the per-query variance and entropy of the K sampled teacher scores.", "",
               table_md, ""]
    else:
        md += ["No sampled-score diagnostics were logged.", ""]

    md += ["## Trial times (seconds)", ""]
    if report.trial_times is not None:
        report.trial_times.to_csv(out / "trial_times.csv", index=False)
        written.append(out / "trial_times.csv")
        table_md = frame_to_markdown(_times_with_mean(report.trial_times), digits=1)
        write("trial_times.md", f"# Trial times: {name}\n\n{table_md}\n")
        md += [table_md, ""]
    else:
        md += ["No `time/*` metrics were logged.", ""]

    if len(study.excluded):
        md += ["## Excluded runs (not FINISHED)", "", frame_to_markdown(study.excluded), ""]

    md += ["## Best trial config", "",
           f"Trial `{best['trial_id']}`, run `{best['run_id']}`, {metric} = {best[metric]:.4f}. "
           "`kd-study export` writes it as a file that `kd-study train` re-runs.", ""]
    if report.best_config_yaml is not None:
        md += ["```yaml", report.best_config_yaml.rstrip(), "```", ""]
    else:
        params = {p: _plain(best[p]) for p in study.param_names if p in best.index and not _missing(best[p])}
        md += ["No trial_config.yaml artifact; its logged params:", "", "```yaml",
               "\n".join(f"{k}: {v}" for k, v in params.items()), "```", ""]
    report_path = write("report.md", "\n".join(md))

    if log_to_parent:
        client = _client(tracking_uri)
        for path in written:
            client.log_artifact(study.parent_run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    return report_path


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _key_params(best: pd.Series) -> str:
    keys = [k for k in ("loss.name", "loss.gamma1", "loss.alpha", "sampler.name", "sampler.k", "seed")
            if k in best.index and not _missing(best[k])]
    return (" (" + ", ".join(f"{k}={_fmt_label(best[k])}" for k in keys) + ")") if keys else ""


# ---- terminal ----------------------------------------------------------------------------------------------
def render_report(report: StudyReport, console=None) -> None:
    """Print a computed report's tables with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    study, metric, best = report.study, report.metric, report.best
    console.rule(f"kd-study report: {study.name}")
    console.print(f"{len(study.trials)} finished trials, {len(study.excluded)} excluded · metric "
                  f"{metric_label(metric)} ({metric}) · best trial {best['trial_id']} = {best[metric]:.4f}"
                  + _key_params(best), highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for table in report.tables.values():
        # Title and legend outside the grid: a narrow grid would wrap them line by line.
        console.print()
        console.print(f"[bold]{table.title}[/]", highlight=False)
        grid = Table()
        grid.add_column(f"{SHORT_AXIS.get(table.rows, table.rows)} \\ {SHORT_AXIS.get(table.cols, table.cols)}",
                        style="bold")
        for c in table.mean.columns:
            grid.add_column(_fmt_label(c), justify="right")
        for r in table.mean.index:
            cells = []
            for c in table.mean.columns:
                text = table.cell_text(r, c)
                style = "bold green" if (r, c) == table.best else "red" if table.worse.loc[r, c] else ""
                cells.append(f"[{style}]{text}[/]" if style else text)
            grid.add_row(_fmt_label(r), *cells)
        console.print(grid)
        console.print(table.legend(), style="dim", highlight=False)
        for note in table.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    if report.importances is not None:
        console.print(_rich_table(report.importances, "Parameter importances (Optuna)"))
    for note in report.importance_notes:
        console.print(f"[yellow]importances:[/] {note}", highlight=False)
    if report.sampler_diagnostics is not None:
        console.print(_rich_table(report.sampler_diagnostics, "Sampled teacher scores per sampler"))
    if report.trial_times is not None:
        console.print(_rich_table(_times_with_mean(report.trial_times), "Trial times (s)", digits=1))
    if len(study.excluded):
        console.print(_rich_table(study.excluded, "Excluded runs (not FINISHED)"))


def _rich_table(frame: pd.DataFrame, title: str, digits: int = 4):
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[("—" if pd.isna(v) else f"{v:.{digits}f}") if isinstance(v, (float, np.floating))
                        else _fmt_label(v) for v in row])
    return table


def print_report(name: str, tracking_uri: str, metric: str | None = None,
                 optuna_storage: str | os.PathLike | None = None, *, console=None) -> None:
    """Compute the study report and render its tables in the terminal (rich)."""
    render_report(build_report(name, tracking_uri, metric, optuna_storage), console)
