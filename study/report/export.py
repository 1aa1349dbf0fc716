"""Export the best finished trial of a study: its config as a YAML `kd-study train` re-runs, and its model.

`export_best`: the trial's own TRIAL_CONFIG_ARTIFACT, validated against `TrialConfig` (so a config
that would not re-run is an error here, not at training time), preceded by a comment header naming
the study, the trial run and the metric value. It is also logged on the study's parent run as
BEST_CONFIG_ARTIFACT. The best trial is the one the report names (`study.report.choose_best`).
`export_tied` writes every configuration statistically tied with the best (the report's tied set).

`export_best_model`: the trial's trained student (its final checkpoint's STUDENT_DIR, or the
STUDENT_ARTIFACT_DIR a `--log-models` study logged) as a folder that sentence-transformers and
plain transformers load (`trainables.models.st_export`), optionally registered in the MLflow model
registry (`study.track.model_registry`).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study.report.best import Best, check_mode, choose_best
from study.report.runs import ReportError, StudyRuns, download_artifact, load_study_runs, log_on_parent, mlflow_client
from study.track.tags import BEST_CONFIG_ARTIFACT, CHECKPOINT_TAG, STUDENT_ARTIFACT_DIR, TRIAL_CONFIG_ARTIFACT
from trainables.config import ConfigError, TrialConfig
from trainables.outputs import BEST_STEP, BEST_SUFFIX, TIME_PREFIX


def export_best(name: str, tracking_uri: str, metric: str | None = None,
                out_path: str | Path = "best.yaml", mode: str | None = None) -> Path:
    """Write the best finished trial's full config to `out_path` (and log it on the parent run); return the path.

    `metric` and `mode` default to the study's own objective; `mode="max"` picks the highest
    `metric`, `"min"` the lowest. Errors (`ReportError`, one line): unknown study, unknown metric
    (the message lists the available ones), no finished trial, a best trial without a
    TRIAL_CONFIG_ARTIFACT or with one that `TrialConfig` rejects.
    """
    if mode is not None:
        check_mode(mode)
    study = load_study_runs(name, tracking_uri)
    best = choose_best(study, metric, mode)
    run_id = best.trial["run_id"]

    with tempfile.TemporaryDirectory(prefix="kd_export_") as tmp:
        source = download_artifact(tracking_uri, run_id, TRIAL_CONFIG_ARTIFACT, tmp)
        if source is None:
            raise ReportError(f"best trial run {run_id} of study {name!r} has no {TRIAL_CONFIG_ARTIFACT} artifact")
        try:
            config = TrialConfig.from_yaml(source, other_settings="drop")   # an older study's flat loss block too
        except ConfigError as error:
            raise ReportError(f"{TRIAL_CONFIG_ARTIFACT} of run {run_id} is not a valid trial config: {error}") from None

        header = [
            "# kd-study best trial config: re-run with `kd-study train <this file>`",
            f"# study: {name}",
            f"# trial: {best.trial['trial_id']} (MLflow run {run_id}, parent run {study.parent_run_id})",
            f"# {best.metric} = {best.trial[best.metric]:.6g} ({best.mode} over {len(study.trials)} finished trials)",
            selection_line(best.metric, best.trial),
            f"# exported: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        ]
        body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header) + "\n" + body)

        # The artifact keeps a fixed name whatever the user called the file.
        logged = Path(tmp) / "log" / BEST_CONFIG_ARTIFACT
        logged.parent.mkdir()
        shutil.copyfile(out, logged)
        log_on_parent(study, [logged])
    return out


TIED_TABLE = "tied.csv"


def export_tied(name: str, tracking_uri: str, out_dir: str | Path, metric: str | None = None,
                mode: str | None = None, correction: str = "holm") -> Path:
    """Write every configuration statistically tied with the best to `out_dir`; return its TIED_TABLE's path.

    One trial YAML per tied point (`00_<point>.yaml` is the best; each headed by its mean, 95% CI
    and corrected p against the best) and TIED_TABLE (one row per tied point: its params, seeds,
    mean, CI, p, file). The points, their CIs and the tie rule are the report's
    (`study.report.points.point_table`: paired t-tests against the best point, `correction`
    across all points); `metric` and `mode` default to the study's own, as for `export_best`.
    """
    from study.report.runs import load_per_query
    from study.report.points import point_table, tied_points, varying_params
    from study.report.text import slug

    if mode is not None:
        check_mode(mode)
    study = load_study_runs(name, tracking_uri)
    best = choose_best(study, metric, mode)
    per_query = load_per_query(tracking_uri, study.trials["run_id"], metrics=[best.metric])
    params = varying_params(study.trials, study.param_names)
    points = point_table(study.trials, best.metric, per_query, params, mode=best.mode, correction=correction)
    tied = tied_points(points).reset_index(drop=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with tempfile.TemporaryDirectory(prefix="kd_export_") as tmp:
        for rank, row in tied.iterrows():
            config = _valid_config(tracking_uri, row["run_id"], name, Path(tmp) / str(rank))
            interval = "no CI (no per-query values)" if row[["ci_low", "ci_high"]].isna().any() else \
                f"95% CI [{row['ci_low']:.6g}, {row['ci_high']:.6g}]"
            tested = "the best" if row["best"] else f"corrected p vs best = {row['p_adjusted_vs_best']:.3g}"
            header = [
                f"# kd-study configuration tied with the best ({rank + 1} of {len(tied)}): "
                "re-run with `kd-study train <this file>`",
                f"# study: {name}; point {row['point']} (first seed run {row['run_id']})",
                f"# {best.metric} = {row['mean']:.6g} ({best.mode}; mean over {row['n_seeds']} seed run(s)), "
                f"{interval}, {tested} ({correction} across {len(points)} configurations)",
            ]
            path = out / f"{rank:02d}_{slug(row['point'])}.yaml"
            path.write_text("\n".join(header) + "\n" + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            files.append(path.name)
    table = tied.drop(columns=["tied_with_best"]).assign(file=files, metric=best.metric, mode=best.mode)
    table.to_csv(out / TIED_TABLE, index=False)
    return out / TIED_TABLE


def _valid_config(tracking_uri: str, run_id: str, name: str, tmp: Path) -> TrialConfig:
    """A run's TRIAL_CONFIG_ARTIFACT, validated (a config that would not re-run is a ReportError here)."""
    source = download_artifact(tracking_uri, run_id, TRIAL_CONFIG_ARTIFACT, tmp)
    if source is None:
        raise ReportError(f"trial run {run_id} of study {name!r} has no {TRIAL_CONFIG_ARTIFACT} artifact")
    try:
        return TrialConfig.from_yaml(source, other_settings="drop")   # an older study's flat loss block too
    except ConfigError as error:
        raise ReportError(f"{TRIAL_CONFIG_ARTIFACT} of run {run_id} is not a valid trial config: {error}") from None
