"""The study's Ray: started or joined once per driver, with the environment every Ray process gets.

Also how many trials run at once: each trial's Ray Train workers must fit into the cluster.
Ray is imported only when a session starts, so the CLI can fail fast on bad inputs first.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Mapping
from typing import Callable

from trainables.config import ConfigError, TrialConfig

from study.console import logs
from study.track import tracking
from study.run.preflight import StudyError
from study.space.schema import SearchSpace

# Environment every Ray process of a study gets (Ray Train start-up is slow on small shared machines).
RAY_ENV_DEFAULTS = {
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    # The Train controller polls its workers every 2 s by default: on average 1 s of every trial's
    # end (and of its start) is spent waiting for the next poll. A poll is one cheap actor call.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "TOKENIZERS_PARALLELISM": "false",
}
# A local Ray has no spot nodes to be preempted: skip the watcher actor each TorchTrainer starts
# (one more Python process per trial). Clusters keep Ray's default.
LOCAL_RAY_ENV_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# Passed on to the Ray processes when the driver has them :
# how models and data are found (Hugging Face's and ir_datasets' caches, offline switches) must be
# the same on every node, or a worker on another node downloads — or fails offline — what the driver found.
_FORWARDED_ENV = (*RAY_ENV_DEFAULTS, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
                  "HF_DATASETS_CACHE", "IR_DATASETS_HOME", "SENTENCE_TRANSFORMERS_HOME")
_FORWARDED_PREFIXES = ("KD_",)   # kd-study's own settings (KD_SHARED_DATA, ...)


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's variables every Ray process of the study gets (runtime_env env_vars)."""
    return {k: v for k, v in environ.items() if k in _FORWARDED_ENV or k.startswith(_FORWARDED_PREFIXES)}


class RaySession:
    """ray.init on entry (a fresh local Ray, or the cluster at --ray-address), shutdown on exit if we started it.

    Callers check the address first (`check_ray_address`, before any other work), so this does not again.
    While the CLI routes the logs (study.console.logs, all but --verbose), what the Ray processes print goes
    to the command's workers.log instead of the console.
    """

    def __init__(self, address: str | None, num_cpus: int | None):
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self):
        import ray

        for key, value in RAY_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # Intermediate reports carry the metric only at evaluation steps.
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        # Snapshot the experiment every second (default: ≥10 s), so that a killed driver rarely
        # leaves a started trial out of the snapshot (study.run.runner says how resume closes the rest).
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        if ray.is_initialized():
            return ray
        logs.route_libraries()   # ray.init's own lines (start-up, token auth) to the log, not the console
        env_vars = forwarded_env(os.environ)
        env_vars.update(logs.quiet_env())
        try:
            if self.address:
                ray.init(address=self.address, runtime_env={"env_vars": env_vars}, log_to_driver=True)
            else:
                env_vars.update({k: os.environ.get(k, v) for k, v in LOCAL_RAY_ENV_DEFAULTS.items()})
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                         runtime_env={"env_vars": env_vars})
        except Exception as error:  # noqa: BLE001
            hint = ""
            if self.address and ("auth" in str(error).lower() or "token" in str(error).lower()):
                hint = " (token auth: set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise StudyError(f"cannot start or join {where}: {tracking.cause_line(str(error))}{hint}") from None
        self.started = True
        logs.capture_ray_output()
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()


@contextlib.contextmanager
def driver_session(address: str | None, num_cpus: int | None):
    """A RaySession that keeps the caller's SIGTERM handler (the CLI's: SIGTERM stops like Ctrl-C).

    ray.init installs its own, which exits at once: a C++ stack dump, the study state and the MLflow
    runs left "running". Without a Python handler of the caller's, Ray's stays.
    """
    handler = signal.getsignal(signal.SIGTERM)
    with RaySession(address, num_cpus) as ray:
        if callable(handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
        yield ray


def trial_cpus(cfg: TrialConfig) -> tuple[float, float]:
    """(CPUs, GPUs) one trial's Ray Train workers hold."""
    r = cfg.resources
    return r.num_workers * r.cpus_per_worker, (r.num_workers if r.use_gpu else 0)


def space_trial_cpus(space: SearchSpace) -> tuple[float, float]:
    """(CPUs, GPUs) the largest trial of `space` holds: searched resources at their extremes."""
    cpus_needed, gpus_needed = trial_cpus(space.base)
    for param in space.params:
        if param.name.startswith("resources."):
            for value in param.spec.extremes():
                c, g = trial_cpus(space.base.with_overrides({param.name: value}))
                cpus_needed, gpus_needed = max(cpus_needed, c), max(gpus_needed, g)
    return cpus_needed, gpus_needed


def check_fits_local_ray(needed: tuple[float, float], num_cpus: int | None, ray_address: str | None,
                         source: str) -> None:
    """A trial that needs more CPUs than `--num-cpus` gives the local Ray: a ConfigError before Ray starts.

    Without --num-cpus the local Ray's size is Ray's to say (`max_concurrent_trials` checks it once Ray runs).
    """
    if ray_address or num_cpus is None or needed[0] <= num_cpus:
        return
    raise ConfigError(f"{source}: a trial needs {needed[0]:g} CPUs (resources.num_workers × cpus_per_worker) but "
                      f"--num-cpus {num_cpus} gives the local Ray {num_cpus}: lower resources.num_workers or "
                      "raise --num-cpus")


def max_concurrent_trials(space: SearchSpace, ray, remote: bool, say: Callable[[str], None]) -> int:
    """max_concurrent_trials, capped so that the trials' Train workers fit into the cluster."""
    cpus_needed, gpus_needed = space_trial_cpus(space)
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if cpus_needed > cpus or gpus_needed > gpus:
        message = (f"a trial needs {cpus_needed:g} CPUs and {gpus_needed:g} GPUs (resources.num_workers × "
                   f"cpus_per_worker, use_gpu) but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs")
        if not remote:   # the space asks for more than this machine has: the user's to fix (exit 2)
            raise ConfigError(f"{space.source}: {message}")
        say(f"warning: {message}; waiting for the autoscaler")
        return space.study.max_concurrent_trials
    fit = int(min(cpus // cpus_needed if cpus_needed else math.inf, gpus // gpus_needed if gpus_needed else math.inf))
    wanted = space.study.max_concurrent_trials
    if wanted > fit and not remote:
        say(f"note: {wanted} concurrent trials do not fit into {cpus:g} CPUs ({cpus_needed:g} each): running {fit} at a time")
        return max(1, fit)
    return wanted
