"""A study on a real two-node Ray cluster on one machine: a head and a second raylet with its own resource.

The trials are pinned to the second node (`resources.custom: {node2: 0.01}`), so their Ray Train
workers run in another raylet's processes and read and write the study through the storage root
(`--storage`). In the second test that raylet runs in its own mount namespace with a tmpfs over the
storage root — a node that does not share the driver's disk — and the run must stop before any
asset or trial with one line naming that node and the folder. Each raylet is stopped by its process
group id (never `ray stop`: it kills by name across the machine).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from test_cluster import free_ports, stop_process_groups
from test_study import FINAL_METRICS, write_space

BIN = Path(sys.executable).parent
NAME = "two-nodes"


class TwoNodes:
    """`ray start --head` (1 CPU) and a second `ray start --address` (1 CPU, resource `node2`), own ports and temp dir."""

    def __init__(self, logs: Path, isolate: Path | None = None):
        self.logs = logs
        gcs_port, *ports = free_ports(9)
        self.address = f"127.0.0.1:{gcs_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                os.environ.get("PYTHONPATH")]))}
        self.env.pop("RAY_ADDRESS", None)
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ray_kdn_", dir="/tmp"))   # socket paths < 108 bytes
        common = ["--block", "--num-cpus=1", f"--temp-dir={self.ray_tmp}", "--disable-usage-stats"]
        self.head = self._start("ray-head", [
            str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--include-dashboard=false", *common,
            *self._ports(ports[:4])])
        self._wait("ray-head", "Ray runtime started")
        node2 = [str(BIN / "ray"), "start", f"--address={self.address}", '--resources={"node2": 1}', *common,
                 *self._ports(ports[4:8])]
        if isolate is not None:   # its own mount namespace, a tmpfs over the storage root: it cannot see the driver's
            node2 = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f'mount -t tmpfs kd-hidden "{isolate}" && exec "$@"', "sh", *node2]
        self.node2 = self._start("ray-node2", node2)
        self._wait("ray-node2", "Ray runtime started")

    @staticmethod
    def _ports(ports: list[int]) -> list[str]:
        agent_http, agent_grpc, runtime_env, metrics = ports
        return [f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait(self, name: str, line: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        process = {"ray-head": lambda: self.head, "ray-node2": lambda: self.node2}[name]()
        while line not in (self.logs / f"{name}.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline, (self.logs / f"{name}.log").read_text()[-3000:]
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process_groups(getattr(self, "node2", None), self.head)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def kd_study(self, storage: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "study.cli", "--storage", str(storage), "--tracking-uri",
                              f"sqlite:///{storage / 'mlruns.db'}", *args, "--ray-address", self.address],
                             cwd=storage, env=self.env, capture_output=True, text=True, timeout=timeout)
        print(f"kd-study {args[0]}: {time.monotonic() - started:.0f} s, exit {out.returncode}")
        return out

    def gcs(self, expression: str):
        """`expression` evaluated by a client of the cluster (ray, state imported), as JSON."""
        code = ("import json, ray; from ray._private import state; ray.init(log_to_driver=False); "
                f"print(json.dumps({expression}))")
        out = subprocess.run([sys.executable, "-c", code], env={**self.env, "RAY_ADDRESS": self.address},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def node2_id(self) -> str:
        return self.gcs("[n['NodeID'] for n in ray.nodes() if n['Alive'] and 'node2' in n['Resources']][0]")

    def actor_nodes(self, class_name: str) -> list[str]:
        """Node ids of every actor of `class_name` the cluster ran (alive or dead)."""
        return self.gcs(f"sorted({{a['Address']['NodeID'] for a in state.actors().values() "
                        f"if a['ActorClassName'] == {class_name!r}}})")


def pinned_space(storage: Path, sample_data: Path) -> Path:
    """One tiny trial whose single worker must run on the node holding resource `node2`."""
    space = write_space(storage, sample_data, NAME, {"algorithm": "grid"},
                        {"loss.name": {"type": "categorical", "choices": ["kl"]}})
    raw = yaml.safe_load(space.read_text())
    raw["base"]["resources"] = {"num_workers": 1, "cpus_per_worker": 1, "custom": {"node2": 0.01}}
    raw["base"]["cache_dir"] = "cache"      # relative: placed under the storage root
    raw["base"]["optim"]["epochs"] = 1         # 2 steps and the final evaluation: Ray's start-up is the cost here
    raw["base"]["eval"]["at_fractions"] = []
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    return space


@pytest.mark.slow
def test_a_study_pinned_to_a_second_node_finishes_through_the_shared_storage_and_resumes(tmp_path, sample_data):
    storage = tmp_path / "shared"
    storage.mkdir()
    nodes = TwoNodes(tmp_path)
    try:
        space = pinned_space(storage, sample_data)
        run = nodes.kd_study(storage, "run", str(space), "--quiet", "--no-report")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        study = storage / "kd-studies" / NAME
        assert json.loads((study / "study.json").read_text())["status"] == "finished"
        [trial] = [d for d in (study / "trials").iterdir() if d.is_dir()]
        assert (trial / "kd_study_result.json").is_file() and (trial / "final").is_dir()
        assert (storage / "cache").is_dir() and not list(storage.glob("**/.kd-storage-check/*"))
        # the trial's Ray Train worker ran in the second raylet, not beside the driver
        assert nodes.actor_nodes("RayTrainWorker") == [nodes.node2_id()]

        resume = nodes.kd_study(storage, "resume", NAME, "--quiet", "--no-report")
        assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]

        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlruns.db'}")
        runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id])
        kinds = sorted((r.data.tags.get("kd_study.kind"), r.info.status) for r in runs)
        assert kinds == [("study", "FINISHED"), ("trial", "FINISHED")], kinds
        [trial_run] = [r for r in runs if r.data.tags.get("kd_study.kind") == "trial"]
        assert all(0.0 <= trial_run.data.metrics[key] <= 1.0 for key in FINAL_METRICS)
    finally:
        nodes.stop()


def mount_namespaces() -> bool:
    """`unshare --mount` with a tmpfs works here (root, or a kernel allowing it)."""
    probe = tempfile.mkdtemp(prefix="kd_ns_")
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f'mount -t tmpfs kd-probe "{probe}"'], capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        os.rmdir(probe)


@pytest.mark.slow
@pytest.mark.skipif(not mount_namespaces(), reason="needs `unshare --mount` and tmpfs mounts (root)")
def test_a_node_that_cannot_see_the_storage_stops_the_run_before_any_trial_in_one_line(tmp_path, sample_data):
    storage = tmp_path / "shared"
    storage.mkdir()
    nodes = TwoNodes(tmp_path, isolate=storage)
    try:
        space = pinned_space(storage, sample_data)
        run = nodes.kd_study(storage, "run", str(space), "--quiet", "--no-report", timeout=300)
        errors = [line for line in run.stderr.splitlines() if line.startswith("kd-study: error:")]
        assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
        assert len(errors) == 1, run.stderr[-3000:]
        print(errors[0])
        assert f"resources node2) cannot see the shared storage {storage / 'kd-studies'}" in errors[0]
        assert nodes.node2_id()[:12] in errors[0]
        assert not (storage / "kd-studies" / NAME).exists()                    # no study folder, no trial
        assert [p.name for p in (storage / "cache").iterdir()] in ([], [".kd-storage-check"])   # no asset
    finally:
        nodes.stop()