@dataclass(frozen=True)
class ExportedModel:
    """Where the best trial's student was written, and its registry version when registered."""

    folder: Path | None        # None: registered from a temporary folder
    trial_id: str
    run_id: str
    metric: str
    value: float
    version: Any = None        # an mlflow ModelVersion


def export_best_model(name: str, tracking_uri: str, out_dir: str | Path | None, metric: str | None = None,
                      mode: str | None = None, register: str | None = None) -> ExportedModel:
    """Write the best finished trial's student to `out_dir` as a sentence-transformers folder; register it as
    a new version of the registered model `register` when given (`out_dir` None: a temporary folder).

    Errors (`ReportError`, one line): those of `export_best`, and a best trial whose student is in
    neither its checkpoint folder nor its run's artifacts.
    """
    from trainables.models.st_export import check_model_folder, write_sentence_transformer

    if mode is not None:
        check_mode(mode)
    if out_dir is not None:
        try:
            check_model_folder(out_dir)
        except FileExistsError as error:
            raise ReportError(str(error)) from None
    study = load_study_runs(name, tracking_uri)
    best = choose_best(study, metric, mode)
    run_id, trial_id = best.trial["run_id"], str(best.trial["trial_id"])
    metrics = trial_metrics(study, best)
    card = {"study": name, "trial": f"{trial_id} (MLflow run {run_id})",
            **{key: f"{value:.4f}" for key, value in metrics.items()}}
    with tempfile.TemporaryDirectory(prefix="kd_export_model_") as tmp:
        student = _best_student(study, run_id, Path(tmp) / "download")
        folder = write_sentence_transformer(student, out_dir if out_dir is not None else Path(tmp) / "model", card)
        version = None
        if register:
            from study.track.model_registry import register_student

            description = (f"kd-study study {name!r}, trial {trial_id} (MLflow run {run_id}): "
                           f"{best.metric} = {best.trial[best.metric]:.6g}, the best ({best.mode}) of "
                           f"{len(study.trials)} finished trials.")
            version = register_student(folder, tracking_uri, register, experiment_id=study.experiment_id,
                                       run_id=run_id, study_name=name, trial_id=trial_id, metrics=metrics,
                                       description=description)
    return ExportedModel(Path(out_dir) if out_dir is not None else None, trial_id, run_id, best.metric,
                         float(best.trial[best.metric]), version)


