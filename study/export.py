"""Export the best finished trial of a study as a full TrialConfig YAML that `kd-study train` re-runs.

The file is the trial's own TRIAL_CONFIG_ARTIFACT, validated against `TrialConfig` (so a config
that would not re-run is an error here, not at training time), preceded by a comment header naming
the study, the trial run and the metric value. It is also logged on the study's parent run as
BEST_CONFIG_ARTIFACT. The best trial is the one the report names (`study.report.choose_best`).
`export_tied` writes every configuration statistically tied with the best (the report's tied set).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import yaml

from study.report import ReportError, check_mode, choose_best, download_artifact, load_study_runs, log_on_parent
from study.tags import BEST_CONFIG_ARTIFACT, TRIAL_CONFIG_ARTIFACT
from trainables.config import ConfigError, TrialConfig


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
            config = TrialConfig.from_yaml(source)
        except ConfigError as error:
            raise ReportError(f"{TRIAL_CONFIG_ARTIFACT} of run {run_id} is not a valid trial config: {error}") from None

        header = [
            "# kd-study best trial config: re-run with `kd-study train <this file>`",
            f"# study: {name}",
            f"# trial: {best.trial['trial_id']} (MLflow run {run_id}, parent run {study.parent_run_id})",
            f"# {best.metric} = {best.trial[best.metric]:.6g} ({best.mode} over {len(study.trials)} finished trials)",
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
    from study.report import load_per_query
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
        return TrialConfig.from_yaml(source)
    except ConfigError as error:
        raise ReportError(f"{TRIAL_CONFIG_ARTIFACT} of run {run_id} is not a valid trial config: {error}") from None
