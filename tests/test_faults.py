"""Faults a study survives without leaving half-written state: a driver that dies or fails, a full disk,
a worker that dies, a resumed trial's metric history (issue 27).

Fast tests drive the pieces directly (the runner with a test-hook tuner, the MLflow callback, the
disk helpers); the slow ones (tests/test_faults_slow.py) run whole studies as a user does.
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
    """A trial run as study.trial_runs makes it, RUNNING."""
    return client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "kd_study.study_run": parent,
                                                  "kd_study.kind": "trial", "kd_study.trial_id": trial_id}).info.run_id


def test_an_error_after_training_ends_the_study_and_its_runs_failed(tmp_path, monkeypatch):
    """The issue's internal error (an invalid metric key met once a trial had trained) left the parent and
    trial runs RUNNING and study.json "running". A test-hook tuner trains nothing and logs that key."""
    from mlflow.exceptions import MlflowException

    import study.runner as runner
    import study.tuner

    uri, client = store(tmp_path)
    made = {}

    class FailsAfterTraining:
        """What `Tuner.fit` met: a trial run open, then MLflow refusing the metric key the trial reported."""

        def fit(self):
            state = json.loads((tmp_path / "studies" / "g" / "study.json").read_text())
            parent = client.get_run(state["parent_run_id"])
            made["trial"] = trial_run(client, parent.info.experiment_id, parent.info.run_id)
            client.log_metric(made["trial"], "beir/../../x/ndcg_at_10", 0.5)

    monkeypatch.setattr(runner, "RaySession", lambda address, num_cpus: contextlib.nullcontext(None))
    monkeypatch.setattr(runner, "max_concurrent_trials", lambda *args, **kwargs: 1)
    monkeypatch.setattr(runner, "prepare_study_assets",
                        lambda space, paths, say, data=None: {"keys": {}, "stats": {}, "training_set_path": "unused"})
    monkeypatch.setattr(study.tuner, "new_tuner", lambda ctx, max_concurrent: FailsAfterTraining())
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

    from study import tracking

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

    from study.cli import main

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
    from study import tracking
    from study.trial_runs import NestedTrialRunsCallback

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

    from trainables.attempts import AttemptPolicy, describe
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
    from study.logs import _DeferredFile, _WorkersLog

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


# ---- a full disk ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A small tmpfs at `folder` (mounted by the test; skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_study_whose_checkpoints_cannot_fit_stops_before_its_trials(tmp_path, sample_data):
    """The check before the trials: free space against the student's checkpoints × the trials still to run."""
    from study.paths import StudyPaths
    from study.shared_assets import check_space_for
    from test_study import write_space
    from trainables.errors import DiskFull

    space = load(write_space(tmp_path, sample_data, "small", {"algorithm": "grid"},
                             {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}}))
    with tmpfs(tmp_path / "root", "60m") as root:
        with pytest.raises(DiskFull, match=rf"^not enough free space in {root}/small: 60\.0 MiB free, about "
                                           r"\d+\.\d MiB needed for the checkpoints of 2 trials; free some space"):
            check_space_for(space, StudyPaths.of("small", root), None, assets_built=True)
    check_space_for(space, StudyPaths.of("small", tmp_path), None, assets_built=True)   # the real disk has room


def load(path: Path):
    from study.space import load_space

    return load_space(path)


def fill(folder: Path) -> Path:
    """Fill `folder`'s file system to the last byte with one file (deleted to free it)."""
    import os

    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_study_in_one_line_and_resume_finishes_it(tmp_path, sample_data):
    """Item 3: the disk under --root fills as the trial starts: one line naming the path (exit 2), no run left
    RUNNING; once the space is freed, `kd-study resume` completes the study."""
    import time

    from test_study import cli, env, run_cli, study_runs, write_space

    name = "full"
    space = write_space(tmp_path, sample_data, name, {"algorithm": "random", "num_samples": 1},
                        {"sampler.name": {"type": "categorical", "choices": ["topk"]}})
    space.write_text(space.read_text().replace("num_workers: 2", "num_workers: 1"))
    with tmpfs(tmp_path / "studies", "200m") as root:
        log_path = tmp_path / "run.log"
        with open(log_path, "w") as log:
            driver = subprocess.Popen(cli(tmp_path, "run", str(space), "--quiet", "--no-report"), cwd=tmp_path,
                                      env=env(), stdout=log, stderr=subprocess.STDOUT)
            try:
                state = root / name / "study.json"
                deadline = time.monotonic() + 300
                while not (state.is_file() and "parent_run_id" in state.read_text()):   # the trial is about to start
                    assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.2)
                filler = fill(root)
                driver.wait(timeout=300)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait(timeout=60)
        output = log_path.read_text()
        assert driver.returncode == 2, output[-3000:]
        last = [line for line in output.splitlines() if line.strip()][-1]
        assert last.startswith(f"kd-study: error: no space left on device writing {root}/{name}"), output[-3000:]
        assert "Traceback" not in output and "unexpected pos" not in output
        _, parents, trials = study_runs(tmp_path, name)
        assert parents and all(run.info.status != "RUNNING" for run in parents + trials)

        filler.unlink()
        result = run_cli(tmp_path, "resume", name, "--quiet", "--no-report")
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(state.read_text())["status"] == "finished"
    _, parents, trials = study_runs(tmp_path, name)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert [t.info.status for t in trials] == ["FINISHED"]


