"""Ray's MLflowLoggerCallback, made to nest each trial's run under the study's parent run and to resume.

The run contract (tags, params, metrics, artifacts, statuses) is described in study/track/tracking.py.
Every trial run carries POINT_TAG (its configuration point, study.replicates.point_id) and
REPLICATE_TAG. With `study.replicates` > 1 the layout is parent run → point runs → seed runs: a
point run (STUDY_KIND_TAG = POINT_KIND) holds the point's config as params and, once its seeds
have finished, each final metric's mean over the seeds with its 95% interval (CI_LOW_SUFFIX,
CI_HIGH_SUFFIX, over queries and seeds from the seeds' per-query scores) and n (POINT_SEEDS_METRIC,
POINT_QUERIES_METRIC); its seed runs (the Tune trials, what the report reads as trials) nest under
it and carry STUDY_RUN_TAG = the study's parent run, so readers find them in one query.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from study.track.dataset_inputs import log_dataset_inputs, trial_records
from study.space.replicates import bootstrap_interval, finite, point_id, point_mean, replicate_of
from study.track.tags import (
    CHECKPOINT_TAG, CI_HIGH_SUFFIX, CI_LOW_SUFFIX, ERROR_TAG, MISSING_ARTIFACTS_TAG, PARENT_RUN_TAG, PER_QUERY_ARTIFACT,
    POINT_KIND, POINT_QUERIES_METRIC, POINT_SEEDS_METRIC, POINT_TAG, REPLICATE_TAG, RUNS_ARTIFACT_DIR, SEARCHED_TAG,
    STATE_FAILED, STATE_FINISHED, STATE_PRUNED, STATE_RESUMED, STATE_TAG, STUDENT_ARTIFACT_DIR, STUDY_KIND_TAG,
    STUDY_NAME_TAG, STUDY_RUN_TAG, TAG_FALLBACKS, TRIAL_CONFIG_ARTIFACT, TRIAL_ID_TAG, TRIAL_KIND,
)
from study.track.run_sync import WAIT_AT_END_S, Pair, ServerLink, backfill, logged_pairs
from study.track.tracking import (
    FINAL_METRIC_MARKER, TrackingError, client, flat_config, log_params, numeric_metrics, redact, run_name,
    trial_error_line, trial_name,
)
from trainables.outputs import TRAIN_LOG


class NestedTrialRunsCallback(MLflowLoggerCallback):
    """Ray's `MLflowLoggerCallback`, with each trial's run nested under the study's parent run.

    Runs are keyed by the Tune trial id (tag TRIAL_ID_TAG), looked up in the store rather than
    held in memory: after a killed driver and `kd-study resume`, a trial re-uses its run instead of
    creating a duplicate, and a trial that had already finished (and is replayed by Tune because the
    experiment snapshot predates its end) leaves its run untouched. A new run gets its data sets as
    MLflow dataset inputs (`datasets`: study.track.dataset_inputs records), so the runs table says what
    each trial was trained and evaluated on. A run's metric history is mended from the trial's report
    log (study.track.run_sync): each (key, step) once, the steps a killed driver or an absent tracking server
    missed sent when the run is re-opened or the server answers again.
    """

    def __init__(self, tracking_uri: str, *, experiment_id: str, parent_run_id: str, study_name: str,
                 space, log_models: bool = False, datasets: list[dict[str, Any]] | None = None,
                 trials_dir: str | None = None):
        super().__init__(tracking_uri=tracking_uri, tags={})
        self.trials_dir = trials_dir   # trials/<trial_id>/train_log.jsonl: what a run's history is mended from
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.space = space
        self.log_models = log_models
        self.datasets = list(datasets or [])
        self._client = None
        self._runs: dict[str, str] = {}
        self._untouched: set[str] = set()
        self._point_runs: dict[str, str] = {}
        self._reset()

    def _reset(self) -> None:
        self._logged: dict[str, set[Pair]] = {}     # per trial: the (key, step) pairs its run holds
        self._pending: dict[str, Any] = {}          # trials whose run missed writes while the server was away
        self._ended: dict[str, bool] = {}           # ... and which of them ended meanwhile (failed or not)
        self._link = ServerLink(self.tracking_uri)

    # The callback is pickled with the Tuner (tuner.pkl): keep only plain settings, and the tracking URI
    # without its password (study.json, mode 0600, is the one file that keeps it: `resume` sets it back
    # with `use_tracking_uri`).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _runs={}, _untouched=set(), _point_runs={}, mlflow_util=None, _logged={},
                     _pending={}, _ended={}, _link=None,
                     tracking_uri=redact(self.tracking_uri))
        return state

    def use_tracking_uri(self, tracking_uri: str) -> None:
        """The real store URI (from study.json) for a callback restored from tuner.pkl, which keeps it redacted."""
        self.tracking_uri, self._client = tracking_uri, None

    def setup(self, *args, **kwargs) -> None:
        self._client = client(self.tracking_uri)
        self._runs, self._untouched, self._point_runs = {}, set(), {}
        self._reset()

    @property
    def replicates(self) -> int:
        # getattr: a space pickled by a study made before replicates existed has no such setting
        return getattr(self.space.study, "replicates", 1)

    @property
    def mlflow(self):
        if self._client is None:
            self.setup()
        return self._client

    def run_id_of(self, trial_id: str) -> str | None:
        return self._runs.get(trial_id)

    # ---- every write goes through `_tracked`: a server that went away delays it, never loses it --------
    def log_trial_start(self, trial) -> None:
        self._tracked(trial, self._start)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self._tracked(trial, self._result, result, iteration)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._ended[trial.trial_id] = failed      # kept until its run has been ended
        self._tracked(trial, self._end, failed)
        if trial.trial_id not in self._pending:
            self._ended.pop(trial.trial_id, None)

    def on_step_end(self, iteration: int, trials, **info) -> None:
        if self._pending and self._link.usable():
            self._resync()

    def on_experiment_end(self, trials, **info) -> None:
        """The study's trials are done: logs still waiting for the server are sent, waiting up to WAIT_AT_END_S."""
        if not self._pending:
            return
        if not self._link.wait(WAIT_AT_END_S):
            raise TrackingError(
                f"MLflow server {redact(self.tracking_uri)} did not come back within {WAIT_AT_END_S:.0f} s: the logs of "
                f"trials {', '.join(sorted(self._pending))} are kept in {self.trials_dir}/<trial>/{TRAIN_LOG}; "
                "`kd-study resume` sends them once it answers")
        self._resync()

    def mend(self, trial) -> bool:
        """A finished trial's run made whole after the fact (`resume` after a server outage or a kill while it was
        logged): re-opened or made, back-filled from the trial folder, ended FINISHED. False: it already was."""
        self.log_trial_start(trial)
        if trial.trial_id in self._untouched or trial.trial_id not in self._runs:
            return False
        self._backfill(trial.trial_id, self._runs[trial.trial_id])
        self.log_trial_end(trial)
        return True

    def _tracked(self, trial, write, *args) -> None:
        if self._pending or self._link.down:
            if not self._link.usable():
                self._pending[trial.trial_id] = trial
                return
            was_pending = trial.trial_id in self._pending
            self._resync()          # started, back-filled and (if it ended) ended: only a result may be new
            if was_pending and write != self._result:
                return
        try:
            write(trial, *args)
        except Exception as error:  # noqa: BLE001 - only a server that went away is survived
            if not self._link.lost(error):
                raise
            self._pending[trial.trial_id] = trial

    def _resync(self) -> None:
        """Each waiting trial's run made whole from its report log: started, back-filled, ended if it ended."""
        for trial_id, trial in list(self._pending.items()):
            try:
                self._start(trial)
                if trial_id not in self._untouched:
                    self._backfill(trial_id, self._runs[trial_id])
                if trial_id in self._ended:
                    self._end(trial, self._ended.pop(trial_id))
            except Exception as error:  # noqa: BLE001
                if not self._link.lost(error):
                    raise
                return
            del self._pending[trial_id]

    def _start(self, trial) -> None:
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
            if self.replicates > 1:   # re-open its point run too
                self._point_run(point_id(trial.config), trial.config, flat_config(cfg.model_dump(mode="json")))
            self._backfill(trial_id, run_id)
        else:
            params = flat_config(cfg.model_dump(mode="json"))
            pid, replicate = point_id(trial.config), replicate_of(trial.config)
            nested_under = self.parent_run_id
            if self.replicates > 1:
                nested_under = self._point_run(pid, trial.config, params)
            name = run_name(trial_id, cfg) + (f" seed={cfg.seed}" if self.replicates > 1 else "")
            run = self.mlflow.create_run(self.experiment_id, run_name=name, tags={
                PARENT_RUN_TAG: nested_under,
                STUDY_RUN_TAG: self.parent_run_id,
                STUDY_NAME_TAG: self.study_name,
                STUDY_KIND_TAG: TRIAL_KIND,
                TRIAL_ID_TAG: trial_id,
                POINT_TAG: pid,
                REPLICATE_TAG: str(replicate),
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

    def _result(self, trial, result: dict, iteration: int = 0) -> None:
        trial_id = trial.trial_id
        if trial_id in self._untouched or trial_id not in self._runs:
            return
        from mlflow.entities import Metric

        step = int(result.get("step", result.get("training_iteration", iteration)) or 0)
        now = int(time.time() * 1000)
        logged = self._logged.setdefault(trial_id, set())
        fresh = {(k[:250], step): v for k, v in numeric_metrics(result).items() if not math.isinf(v)}
        metrics = [Metric(key, v, now, step) for (key, _), v in fresh.items() if (key, step) not in logged]
        for start in range(0, len(metrics), 1000):
            self.mlflow.log_batch(self._runs[trial_id], metrics=metrics[start:start + 1000])
        logged.update(fresh)

    def _backfill(self, trial_id: str, run_id: str) -> None:
        """The trial's reports its run lacks (a resumed trial's steps before the interruption; a server's outage)."""
        self._logged[trial_id] = logged_pairs(self.mlflow, run_id)
        if getattr(self, "trials_dir", None):   # a callback pickled by an older study has none
            backfill(self.mlflow, run_id, Path(self.trials_dir, trial_id, TRAIN_LOG), self._logged[trial_id])

    def _end(self, trial, failed: bool = False) -> None:
        trial_id = trial.trial_id
        if trial_id in self._untouched or trial_id not in self._runs:
            return
        run_id = self._runs[trial_id]
        last = trial.last_result or {}
        if failed:
            self.mlflow.set_tag(run_id, STATE_TAG, STATE_FAILED)
            self.mlflow.set_tag(run_id, ERROR_TAG, trial_error_line(trial)[:5000])
            self.mlflow.set_terminated(run_id, status="FAILED")
            point_run = self._point_runs.get(point_id(trial.config)) if self.replicates > 1 else None
            if point_run is not None:   # a point without all its seeds has no mean (a resume re-opens it)
                self.mlflow.set_tag(point_run, STATE_TAG, STATE_FAILED)
                self.mlflow.set_terminated(point_run, status="FAILED")
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
        if self.replicates > 1:
            self._close_point_if_done(point_id(trial.config))

    def _find_run(self, trial_id: str):
        # A one-seed study's trial runs nest under the parent (as before replicates); seed runs carry STUDY_RUN_TAG.
        tag = PARENT_RUN_TAG if self.replicates == 1 else STUDY_RUN_TAG
        runs = self.mlflow.search_runs(
            [self.experiment_id],
            f"tags.`{tag}` = '{self.parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
            max_results=5,
        )
        return runs[0] if runs else None

    # ---- point runs (study.replicates > 1) ------------------------------------------------------------
    def _point_run(self, pid: str, config: dict[str, Any], params: dict[str, Any]) -> str:
        """The point's run under the parent (found in the store after a restart, else made): its config, no seed."""
        if pid in self._point_runs:
            return self._point_runs[pid]
        found = self._find_point(pid)
        if found is not None:
            run_id = found.info.run_id
            if found.info.status != "RUNNING":   # a resumed seed re-opens its point
                self.mlflow.update_run(run_id, status="RUNNING")
        else:
            point_params = {k: v for k, v in params.items() if k not in ("seed", "name")}
            searched = sorted(k for k in config if k in self.space.param_names)
            label = " ".join(f"{k}={v}" for k, v in sorted(config.items()) if k in searched)
            run = self.mlflow.create_run(self.experiment_id, run_name=f"point {pid} {label}"[:250], tags={
                PARENT_RUN_TAG: self.parent_run_id,
                STUDY_RUN_TAG: self.parent_run_id,
                STUDY_NAME_TAG: self.study_name,
                STUDY_KIND_TAG: POINT_KIND,
                POINT_TAG: pid,
                **{tag: str(params[param]) for param, tag in TAG_FALLBACKS.items()},
                SEARCHED_TAG: ",".join(searched),
            })
            run_id = run.info.run_id
            log_params(self.mlflow, run_id, point_params)
        self._point_runs[pid] = run_id
        return run_id

    def _find_point(self, pid: str):
        runs = self.mlflow.search_runs(
            [self.experiment_id],
            f"tags.`{STUDY_RUN_TAG}` = '{self.parent_run_id}' and tags.`{POINT_TAG}` = '{pid}' "
            f"and tags.`{STUDY_KIND_TAG}` = '{POINT_KIND}'", max_results=5)
        return runs[0] if runs else None

    def _close_point_if_done(self, pid: str) -> None:
        """Once all the point's seeds finished: their mean, 95% interval and n on the point run, FINISHED."""
        point_run = self._point_runs.get(pid)
        if point_run is None:
            found = self._find_point(pid)
            if found is None:
                return
            point_run = found.info.run_id
        seeds = self.mlflow.search_runs(
            [self.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{point_run}' and tags.`{STUDY_KIND_TAG}` = '{TRIAL_KIND}'")
        done = [r for r in seeds if r.info.status == "FINISHED"]
        if len(done) < self.replicates:
            return
        log_point_metrics(self.mlflow, point_run, done)
        self.mlflow.set_tag(point_run, STATE_TAG, STATE_FINISHED)
        self.mlflow.set_terminated(point_run, status="FINISHED")


def log_point_metrics(mlflow_client, point_run: str, seed_runs: list) -> None:
    """Each final metric's mean over `seed_runs` on the point run, with its 95% interval where per-query scores exist."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    keys = sorted(set.intersection(*(set(r.data.metrics) for r in seed_runs)))
    means = point_mean([r.data.metrics for r in seed_runs], keys)
    per_query = [_per_query(r) for r in seed_runs]
    metrics = [Metric(k[:250], v, now, 0) for k, v in means.items() if finite(v)]
    metrics.append(Metric(POINT_SEEDS_METRIC, float(len(seed_runs)), now, 0))
    n_queries = 0
    for key in keys:
        if not all(key in p for p in per_query):
            continue
        interval = bootstrap_interval([p[key] for p in per_query])
        if interval is None:
            continue
        _, low, high, n = interval
        n_queries = max(n_queries, n)
        metrics += [Metric((key + CI_LOW_SUFFIX)[:250], low, now, 0), Metric((key + CI_HIGH_SUFFIX)[:250], high, now, 0)]
    if n_queries:
        metrics.append(Metric(POINT_QUERIES_METRIC, float(n_queries), now, 0))
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(point_run, metrics=metrics[start:start + 1000])


def _per_query(run) -> dict[str, dict[str, float]]:
    """A seed run's per-query scores, read from its final checkpoint (CHECKPOINT_TAG) on this machine."""
    import json

    checkpoint = run.data.tags.get(CHECKPOINT_TAG)
    path = Path(checkpoint, PER_QUERY_ARTIFACT) if checkpoint else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text())
