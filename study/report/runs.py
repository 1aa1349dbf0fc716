"""Reading a study from the MLflow store: its parent run, its trial runs as one frame, their artifacts.

Reads only the tracking contract of `study/track/tracking.py` (names in `study/track/tags.py`): a parent run
tagged STUDY_NAME_TAG = <name> and STUDY_KIND_TAG = STUDY_KIND, whose params hold the space file's
objective (STUDY_METRIC_PARAM and STUDY_MODE_PARAM, or STUDY_OBJECTIVES_PARAM); nested trial runs
(PARENT_RUN_TAG) with the flattened trial config as dotted params (`loss.gamma1`, `sampler.k`, ...),
final metrics, and the artifacts TRIAL_CONFIG_ARTIFACT and PER_QUERY_ARTIFACT
(`{metric_key: {qid: value}}`). Only FINISHED trial runs count; the others are kept apart.

Replicates: a trial (seed) run's POINT_TAG and REPLICATE_TAG become the frame's `point` and
`replicate` columns; a run without them (a study made before replicates) is its own point
(`point` = its trial_id) and replicate 0, so a one-seed study reads as before. The parent run's
STUDY_BASELINE_PARAM (JSON `{dotted key: value}`) is `StudyRuns.baseline`, its STUDY_CONTRASTS_PARAM
(JSON list, study/space/contrasts.py) `StudyRuns.contrasts`.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from study.track.tags import (
    OVERHEAD_METRIC, PARENT_RUN_TAG, PER_QUERY_ARTIFACT, POINT_TAG, REPLICATE_TAG, STUDY_BASELINE_PARAM,
    STUDY_CONTRASTS_PARAM, STUDY_KIND,
    STUDY_KIND_TAG, STUDY_METRIC_PARAM, STUDY_MODE_PARAM, STUDY_NAME_TAG, STUDY_OBJECTIVES_PARAM, TAG_FALLBACKS,
    TRIAL_ID_TAG, WALL_METRIC,
)
from study.track.tags import POINT_KIND, STUDY_RUN_TAG   # replicates: seed runs nest under point runs
from study.track.tracking import redact
from trainables.errors import BadInput
from trainables.outputs import EVAL_SECONDS, TRAIN_SECONDS

META_COLUMNS = ("run_id", "trial_id", "point", "replicate", "run_name", "status", "start_time", "end_time")
PerQuery = dict[str, dict[str, dict[str, float]]]   # {run_id: {metric_key: {qid: value}}}


class ReportError(BadInput, LookupError):
    """A study, metric or artifact the report or export needs is missing; the message is one line."""


def read_yaml_model(path: str | Path, model: type, what: str):
    """`model` validated from the YAML file at `path`; a ReportError of one line naming the file (and key) otherwise.

    `what` names the file in the error when it cannot be read ("the document spec", "the findings").
    """
    import yaml
    from pydantic import ValidationError

    from trainables.yaml_files import NotUtf8, read_utf8, safe_load_unique

    try:
        raw = safe_load_unique(read_utf8(path))   # a key given twice is an error, not "the last one wins"
    except NotUtf8 as error:
        raise ReportError(str(error)) from None
    except (OSError, yaml.YAMLError) as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ReportError(f"{path}: cannot read {what} ({problem}{where})") from None
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<top>"
        raise ReportError(f"{path}: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class StudyRuns:
    """A study's parent run and its trial runs: `trials` (FINISHED) and `excluded` (any other status).

    `objectives` are the study's own (metric, mode) pairs from its space file, first = the one its
    search optimised; empty for a parent run that did not log them. `baseline` is the space file's
    `study.baseline` (`{dotted key: value}`), empty when it names none; `contrasts` its
    `study.contrasts` (one mapping per declared contrast).
    """

    name: str
    tracking_uri: str
    parent_run_id: str
    experiment_id: str
    trials: pd.DataFrame
    excluded: pd.DataFrame
    param_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    objectives: tuple[tuple[str, str], ...] = ()
    baseline: dict[str, Any] = field(default_factory=dict)
    contrasts: tuple[dict[str, Any], ...] = ()


def mlflow_client(tracking_uri: str):
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
    client = mlflow_client(tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    study_filter = f"tags.`{STUDY_KIND_TAG}` = {_quote(STUDY_KIND)}"
    parents = _search_all(client, experiment_ids, f"{study_filter} and tags.`{STUDY_NAME_TAG}` = {_quote(name)}")
    if not parents:
        studies = _search_all(client, experiment_ids, study_filter)
        known = sorted({r.data.tags.get(STUDY_NAME_TAG, "?") for r in studies})
        there = f"known studies: {', '.join(known)}" if known else "it holds no kd-study studies"
        raise ReportError(f"no study named {name!r} in {redact(tracking_uri)} ({there})")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    parent = parents[0]
    notes = []
    if len(parents) > 1:
        others = ", ".join(r.info.run_id for r in parents[1:])
        notes.append(f"{len(parents) - 1} older parent run(s) named {name!r} ignored: {others}")

    children = trial_runs(client, parent.info.experiment_id, parent.info.run_id)
    frame, param_names, metrics = _trial_frame(children)
    finished = frame["status"] == "FINISHED"
    trials = frame[finished].reset_index(drop=True)
    excluded = frame.loc[~finished, ["run_id", "trial_id", "status"]].reset_index(drop=True)
    trials.attrs.update(study=name, parent_run_id=parent.info.run_id, metrics=metrics)
    return StudyRuns(name, tracking_uri, parent.info.run_id, parent.info.experiment_id, trials, excluded,
                     param_names, metrics, tuple(notes), study_objectives(parent.data.params),
                     study_baseline(parent.data.params), study_contrasts(parent.data.params))


def trial_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """The study's trial runs: nested under its parent, or (replicates) seed runs nested under point runs.

    Seed runs carry STUDY_RUN_TAG = the parent; point runs and child studies (`kd-study confirm`)
    are not trials.
    """
    runs = {r.info.run_id: r for tag in (PARENT_RUN_TAG, STUDY_RUN_TAG)
            for r in _search_all(client, [experiment_id], f"tags.`{tag}` = {_quote(parent_run_id)}")}
    return [r for r in runs.values() if r.data.tags.get(STUDY_KIND_TAG) not in (STUDY_KIND, POINT_KIND)]


def _trial_frame(runs: list) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    """One row per trial run (every status), in start order; with the param and metric column names."""
    rows, param_names, metric_names = [], set(), set()
    for run in runs:
        params = {k: _parse_param(v) for k, v in run.data.params.items()}
        for param, tag in TAG_FALLBACKS.items():
            if param not in params and tag in run.data.tags:
                params[param] = _parse_param(run.data.tags[tag])
        param_names.update(params)
        metric_names.update(run.data.metrics)
        trial_id = run.data.tags.get(TRIAL_ID_TAG, run.info.run_name or run.info.run_id[:8])
        rows.append({
            "run_id": run.info.run_id,
            "trial_id": trial_id,
            "point": run.data.tags.get(POINT_TAG, trial_id),
            "replicate": _replicate(run.data.tags.get(REPLICATE_TAG)),
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
    metrics = tuple(c for c in columns if c in metric_names or c.startswith("metrics."))
    return frame, tuple(sorted(param_names)), metrics


def study_objectives(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The (metric, mode) pairs a parent run's params declare: its objectives, else its metric and mode."""
    objectives = params.get(STUDY_OBJECTIVES_PARAM)
    if objectives not in (None, "None"):
        try:
            return tuple((o["metric"], o.get("mode", "max")) for o in json.loads(objectives))
        except (ValueError, TypeError, KeyError):
            return ()
    metric = params.get(STUDY_METRIC_PARAM)
    if metric in (None, "None"):
        return ()
    return ((metric, params.get(STUDY_MODE_PARAM, "max")),)


