"""Ray's MLflowLoggerCallback, made to nest each trial's run under the study's parent run and to resume.

The run contract (tags, params, metrics, artifacts, statuses) is described in study/tracking.py.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from study.dataset_inputs import log_dataset_inputs, trial_records
from study.tags import (
    CHECKPOINT_TAG, ERROR_TAG, MISSING_ARTIFACTS_TAG, PARENT_RUN_TAG, PER_QUERY_ARTIFACT, RUNS_ARTIFACT_DIR, SEARCHED_TAG,
    STATE_FAILED, STATE_FINISHED, STATE_PRUNED, STATE_RESUMED, STATE_TAG, STUDENT_ARTIFACT_DIR, STUDY_KIND_TAG,
    STUDY_NAME_TAG, TAG_FALLBACKS, TRIAL_CONFIG_ARTIFACT, TRIAL_ID_TAG, TRIAL_KIND,
)
from study.tracking import (
    FINAL_METRIC_MARKER, client, flat_config, log_params, numeric_metrics, run_name, trial_error_line, trial_name,
)


class NestedTrialRunsCallback(MLflowLoggerCallback):
    """Ray's `MLflowLoggerCallback`, with each trial's run nested under the study's parent run.

    Runs are keyed by the Tune trial id (tag TRIAL_ID_TAG), looked up in the store rather than
    held in memory: after a killed driver and `kd-study resume`, a trial re-uses its run instead of
    creating a duplicate, and a trial that had already finished (and is replayed by Tune because the
    experiment snapshot predates its end) leaves its run untouched. A new run gets its data sets as
    MLflow dataset inputs (`datasets`: study.dataset_inputs records), so the runs table says what
    each trial was trained and evaluated on.
    """

    def __init__(self, tracking_uri: str, *, experiment_id: str, parent_run_id: str, study_name: str,
                 space, log_models: bool = False, datasets: list[dict[str, Any]] | None = None):
        super().__init__(tracking_uri=tracking_uri, tags={})
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.space = space
        self.log_models = log_models
        self.datasets = list(datasets or [])
        self._client = None
        self._runs: dict[str, str] = {}
        self._untouched: set[str] = set()

    # The callback is pickled with the Tuner (tuner.pkl): keep only plain settings.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _runs={}, _untouched=set(), mlflow_util=None)
        return state

    def setup(self, *args, **kwargs) -> None:
        self._client = client(self.tracking_uri)
        self._runs, self._untouched = {}, set()

    @property
    def mlflow(self):
        if self._client is None:
            self.setup()
        return self._client

    def run_id_of(self, trial_id: str) -> str | None:
        return self._runs.get(trial_id)

    def log_trial_start(self, trial) -> None:
        trial_id = trial.trial_id
        if trial_id in self._runs:
            if trial_id not in self._untouched:
                self.mlflow.update_run(self._runs[trial_id], status="RUNNING")
            return
        cfg = self.space.trial_config(trial.config, name=trial_name(self.study_name, trial_id))
        existing = self._find_run(trial_id)
        if existing is not None and existing.info.status == "FINISHED":
            self._runs[trial_id] = existing.info.run_id
            self._untouched.add(trial_id)
            return
        if existing is not None:
            run_id = existing.info.run_id
            self.mlflow.update_run(run_id, status="RUNNING")
            self.mlflow.set_tag(run_id, STATE_TAG, STATE_RESUMED)
        else:
            params = flat_config(cfg.model_dump(mode="json"))
            run = self.mlflow.create_run(self.experiment_id, run_name=run_name(trial_id, cfg), tags={
                PARENT_RUN_TAG: self.parent_run_id,
                STUDY_NAME_TAG: self.study_name,
                STUDY_KIND_TAG: TRIAL_KIND,
                TRIAL_ID_TAG: trial_id,
                **{tag: str(params[param]) for param, tag in TAG_FALLBACKS.items()},
                SEARCHED_TAG: ",".join(sorted(trial.config)),
            })
            run_id = run.info.run_id
            log_params(self.mlflow, run_id, params)
            # a study pickled before datasets were logged has no such attribute
            log_dataset_inputs(self.mlflow, run_id, trial_records(getattr(self, "datasets", []), cfg))
            with tempfile.TemporaryDirectory(prefix="kd_trial_cfg_") as tmp:
                path = Path(tmp) / TRIAL_CONFIG_ARTIFACT
                cfg.to_yaml(path)
                self.mlflow.log_artifact(run_id, str(path))
        self._runs[trial_id] = run_id

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        trial_id = trial.trial_id
        if trial_id in self._untouched or trial_id not in self._runs:
            return
        from mlflow.entities import Metric

        step = int(result.get("step", result.get("training_iteration", iteration)) or 0)
        now = int(time.time() * 1000)
        metrics = [Metric(k[:250], v, now, step) for k, v in numeric_metrics(result).items()
                   if not math.isinf(v)]
        for start in range(0, len(metrics), 1000):
            self.mlflow.log_batch(self._runs[trial_id], metrics=metrics[start:start + 1000])

    def log_trial_end(self, trial, failed: bool = False) -> None:
        trial_id = trial.trial_id
        if trial_id in self._untouched or trial_id not in self._runs:
            return
        run_id = self._runs[trial_id]
        last = trial.last_result or {}
        if failed:
            self.mlflow.set_tag(run_id, STATE_TAG, STATE_FAILED)
            self.mlflow.set_tag(run_id, ERROR_TAG, trial_error_line(trial)[:5000])
            self.mlflow.set_terminated(run_id, status="FAILED")
            return
        if FINAL_METRIC_MARKER not in last:
            self.mlflow.set_tag(run_id, STATE_TAG, STATE_PRUNED)
            self.mlflow.set_terminated(run_id, status="KILLED")
            return
        checkpoint = last.get(CHECKPOINT_PATH_KEY)
        missing = []
        if checkpoint and Path(checkpoint, PER_QUERY_ARTIFACT).is_file():
            self.mlflow.log_artifact(run_id, str(Path(checkpoint, PER_QUERY_ARTIFACT)))
        else:
            missing.append(PER_QUERY_ARTIFACT)
        if checkpoint and Path(checkpoint, RUNS_ARTIFACT_DIR).is_dir():   # TREC runs, one per evaluation set
            self.mlflow.log_artifacts(run_id, str(Path(checkpoint, RUNS_ARTIFACT_DIR)), artifact_path=RUNS_ARTIFACT_DIR)
        else:
            missing.append(RUNS_ARTIFACT_DIR)
        if self.log_models:
            student = Path(checkpoint or "", STUDENT_ARTIFACT_DIR)
            if checkpoint and student.is_dir():
                self.mlflow.log_artifacts(run_id, str(student), artifact_path=STUDENT_ARTIFACT_DIR)
            else:
                missing.append(STUDENT_ARTIFACT_DIR)
        if missing:
            self.mlflow.set_tag(run_id, MISSING_ARTIFACTS_TAG, ",".join(missing))
        if checkpoint:
            self.mlflow.set_tag(run_id, CHECKPOINT_TAG, str(checkpoint))
        self.mlflow.set_tag(run_id, STATE_TAG, STATE_FINISHED)
        self.mlflow.set_terminated(run_id, status="FINISHED")

    def _find_run(self, trial_id: str):
        runs = self.mlflow.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT_RUN_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
            max_results=5,
        )
        return runs[0] if runs else None