# ---- a tracking server that goes away ----------------------------------------------------------------
class MlflowServer:
    """`mlflow server` as its own process on a port and sqlite store of the test's; stopped by its process id."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        import sys
        import time
        import urllib.request

        log = open(self.folder / "mlflow-server.log", "a")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return self
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, \
                    (self.folder / "mlflow-server.log").read_text()[-3000:]
                time.sleep(0.3)

    def stop(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)      # its own session: uvicorn's worker goes too
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.mark.slow
def test_a_tracking_server_lost_mid_study_loses_and_duplicates_nothing(tmp_path, sample_data):
    """`mlflow server` stopped while trial 2 trains and restarted on the same port and store: the trials keep
    training, what they logged meanwhile is sent when it is back; every trial FINISHED exactly once, with
    its whole metric history (read back through the server's REST API)."""
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from study.run_sync import read_report_log, report_log_metrics
    from test_cluster import free_ports
    from test_study import FINAL_METRICS, env, write_space

    name = "lost-server"
    [port] = free_ports(1)
    server = MlflowServer(tmp_path, port).start()
    space = write_space(tmp_path, sample_data, name, {"algorithm": "grid"},
                        {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}})
    space.write_text(space.read_text().replace("num_workers: 2", "num_workers: 1"))
    command = [sys.executable, "-m", "study.cli", "--tracking-uri", server.uri, "--root", str(tmp_path / "studies"),
               "--num-cpus", "2", "run", str(space), "--quiet", "--no-report"]
    trials = tmp_path / "studies" / name / "trials"
    log_path = tmp_path / "run.log"
    with contextlib.ExitStack() as stack, open(log_path, "w") as log:
        stack.callback(server.stop)
        driver = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=log, stderr=subprocess.STDOUT)
        stack.callback(lambda: driver.poll() is None and (driver.kill(), driver.wait(timeout=60)))
        deadline = time.monotonic() + 600

        def second_trial_reported() -> bool:
            folders = [d for d in trials.iterdir() if d.is_dir()] if trials.is_dir() else []
            done = [d for d in folders if (d / "kd_study_result.json").is_file()]
            return bool(done) and any(d not in done and (d / "train_log.jsonl").is_file() for d in folders)

        while not second_trial_reported():
            assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        server.stop()                                   # gone while trial 2 trains (a restart takes 10-30 s)
        server.start()                                  # back on the same port and store
        driver.wait(timeout=600)
        output = log_path.read_text()
        assert driver.returncode == 0, output[-3000:]
        assert "does not answer; trials keep training" in output and "is back after" in output

        client = MlflowClient(server.uri)                   # the REST API
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id])
        kinds = [r.data.tags.get("kd_study.kind") for r in runs]
        assert sorted(kinds) == ["study", "trial", "trial"], kinds
        assert all(r.info.status == "FINISHED" for r in runs)
        trial_runs = [r for r in runs if r.data.tags["kd_study.kind"] == "trial"]
        assert len({r.data.tags["kd_study.trial_id"] for r in trial_runs}) == 2
        for run in trial_runs:
            assert all(key in run.data.metrics for key in FINAL_METRICS)
            expected = report_log_metrics(read_report_log(trials / run.data.tags["kd_study.trial_id"] /
                                                          "train_log.jsonl"))
            for key in ("train/loss", "dev_mrr_at_10"):
                history = client.get_metric_history(run.info.run_id, key)
                assert sorted(m.step for m in history) == sorted(step for k, step in expected if k == key), key


def test_resume_mends_the_run_of_a_trial_that_finished_while_the_server_was_away(tmp_path):
    """A trial that finished during an outage the last session did not outlive: its run (closed KILLED by the
    next command) holds steps 1-2 only. `mend` (what `resume` runs after `fit`) makes it whole and FINISHED."""
    from study import tracking
    from study.trial_runs import NestedTrialRunsCallback

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


def test_a_checkpoint_cut_short_by_a_full_disk_is_one_line_naming_it(tmp_path):
    """torch.save on a full disk raises `RuntimeError: [enforce fail at inline_container.cc] . unexpected pos`;
    the checkpoint writer says instead which file found no space."""
    import torch

    from trainables.checkpoints import TrainState, save_train_state
    from trainables.errors import DiskFull

    state = TrainState(step=1, student={"w": torch.zeros(1 << 20)}, optimizer={}, scheduler={}, rank_table=None,
                       train_seconds=0.0, last_loss=0.0)
    with tmpfs(tmp_path / "small", "1m") as small:
        with pytest.raises(RuntimeError, match="unexpected pos|PytorchStreamWriter failed") as raw:
            torch.save(state.student, small / "raw.pt")                    # what the trial used to end with
        assert not isinstance(raw.value, DiskFull)
        (small / "raw.pt").unlink(missing_ok=True)
        with pytest.raises(DiskFull, match=rf"^no space left on device writing {small}/train_state.pt \("):
            save_train_state(str(small), state, steps_per_epoch=1, world=1)
