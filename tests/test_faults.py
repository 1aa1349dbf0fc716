"""Faults a study survives without leaving half-written state (issue 27): a driver that dies or fails,
a resumed trial's metric history, a worker that dies. Fast: the pieces driven directly (the runner
with a test-hook tuner, the MLflow callback, the failure policy). A full disk: tests/test_disk_full.py;
a tracking server that goes away: tests/test_tracking_outage.py.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from test_study import FakeTrial, grid_space


def store(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    return uri, MlflowClient(uri)


def trial_run(client, experiment_id: str, parent: str, trial_id: str = "t1") -> str:
    """A trial run as study.track.trial_runs makes it, RUNNING."""
    return client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "kd_study.study_run": parent,
                                                  "kd_study.kind": "trial", "kd_study.trial_id": trial_id}).info.run_id


def test_an_error_after_training_ends_the_study_and_its_runs_failed(tmp_path, monkeypatch):
    """The issue's internal error (an invalid metric key met once a trial had trained) left the parent and
    trial runs RUNNING and study.json "running". A test-hook tuner trains nothing and logs that key."""
    from mlflow.exceptions import MlflowException

    import study.run.ray_session
    import study.run.runner as runner
    import study.run.tuner

    uri, client = store(tmp_path)
    made = {}

    class FailsAfterTraining:
        """What `Tuner.fit` met: a trial run open, then MLflow refusing the metric key the trial reported."""

        def fit(self):
            state = json.loads((tmp_path / "studies" / "g" / "study.json").read_text())
            parent = client.get_run(state["parent_run_id"])
            made["trial"] = trial_run(client, parent.info.experiment_id, parent.info.run_id)
            client.log_metric(made["trial"], "beir/../../x/ndcg_at_10", 0.5)

    monkeypatch.setattr(study.run.ray_session, "RaySession", lambda address, num_cpus: contextlib.nullcontext(None))
    monkeypatch.setattr(runner, "max_concurrent_trials", lambda *args, **kwargs: 1)
    monkeypatch.setattr(runner, "check_study_storage", lambda *args, **kwargs: None)   # no Ray: nothing to check
    monkeypatch.setattr(runner, "prepare_study_assets",
                        lambda space, paths, say, data=None: {"keys": {}, "stats": {}, "training_set_path": "unused"})
    monkeypatch.setattr(study.run.tuner, "new_tuner", lambda ctx, max_concurrent: FailsAfterTraining())
    opts = runner.StudyOptions(root=str(tmp_path / "studies"), tracking_uri=uri, say=lambda line: None)

    with pytest.raises(MlflowException, match="Invalid value"):
        runner.run_study(grid_space(tmp_path), opts)
    state = json.loads((tmp_path / "studies" / "g" / "study.json").read_text())
    assert state["status"] == "failed" and "Invalid value" in state["ended_by"]
    parent, trial = client.get_run(state["parent_run_id"]), client.get_run(made["trial"])
    assert parent.info.status == "FAILED" and trial.info.status == "FAILED"
    assert "Invalid value" in trial.data.tags["kd_study.ended_by"] and trial.data.tags["kd_study.state"] == "failed"


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def killed_study(tmp_path: Path, lease_pid: int) -> tuple[str, str, str]:
    """A study whose driver died mid-trial: study.json "running", its parent and a trial run RUNNING, its lease."""
    import socket
    import time

    from study.track import tracking

    uri, client = store(tmp_path)
    experiment_id, parent = tracking.start_parent_run(uri, "k", "k", space_params={}, tags={}, artifacts=[])
    trial = trial_run(client, experiment_id, parent)
    folder = tmp_path / "studies" / "k"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"name": "k", "status": "running", "tracking_uri": uri,
                                                  "parent_run_id": parent, "experiment_id": experiment_id}))
    (folder / "lease.json").write_text(json.dumps({"owner": "x", "host": socket.gethostname(), "pid": lease_pid,
                                                  "heartbeat": time.time()}))
    return uri, parent, trial


def test_the_next_command_closes_the_runs_a_killed_driver_left_running(tmp_path):
    """SIGKILL (or OOM) leaves no trace but the lease: `kd-study report` (as `resume`, `run`, `export`) closes
    the runs KILLED with the reason and marks the study interrupted; a live driver's runs are left alone."""
    import os

    from study.cli.verbs import main

    uri, parent, trial = killed_study(tmp_path, lease_pid=os.getpid())       # the driver lives
    _, client = store(tmp_path)
    main(["report", "k", "--root", str(tmp_path / "studies"), "--tracking-uri", uri])
    assert client.get_run(parent).info.status == client.get_run(trial).info.status == "RUNNING"

    (tmp_path / "studies" / "k" / "lease.json").write_text(
        (tmp_path / "studies" / "k" / "lease.json").read_text().replace(str(os.getpid()), str(dead_pid())))
    main(["report", "k", "--root", str(tmp_path / "studies"), "--tracking-uri", uri])
    for run_id in (parent, trial):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED", run_id
        assert run.data.tags["kd_study.ended_by"].startswith("its driver ended without closing the study (owner x")
    state = json.loads((tmp_path / "studies" / "k" / "study.json").read_text())
    assert state["status"] == "interrupted"


