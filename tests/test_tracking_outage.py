"""A tracking server that goes away mid-study (issue 27): trials keep training, what they log is sent when
it is back, nothing lost or duplicated. `mlflow server` runs as its own process, stopped by its id.
"""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


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

    from study.track.run_sync import read_report_log, report_log_metrics
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
