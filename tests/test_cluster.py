"""A study on a real cluster and tracking server, its driver killed mid-trial, then resumed.

`ray start --head` and `mlflow server` run as their own processes (their own ports and temp folders:
other Ray clusters may run on the same machine, so nothing here uses `auto` or Ray's default ports),
as a user runs them. The driver is SIGKILLed while the second trial trains. `kd-study resume` must
then finish the study with exactly one FINISHED MLflow run per trial (read back through the
server's REST API), no FAILED run, and no actor of the killed driver left on the cluster.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from test_study import FINAL_METRICS, write_space

BIN = Path(sys.executable).parent
NAME = "cluster-kill"


def free_ports(n: int) -> list[int]:
    """`n` distinct local ports nothing listens on (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_process_groups(*processes: subprocess.Popen | None) -> None:
    """Stop each started process's group by its id (never `ray stop`): SIGTERM, then SIGKILL after 30 s."""
    started = [p for p in processes if p is not None]
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


class Servers:
    """A Ray head and an MLflow server, started as separate processes and stopped by their process ids."""

    def __init__(self, tmp: Path):
        (self.gcs_port, agent_http, agent_grpc, runtime_env, metrics, self.mlflow_port) = free_ports(6)
        self.ray_address = f"127.0.0.1:{self.gcs_port}"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"
        # Token auth (Ray >= 2.60's default for new clusters), with a token of the test's own: not ~/.ray's.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": self.ray_address, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                os.environ.get("PYTHONPATH")]))}
        self.logs = tmp
        # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ray_kdc_", dir="/tmp"))
        # No dashboard: kd-study installs ray[tune,train], not ray[default] (what `ray start --head`
        # gives a user of this install); every port is the test's own.
        self.head = self._start("ray-head", [
            str(BIN / "ray"), "start", "--head", "--block", f"--port={self.gcs_port}", "--num-cpus=2",
            f"--temp-dir={self.ray_tmp}", "--disable-usage-stats", "--include-dashboard=false",
            f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"])
        self.mlflow = self._start("mlflow", [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts")],
            cwd=tmp)

    def _start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        # Own session: stopping it by its id reaches the processes it started (raylet, GCS, uvicorn workers).
        return subprocess.Popen(argv, env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        pending = {"mlflow", "ray"}
        while pending and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.tracking_uri + "/health", timeout=2)
                pending.discard("mlflow")
            except OSError:
                pass
            if "Ray runtime started" in (self.logs / "ray-head.log").read_text():
                pending.discard("ray")
            for process, name in ((self.head, "ray-head"), (self.mlflow, "mlflow")):
                assert process.poll() is None, (self.logs / f"{name}.log").read_text()[-3000:]
            time.sleep(0.5)
        assert not pending, f"not up after {timeout:.0f} s: {sorted(pending)}"

    def stop(self) -> None:
        stop_process_groups(self.head, self.mlflow)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def rest(self, endpoint: str, body: dict | None = None, **query: str) -> dict:
        """The MLflow server's REST API, over plain HTTP."""
        url = f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def alive_actors(self) -> list[dict]:
        """The cluster's ALIVE actors, {class, name, job}, from the GCS (the state API needs the dashboard)."""
        code = ("import json, ray; from ray._private import state; ray.init(log_to_driver=False); "
                "print(json.dumps([{'class': a['ActorClassName'], 'name': a['Name'], 'job': a['JobID']} "
                "for a in state.actors().values() if a['State'] == 'ALIVE']))")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


def kd_study(servers: Servers, workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", "--root", str(workdir / "studies"), *args,
            "--ray-address", servers.ray_address]


def second_trial_training(trials: Path) -> bool:
    """One trial finished (its result marker) and another has a training checkpoint on record, not its final one.

    On record: in the trial's report log, which Ray Train's controller appends to once it has
    registered the checkpoint (a step_* folder alone may be one it never learnt of).
    """
    if not trials.is_dir():
        return False
    folders = [d for d in trials.iterdir() if d.is_dir()]
    done = [d for d in folders if (d / "kd_study_result.json").is_file()]
    training = [d for d in folders if d not in done and not (d / "final").exists()
                and '"checkpoint_path"' in _text(d / "train_log.jsonl")]
    return bool(done and training)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_driver_killed_mid_trial_on_a_cluster_resumes_to_exactly_the_finished_runs(tmp_path, sample_data):
    servers = Servers(tmp_path)
    driver = None
    try:
        started = time.monotonic()
        space = write_space(tmp_path, sample_data, NAME, {"algorithm": "grid"},
                            {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}})
        # One worker per trial (start-up is most of a tiny trial); 6 epochs of 2 steps with a
        # checkpoint each: the second trial trains long enough to be killed mid-way.
        text = space.read_text().replace("num_workers: 2", "num_workers: 1").replace("epochs: 2", "epochs: 6")
        space.write_text(text)
        servers.wait_ready()
        print(f"servers up: {time.monotonic() - started:.0f} s")

        log = open(tmp_path / "run.log", "w")
        driver = subprocess.Popen(kd_study(servers, tmp_path, "--tracking-uri", servers.tracking_uri, "run",
                                           str(space), "--quiet", "--no-report"),
                                  cwd=tmp_path, env=servers.env, stdout=log, stderr=subprocess.STDOUT)
        trials = tmp_path / "studies" / NAME / "trials"
        deadline = time.monotonic() + 600
        while not second_trial_training(trials):
            assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
        log.close()
        print(f"driver killed mid-trial: {time.monotonic() - started:.0f} s")

        resume = subprocess.run(kd_study(servers, tmp_path, "resume", NAME, "--quiet", "--no-report"),
                                cwd=tmp_path, env=servers.env, capture_output=True, text=True, timeout=600)
        print(f"resumed: {time.monotonic() - started:.0f} s")
        print("\n".join(line for line in resume.stdout.splitlines() + resume.stderr.splitlines()
                        if line.startswith("kd-study:")))
        assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]

        # Through the server's REST API: the parent and exactly one FINISHED run per trial, no FAILED run.
        experiment = servers.rest("experiments/get-by-name", experiment_name=NAME)["experiment"]
        runs = servers.rest("runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                            "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
        statuses = [run["info"]["status"] for run in runs]
        assert "FAILED" not in statuses, statuses
        parents = [run for run, tag in zip(runs, tags) if tag.get("kd_study.kind") == "study"]
        nested = [(run, tag) for run, tag in zip(runs, tags) if tag.get("kd_study.kind") == "trial"]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        assert len(nested) == 2, [(r["info"]["status"], t.get("kd_study.trial_id")) for r, t in nested]
        assert len({tag["kd_study.trial_id"] for _, tag in nested}) == 2
        resumed_from = []
        for run, tag in nested:
            assert run["info"]["status"] == "FINISHED" and tag["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert all(0.0 <= metrics[key] <= 1.0 for key in FINAL_METRICS), metrics
            resumed_from.append(metrics["train/resumed_from_step"])
        assert sorted(resumed_from)[0] == 0 and sorted(resumed_from)[1] >= 2   # the killed trial kept its checkpoint

        # Nothing of the killed driver is left on the cluster: its trial actors (Tune's, Ray Train's
        # controller and workers) went with it, and no detached PlacementGroupCleaner was left polling
        # for a state API this cluster does not serve. The only actors alive are Ray's named singletons.
        left = [a for a in servers.alive_actors() if not a["name"]]
        assert not left, left
        study = tmp_path / "studies" / NAME
        assert not list(study.glob("**/lease.json"))            # every run released its folder
        assert json.loads((study / "study.json").read_text())["status"] == "finished"
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
        servers.stop()


def test_resume_refuses_in_one_line_a_study_whose_driver_still_runs(tmp_path, monkeypatch):
    """Two drivers on one study would close each other's MLflow runs and train its trials twice."""
    from study.run.runner import StudyError, StudyOptions, resume_study
    from trainables.train import checkpoints

    monkeypatch.setattr(checkpoints, "LEASE_TTL_S", 1.0)
    monkeypatch.setattr(checkpoints, "LEASE_BEAT_S", 0.1)
    study = tmp_path / "studies" / "busy"
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"tracking_uri": f"sqlite:///{tmp_path / 'unused.db'}",
                                                "status": "running"}))
    driver = checkpoints.FolderLease(study).acquire()      # the running driver: alive, beating
    try:
        with pytest.raises(StudyError) as error:
            resume_study("busy", StudyOptions(root=str(tmp_path / "studies"), say=lambda message: None))
        message = str(error.value)
        assert "\n" not in message and message.startswith("study busy is being run by another live driver")
        assert checkpoints.read_lease(study)["owner"] == driver.owner                 # the driver keeps it
    finally:
        driver.release()
    assert checkpoints.read_lease(study) is None


def test_the_ray_train_internals_the_cleaner_drop_relies_on_still_exist():
    """trainables.train.trial._Trainer overrides a private TorchTrainer method and filters one callback class by
    name: an upgrade that renames either would silently bring back the orphan cleaner."""
    import inspect

    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    assert PlacementGroupCleanerCallback.__name__ == "PlacementGroupCleanerCallback"
    assert "PlacementGroupCleanerCallback()" in inspect.getsource(TorchTrainer._create_default_callbacks)
    assert "_create_default_callbacks()" in inspect.getsource(TorchTrainer.fit)
    # the DatasetsCallback drop: the class name, and a worker that starts without a shard provider
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker

    assert DatasetsCallback.__name__ == "DatasetsCallback"
    assert "DatasetsCallback(" in inspect.getsource(TorchTrainer._create_default_callbacks)
    provider = inspect.signature(RayTrainWorker.init_train_context).parameters["dataset_shard_provider"]
    assert provider.default is None