def test_a_resumed_trials_history_gets_the_steps_before_the_interruption_once_each(tmp_path):
    """Item 8: the killed driver had logged steps 1-2; the workers had reported 3-4 (in the trial's report
    log, with the step-4 checkpoint) when it died. The resumed trial continues at step 5: its MLflow
    history holds every step once, also when a worker retry re-reports a step."""
    from study.track import tracking
    from study.track.trial_runs import NestedTrialRunsCallback

    uri, client = store(tmp_path)
    space = grid_space(tmp_path)
    experiment_id, parent = tracking.start_parent_run(uri, "g", "g", space_params={}, tags={}, artifacts=[])
    reports = [{"step": s, "train/loss": 1.0 / s, "train/lr": 0.1} for s in (1, 2, 3, 4)]
    (tmp_path / "trials" / "t1").mkdir(parents=True)
    (tmp_path / "trials" / "t1" / "train_log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in reports) + '{"step": 5, "train/lo')    # the last line cut by the kill

    def callback():
        cb = NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name="g",
                                     space=space, trials_dir=str(tmp_path / "trials"))
        cb.setup()
        return cb

    trial = FakeTrial("t1", {"loss.name": "kl"})
    killed = callback()
    killed.log_trial_start(trial)
    for report in reports[:2]:
        killed.log_trial_result(report["step"], trial, report)
    resumed = callback()                      # `kd-study resume`: a fresh driver re-opens the run
    resumed.log_trial_start(trial)
    for step in (5, 5, 6):                    # step 5 again: a worker restarted from its checkpoint
        resumed.log_trial_result(step, trial, {"step": step, "train/loss": 1.0 / step, "train/lr": 0.1})
    [run] = client.search_runs([experiment_id], "tags.`kd_study.trial_id` = 't1'")
    for key in ("train/loss", "train/lr"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == [1, 2, 3, 4, 5, 6], key
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert loss[3] == pytest.approx(1 / 3) and loss[4] == pytest.approx(1 / 4)


def test_a_worker_death_is_one_kd_study_line_naming_the_trial_and_what_happens(tmp_path, capsys):
    """Item 9: Ray Train's failure decision, said in one line: a death retried from the last checkpoint,
    then failed once the retries are spent; a full disk is not retried at all."""
    import ray.train
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError

    from trainables.train.attempts import AttemptPolicy, describe
    from trainables.errors import DiskFull

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 2, "checkpoint_path": "/x/a"}\n{"step": 3}\n{"step": 4, "checkpoint_path": "/x/b"}\n')
    policy = AttemptPolicy(ray.train.FailureConfig(max_failures=1), "t1", str(log))
    died = WorkerGroupError("a worker died", {1: ActorDiedError()})
    assert describe(WorkerGroupError("", {0: RuntimeError("x\nboom"), 1: RuntimeError("boom")})) == \
        "worker ranks 0, 1 failed: boom"
    assert policy.make_decision(died).value == "RETRY"
    assert policy.make_decision(died).value == "RAISE"
    full = WorkerGroupError("disk", {0: DiskFull("no space left on device writing /r/t1/x (0 B free there)")})
    assert AttemptPolicy(ray.train.FailureConfig(max_failures=2), "t2", str(log)).make_decision(full).value == "RAISE"
    assert capsys.readouterr().out.splitlines() == [
        "kd-study: trial t1: worker rank 1 died (its process was killed or exited); retried from its checkpoint at "
        "step 4 (attempt 2 of 2)",
        "kd-study: trial t1: worker rank 1 died (its process was killed or exited); the trial failed (attempt 2 of 2, "
        "no retries left)",
        "kd-study: trial t2: worker rank 0 failed: no space left on device writing /r/t1/x (0 B free there); the trial "
        "failed (not retried: free space, then resume)"]


