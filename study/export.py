"""Export the best finished trial of a study as a full TrialConfig YAML that `kd-study train` re-runs.

The file is the trial's own TRIAL_CONFIG_ARTIFACT, validated against `TrialConfig` (so a config
that would not re-run is an error here, not at training time), preceded by a comment header naming
the study, the trial run and the metric value. It is also logged on the study's parent run as
BEST_CONFIG_ARTIFACT. The best trial is the one the report names (`study.report.choose_best`).
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
from trainables.outputs import BEST_STEP, BEST_SUFFIX


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


def selection_line(metric: str, trial) -> str:
    """The header line that says what the selection looked at: the final student or its curve's best point."""
    if not metric.endswith(BEST_SUFFIX):
        return f"# selected on: the final student ({metric} at the end of training)"
    step, steps = trial.get(BEST_STEP), trial.get("step")
    known = all(v is not None and v == v for v in (step, steps))   # v == v: not NaN
    at = f" at step {int(step)} of {int(steps)}" if known else ""
    return (f"# selected on: the best point of the learning curve ({metric}{at}); this config trains the "
            "whole budget, and only its final student is kept")