def study_baseline(params: dict[str, str]) -> dict[str, Any]:
    """The baseline configuration a parent run's params declare (`{dotted key: value}`), or {} for none."""
    text = params.get(STUDY_BASELINE_PARAM)
    if text in (None, "None", "null", ""):
        return {}
    try:
        baseline = json.loads(text)
    except ValueError:
        return {}
    return dict(baseline) if isinstance(baseline, dict) else {}


def study_contrasts(params: dict[str, str]) -> tuple[dict[str, Any], ...]:
    """The contrasts a parent run's params declare (`study.contrasts`, a JSON list), or () for none."""
    text = params.get(STUDY_CONTRASTS_PARAM)
    if text in (None, "None", "null", ""):
        return ()
    try:
        contrasts = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(contrasts, list):
        return ()
    return tuple(c for c in contrasts if isinstance(c, dict) and isinstance(c.get("vs"), dict) and c["vs"])


def _replicate(tag: str | None) -> int:
    try:
        return int(tag) if tag is not None else 0
    except ValueError:
        return 0


def _with_wall_and_overhead(frame: pd.DataFrame) -> pd.DataFrame:
    """Add each run's wall time and its overhead: what is neither training nor evaluation."""
    if frame.empty:
        return frame
    wall = (frame["end_time"] - frame["start_time"]) / 1000.0
    frame[WALL_METRIC] = wall.where(frame["end_time"].notna())
    parts = [c for c in (TRAIN_SECONDS, EVAL_SECONDS) if c in frame.columns]
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


def read_artifact_text(tracking_uri: str, run_id: str, artifact: str) -> str | None:
    """The text of one run artifact, or None when the run does not have it."""
    with tempfile.TemporaryDirectory(prefix="kd_report_") as tmp:
        path = download_artifact(tracking_uri, run_id, artifact, tmp)
        return path.read_text() if path else None


def load_per_query(tracking_uri: str, run_ids: Iterable[str], metrics: Sequence[str] | None = None) -> PerQuery:
    """`{run_id: {metric_key: {qid: value}}}` from each run's PER_QUERY_ARTIFACT (runs without it are absent).

    Only `metrics` are kept when given: MS MARCO Dev has ~7k queries per metric per trial.
    """
    out: PerQuery = {}
    with tempfile.TemporaryDirectory(prefix="kd_report_") as tmp:
        for run_id in run_ids:
            path = download_artifact(tracking_uri, run_id, PER_QUERY_ARTIFACT, Path(tmp) / run_id)
            if path is None:
                continue
            raw = json.loads(path.read_text())
            out[run_id] = {m: {str(q): float(v) for q, v in values.items()}
                           for m, values in raw.items() if metrics is None or m in metrics}
    return out


def log_on_parent(study: StudyRuns, paths: Iterable[Path], artifact_dir: str | None = None) -> None:
    """Log files on the study's parent run (under `artifact_dir` when given)."""
    client = mlflow_client(study.tracking_uri)
    for path in paths:
        client.log_artifact(study.parent_run_id, str(path), artifact_path=artifact_dir)