def test_the_console_shows_the_trials_line_and_not_the_raylets_raw_one(tmp_path, capsys):
    from study.console.logs import _DeferredFile, _WorkersLog

    workers = _WorkersLog(_DeferredFile(tmp_path / "workers.log"))
    workers.write_error({"lines": ["\x1b[33mA worker died or was killed while executing a task\x1b[0m"],
                         "pid": "raylet", "is_err": False})
    workers.write_batch({"lines": ["kd-study: trial t1: worker rank 1 died (its process was killed or exited); "
                                   "retried from its checkpoint at step 4 (attempt 2 of 3)", "other output"],
                         "pid": 7, "actor_name": "TrainController"})
    workers.file.close()
    assert capsys.readouterr().err.splitlines() == [
        "kd-study: trial t1: worker rank 1 died (its process was killed or exited); retried from its checkpoint at "
        "step 4 (attempt 2 of 3)"]
    text = (tmp_path / "workers.log").read_text()
    assert "(pid=raylet) A worker died or was killed while executing a task\n" in text and "\x1b" not in text


def test_the_ray_train_internals_the_attempt_lines_rely_on_still_exist():
    import inspect

    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

    assert "failure_policy=create_failure_policy(" in inspect.getsource(TorchTrainer.fit)
    assert "make_decision" in vars(DefaultFailurePolicy) and "failure_config" in inspect.getsource(DefaultFailurePolicy)
    from ray._private import worker

    assert "print_to_stdstream(" in inspect.getsource(worker.listen_error_messages)


def test_resume_mends_the_run_of_a_trial_that_finished_while_the_server_was_away(tmp_path):
    """A trial that finished during an outage the last session did not outlive: its run (closed KILLED by the
    next command) holds steps 1-2 only. `mend` (what `resume` runs after `fit`) makes it whole and FINISHED."""
    from study.track import tracking
    from study.track.trial_runs import NestedTrialRunsCallback

    uri, client = store(tmp_path)
    experiment_id, parent = tracking.start_parent_run(uri, "g", "g", space_params={}, tags={}, artifacts=[])
    final = {"step": 4, "dev_mrr_at_10": 0.5, tracking.FINAL_METRIC_MARKER: 0.1}
    reports = [{"step": s, "train/loss": 1.0 / s} for s in (1, 2, 3, 4)] + [final]
    (tmp_path / "trials" / "t1").mkdir(parents=True)
    (tmp_path / "trials" / "t1" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reports))
    def fresh():   # each session's callback (Tune pickles it without state)
        callback = NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name="g",
                                           space=grid_space(tmp_path), trials_dir=str(tmp_path / "trials"))
        callback.setup()
        return callback

    callback = fresh()
    trial = FakeTrial("t1", {"loss.name": "kl"}, final)
    trial.status = "TERMINATED"
    callback.log_trial_start(trial)
    for report in reports[:2]:
        callback.log_trial_result(report["step"], trial, report)
    tracking.end_open_trial_runs(uri, parent)                     # the next command closed it KILLED

    assert fresh().mend(trial) is True and fresh().mend(trial) is False
    [run] = client.search_runs([experiment_id], "tags.`kd_study.trial_id` = 't1'")
    assert run.info.status == "FINISHED" and run.data.metrics["dev_mrr_at_10"] == 0.5
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4]