def trial_metrics(study: StudyRuns, best: Best) -> dict[str, float]:
    """The best trial's final evaluation metrics (not its timings or training curves), ranked metric first."""
    names = [best.metric] + sorted(m for m in study.metric_names if m != best.metric
                                   and not m.startswith((TIME_PREFIX, "train/", "metrics.")))
    return {m: float(best.trial[m]) for m in names if m in best.trial and best.trial[m] == best.trial[m]}


def _best_student(study: StudyRuns, run_id: str, download_dir: Path) -> Path:
    """The trial's saved student: its final checkpoint's folder when on this machine, else its run artifact."""
    from trainables.models.student import STUDENT_META

    client = mlflow_client(study.tracking_uri)
    checkpoint = client.get_run(run_id).data.tags.get(CHECKPOINT_TAG)
    if checkpoint and Path(checkpoint, STUDENT_ARTIFACT_DIR, STUDENT_META).is_file():
        return Path(checkpoint, STUDENT_ARTIFACT_DIR)
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, STUDENT_ARTIFACT_DIR)}
    if STUDENT_META in logged:   # the student was logged (--log-models)
        download_dir.mkdir(parents=True, exist_ok=True)
        # the client reads the run's own artifact store (a runs:/ download would also open the default store)
        return Path(client.download_artifacts(run_id, STUDENT_ARTIFACT_DIR, str(download_dir)))
    where = f"its checkpoint {checkpoint}" if checkpoint else f"a checkpoint (no {CHECKPOINT_TAG} tag)"
    raise ReportError(f"the student of best trial run {run_id} of study {study.name!r} is in neither {where} nor "
                      f"the run's {STUDENT_ARTIFACT_DIR}/ artifacts (run studies with --log-models to keep students "
                      "in MLflow)")


def selection_line(metric: str, trial) -> str:
    """The header line that says what the selection looked at: the final student or its curve's best point."""
    if not metric.endswith(BEST_SUFFIX):
        return f"# selected on: the final student ({metric} at the end of training)"
    step, steps = trial.get(BEST_STEP), trial.get("step")
    known = all(v is not None and v == v for v in (step, steps))   # v == v: not NaN
    at = f" at step {int(step)} of {int(steps)}" if known else ""
    return (f"# selected on: the best point of the learning curve ({metric}{at}); this config trains the "
            "whole budget, and only its final student is kept")
