"""One trial = one TrialConfig → one Ray Train `TorchTrainer` running `train_loop_per_worker` (DDP).

Used by `kd-study train` (driver process) and by studies (inside a Tune function trainable). Resume:
Ray Train V2 keeps a checkpoint-manager snapshot in `<storage_path>/<name>/`; a trainer built with
the same storage_path and name loads it and `ray.train.get_checkpoint()` hands the workers the
latest checkpoint. So re-running `run_trial` after a crash continues from that checkpoint (at its
step), and re-running a finished trial re-reports its final metrics without training again.
Worker failures inside one run are retried the same way, up to `max_failures` times. That includes
a `Diverged` step (trainables.errors): Ray Train's failure policy retries every worker error alike
(FailureConfig takes counts only, and the policy is private), and a deterministic retry diverges
again at the same step from its last checkpoint, so it costs restarts, never a finished NaN trial.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import ray.train
import yaml
from ray.train.torch import TorchConfig, TorchTrainer

from trainables.train.attempts import AttemptPolicy
from trainables.train.checkpoints import LEASE_OWNER_KEY, FolderLease
from trainables.config import ConfigError, TrialConfig, absolute_paths
from trainables.outputs import FINAL_METRICS, PER_QUERY, STUDENT_DIR, TRAIN_LOG, TRIAL_CONFIG
from trainables.train.hooks import TrainHooks
from trainables.train.loop import train_loop_per_worker

RUN_CONFIG = TRIAL_CONFIG               # beside the checkpoints: the config this run directory belongs to


@dataclass
class TrialResult:
    """Final metrics, the final checkpoint directory, per-query scores and the saved student folder."""

    metrics: dict[str, Any]
    checkpoint_path: str | None
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    student_dir: str | None = None


def build_trainer(
    cfg: TrialConfig,
    training_set_path: str,
    *,
    storage_path: str,
    name: str,
    callbacks: Sequence[Any] = (),
    max_failures: int = 2,
    loop_extra: dict[str, Any] | None = None,
    hooks: TrainHooks | None = None,
):
    """A `TorchTrainer` for `cfg` (not started): workers, checkpoints (keep 2) and failure retries.

    Relative paths in `cfg` (cache_dir, output_dir, candidates_file, `beir:` folders) are made
    absolute first: Ray workers run in a directory of their own. `loop_extra` is merged into the
    loop config (the run folder's lease owner); `hooks`, a test's faults (trainables/train/hooks.py), go
    to the workers when they apply to `cfg`. A run directory that already belongs to a different config is
    refused, since resuming it would continue someone else's trial.
    """
    cfg = absolute_paths(cfg)
    run_dir = Path(storage_path).resolve() / name
    _claim_run_dir(run_dir, cfg)
    if cfg.optim.batch_size < cfg.resources.num_workers:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} < resources.num_workers={cfg.resources.num_workers}: "
            "every worker needs at least one query per step"
        )
    loop_config = {"trial": cfg.model_dump(mode="json"), "training_set": str(Path(training_set_path).resolve()),
                   "run_dir": str(run_dir)}
    if hooks is not None and hooks.for_trial(cfg) is not None:
        loop_config["hooks"] = hooks
    if cfg.init.start == "warmup":   # the study's shared warm start (built once; a hit after the first trial)
        from trainables.train.warm_start import prepare_warm_start

        loop_config["student_init"] = prepare_warm_start(cfg, training_set_path).path
    loop_config.update(loop_extra or {})
    resources = cfg.resources
    return _Trainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.use_gpu,
            resources_per_worker={"CPU": resources.cpus_per_worker, **resources.custom},
        ),
        run_config=ray.train.RunConfig(
            storage_path=str(run_dir.parent),
            name=name,
            callbacks=[*callbacks, TrainLogCallback(str(run_dir / TRAIN_LOG))],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )


class _Trainer(TorchTrainer):
    """A TorchTrainer whose failures are said in one line (`AttemptPolicy`), without the two Ray Train
    callbacks that cost a trial and give it nothing:

    - The PlacementGroupCleaner, where the cluster serves no state API: a detached actor that asks
      the state API (the Ray dashboard's) whether the controller still lives. Without a dashboard
      (kd-study's local Ray, `ray[tune,train]` without `ray[default]`) it never learns: it logs
      "Failed to query Ray Train Controller actor state" every second and outlives a killed driver
      for good. What it guards is moot there: it could never clean anything, and a killed driver's
      placement groups end with its job.
    - The DatasetsCallback, since kd-study passes no Ray Datasets (its data are the trial's own
      assets): it starts a DatasetManager actor per trial (one more Python process) and ships Ray
      Data's context to every worker (importing Ray Data there). Workers then get no shard provider,
      which is their default.
    """

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        """Ray Train's failure policy with a kd-study line per decision and no retry of a full disk (trainables.train.attempts)."""
        run = self.run_config
        controller_init_kwargs["failure_policy"] = AttemptPolicy(
            run.failure_config or ray.train.FailureConfig(), run.name, str(Path(run.storage_path, run.name, TRAIN_LOG)))
        return super()._initialize_and_run_controller(**controller_init_kwargs)

    def _create_default_callbacks(self):
        unused = set() if self.datasets else {"DatasetsCallback"}
        if not _state_api_served():
            unused.add("PlacementGroupCleanerCallback")
        return [cb for cb in super()._create_default_callbacks() if type(cb).__name__ not in unused]


@functools.lru_cache(maxsize=1)
def _state_api_served() -> bool:
    """Whether this Ray cluster answers the state API, asked as Ray Train's cleaner asks (once per process).

    Not whether a dashboard URL is on record: Ray records one even when it runs no dashboard.
    """
    try:
        from ray.util.state import list_actors

        list_actors(address=ray.get_runtime_context().gcs_address, limit=1, timeout=5, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - RayStateApiException, ConnectionError, ...: what stops the cleaner too
        return False
    return True


def run_trial(
    cfg: TrialConfig,
    assets,
    *,
    storage_path: str,
    name: str,
    callbacks: Sequence[Any] = (),
    max_failures: int = 2,
    hooks: TrainHooks | None = None,
) -> TrialResult:
    """Train and evaluate one trial on `assets.training_set_path`; resumes `<storage_path>/<name>` if it exists.

    Inside a Tune function trainable pass `ray.tune.integration.ray_train.TuneReportCallback()` in
    `callbacks` so every worker report reaches Tune, and give the Tune function no CPU of its own —
    `tune.with_resources(fn, {"memory": 1})` (`{"cpu": 0}` is rejected) — otherwise on a small
    machine the function's CPU plus the workers' CPUs exceed the cluster and the worker group never
    starts. Also raise `RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S` (e.g. 300) on a loaded machine.
    Evaluation metrics (`outputs.eval_metric_keys`) appear only in the final report
    and in the `eval.every_steps` reports, while Tune by default requires its metric in every
    result: set `TUNE_DISABLE_STRICT_METRIC_CHECKING=1` in the study driver (ASHA and the median
    rule skip results without the metric; the searcher reads the final one).
    Raises ray.train.TrainingFailedError when the run fails more than `max_failures` times. `hooks`: a
    test's faults (trainables/train/hooks.py), none in production.
    """
    # One run writes a run folder at a time: a resumed trial waits for (or takes over from) the run
    # of a lost driver, whose workers stop at their next checkpoint (checkpoints.FolderLease).
    lease = FolderLease(Path(storage_path).resolve() / name).acquire(
        on_wait=lambda message: print(f"kd-study: {message}", flush=True))
    try:
        trainer = build_trainer(cfg, assets.training_set_path, storage_path=storage_path, name=name,
                                callbacks=callbacks, max_failures=max_failures,
                                loop_extra={LEASE_OWNER_KEY: lease.owner}, hooks=hooks)
        result = trainer.fit()
    finally:
        lease.release()
    if result.error is not None:
        raise result.error
    return read_trial_result(result.checkpoint.path if result.checkpoint else None, result.metrics or {})


def read_trial_result(checkpoint_path: str | None, metrics: dict[str, Any] | None = None) -> TrialResult:
    """A TrialResult from a final checkpoint directory (the files `checkpoints.save_final` writes)."""
    if checkpoint_path is None or not Path(checkpoint_path, FINAL_METRICS).is_file():
        return TrialResult(metrics=dict(metrics or {}), checkpoint_path=checkpoint_path)
    folder = Path(checkpoint_path)
    final = json.loads((folder / FINAL_METRICS).read_text())["metrics"]
    per_query = json.loads((folder / PER_QUERY).read_text()) if (folder / PER_QUERY).is_file() else {}
    student = folder / STUDENT_DIR
    return TrialResult(metrics=final, checkpoint_path=str(folder), per_query=per_query,
                       student_dir=str(student) if student.is_dir() else None)


def read_train_log(storage_path: str, name: str) -> list[dict[str, Any]]:
    """Every report of a run (all attempts, in order): the learning curve behind the final metrics."""
    path = Path(storage_path).resolve() / name / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _claim_run_dir(run_dir: Path, cfg: TrialConfig) -> None:
    """Record the config a run directory belongs to; refuse to resume it with a different one."""
    record = run_dir / RUN_CONFIG
    wanted = cfg.model_dump(mode="json")
    if record.is_file():
        found = yaml.safe_load(record.read_text())
        try:   # a record written before the per-loss blocks holds every loss's fields: compare what they mean
            found = TrialConfig.from_dict(found, other_settings="drop").model_dump(mode="json")
        except ConfigError:
            pass
        if found != wanted:
            changed = sorted(_changed_keys(found, wanted))
            raise ConfigError(
                f"{run_dir} holds a run of a different trial config (changed: {', '.join(changed) or '?'}); "
                "resuming it would mix two trials: use another name or delete the folder"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(record)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old) | set(new)
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


class TrainLogCallback(ray.train.UserCallback):
    """Appends rank 0's metrics of every `ray.train.report` to a JSON-lines file (runs on the controller)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        record = dict(metrics[0])
        if checkpoint is not None:
            record["checkpoint_path"] = checkpoint.path
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
