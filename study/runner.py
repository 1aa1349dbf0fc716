"""Run, resume and single-train: shared assets once, then Ray Tune over a function trainable.

One study = `prepare_assets(base config)` once → a Ray Tune `Tuner` whose trainable is a plain
function (`distil_trial`) that runs one distillation trial (`trainables.trial.run_trial`, a Ray
Train `TorchTrainer` with `TuneReportCallback`) → OptunaSearch (define-by-run, seeded, persisted
in an RDB storage) in a ConcurrencyLimiter → optional ASHA on intermediate evaluations → MLflow
parent + nested runs (study.tracking) → report and best config at the end.

Resume (`kd-study resume NAME`) = `Tuner.restore(<study>/tune, resume_errored=True)`: Tune's
experiment snapshot restores the trials and the searcher state (OptunaSearch pickles its study
handle; the study itself lives in the RDB storage). The snapshot is taken every second here
(TUNE_GLOBAL_CHECKPOINT_S; Tune's default is ≥10 s); the gaps it can still leave are closed here:
- a trial that finished after the last snapshot is replayed, not re-trained: `distil_trial` keeps a
  result marker per trial and re-reports it, and the MLflow callback leaves a FINISHED run alone;
- an Optuna trial asked after the last snapshot (so unknown to Tune) is marked FAIL and its point
  re-enqueued, so a grid still runs every point exactly once;
- an errored trial retried by the resume records its result as a new COMPLETE Optuna trial (the
  failed attempt stays FAIL);
- MLflow trial runs left RUNNING by the killed driver are closed as KILLED; the trials Tune resumes
  re-open their own run (study.trial_runs), so no trial gets a second run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from trainables.config import ConfigError, TrialConfig
from trainables.errors import Failure

from study import tags, tracking
from study.paths import StudyPaths
from study.preflight import check_existing_study, check_new_study, check_ray_address
from study.space import SearchSpace, dump_space, load_space
from study.trial_runs import NestedTrialRunsCallback

log = logging.getLogger("kd_study")

RESULT_MARKER = "kd_study_result.json"
FINAL_METRIC_MARKER = tracking.FINAL_METRIC_MARKER
# Environment every Ray process of a study gets (Ray Train start-up is slow on small shared machines).
RAY_ENV_DEFAULTS = {
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    "TOKENIZERS_PARALLELISM": "false",
}
# A local Ray has no spot nodes to be preempted: skip the watcher actor each TorchTrainer starts
# (one more Python process per trial). Clusters keep Ray's default.
LOCAL_RAY_ENV_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class StudyError(Failure):
    """A study-level failure that is not a bad input (Ray unreachable, trials crashed); one line."""


@dataclass
class StudyOptions:
    root: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    optuna_storage: str | None = None
    experiment: str | None = None
    log_models: bool = False
    report: bool = True
    num_cpus: int | None = None
    verbose: int = 1
    # called with a one-line status message (the CLI prints them)
    say: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))


@dataclass
class StudyOutcome:
    name: str
    dir: Path
    num_samples: int
    finished: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    errored: list[tuple[str, str]] = field(default_factory=list)   # (trial_id, one-line cause)
    unfinished: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)       # per trial: id, status, params, metrics
    best: dict[str, Any] | None = None
    pareto: list[str] = field(default_factory=list)                # multi-objective: Pareto-optimal trial ids
    report_path: Path | None = None
    best_config_path: Path | None = None

    @property
    def interrupted(self) -> bool:
        return bool(self.unfinished) or (len(self.finished) + len(self.pruned) + len(self.errored)) < self.num_samples


# ---- the trainable -------------------------------------------------------------------------------
def distil_trial(config: dict[str, Any], *, space: SearchSpace, training_set_path: str,
                 asset_keys: dict[str, str], trials_dir: str) -> None:
    """Tune function trainable: one trial's config (searched values) → one Ray Train run.

    Runs in a Tune actor that holds no CPU (`with_resources({"memory": 1})`): the TorchTrainer's
    workers hold the trial's CPUs. A trial whose result marker exists (it finished before the driver
    was killed) re-reports that result instead of training again.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainables.trial import run_trial
    from trainables.training_set import Assets  # not trainables.assets: its builders import transformers

    trial_id = tune.get_context().get_trial_id()
    marker = Path(trials_dir, trial_id, RESULT_MARKER)
    if marker.is_file():
        tune.report(json.loads(marker.read_text()))
        return
    cfg = space.trial_config(config, name=tracking.trial_name(space.name, trial_id))
    result = run_trial(cfg, Assets(training_set_path, dict(asset_keys)), storage_path=trials_dir, name=trial_id,
                       callbacks=[TuneReportCallback()])
    final = {**result.metrics, "checkpoint_path": result.checkpoint_path}
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(final, default=float))
    os.replace(tmp, marker)


def trial_dirname(trial) -> str:
    return trial.trial_id


# ---- Optuna inside Tune --------------------------------------------------------------------------
class StudySearch(OptunaSearch):
    """OptunaSearch + intermediate results without the metric, pruned trials, and resume repairs."""

    def __init__(self, *args, storage_url: str, **kwargs):
        self._storage_url = storage_url
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Intermediate reports carry the metric only at evaluation steps.
        if (isinstance(self.metric, list) or self.metric not in result or trial_id not in self._ot_trials
                or FINAL_METRIC_MARKER in result):  # the final value is told on completion
            return
        value = result[self.metric]
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._ot_trials[trial_id].report(value, int(result.get("step", result.get("training_iteration", 0))))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
        final = bool(result) and FINAL_METRIC_MARKER in result and not error
        values = self._values(result) if final else None
        try:
            if stored.state.is_finished():
                if final and stored.state != TrialState.COMPLETE and values is not None:
                    # an errored trial that `resume` retried: record the successful attempt
                    self._ot_study.add_trial(optuna.trial.create_trial(
                        params=stored.params, distributions=stored.distributions,
                        user_attrs={**stored.user_attrs, "retry_of": stored.number},
                        **({"values": values} if isinstance(values, list) else {"value": values})))
            elif final and values is not None:
                self._ot_study.tell(ot_trial, values)
            elif error or final:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:  # stopped early by the scheduler
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - Optuna refuses NaN values etc.; never stop the study
            log.warning("optuna: trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def _values(self, result: dict):
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values] if isinstance(self.metric, list) else float(values[0])

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # A fresh handle on the storage (the pickled one carries a cache from the snapshot's time).
        storage = optuna.storages.RDBStorage(self._storage_url)
        study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=self._ot_study.sampler)
        self._ot_trials = {tid: optuna.trial.Trial(study, t._trial_id) for tid, t in self._ot_trials.items()}
        self._ot_study, self._storage = study, storage
        known = {t._trial_id for t in self._ot_trials.values()}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id in known:
                continue
            # Asked after Tune's last snapshot, so Tune will never run it: run its point again.
            storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params)
            log.info("optuna: trial %d was asked but never started; its point is queued again", frozen.number)


class StudyLimiter(ConcurrencyLimiter):
    """ConcurrencyLimiter that still forwards completions of trials it does not track (retried errors)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def build_search(space: SearchSpace, storage_url: str, max_concurrent: int):
    seed = space.study.seed
    if space.study.algorithm == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:  # random; grid mode enqueues every grid point, so its sampler never draws
        sampler = optuna.samplers.RandomSampler(seed=seed)
    multi = len(space.metrics) > 1
    searcher = StudySearch(
        space=space.define_by_run,
        metric=space.metrics if multi else space.metrics[0],
        mode=space.modes if multi else space.modes[0],
        points_to_evaluate=space.initial_points() or None,
        sampler=sampler,
        study_name=space.name,
        storage=optuna.storages.RDBStorage(storage_url),
        storage_url=storage_url,
    )
    return StudyLimiter(searcher, max_concurrent=max_concurrent)


def build_scheduler(space: SearchSpace, total_steps: int | None):
    if space.study.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    asha = space.study.asha
    max_t = asha.max_t or total_steps or 10**9
    grace = asha.grace_period or space.base.eval.every_steps or 1
    # metric/mode come from TuneConfig (ASHA is single-objective; space.py refuses it otherwise)
    return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=min(grace, max_t),
                         reduction_factor=asha.reduction_factor, stop_last_trials=False)


class TrialLines(Callback):
    """One line per trial start and end on the driver's terminal: what it searched and what it scored."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self._best: float | None = None

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        print(f"kd-study: trial {trial.trial_id} started: {_params_text(trial.config)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        metric, mode = self.space.metrics[0], self.space.modes[0]
        value = last.get(metric)
        if FINAL_METRIC_MARKER not in last or not isinstance(value, (int, float)):
            print(f"kd-study: trial {trial.trial_id} stopped early ({metric} so far: {_fmt_value(value)})", flush=True)
            return
        if self._best is None or (value > self._best if mode == "max" else value < self._best):
            self._best = value
        done = 1 + sum(t.status == "TERMINATED" and FINAL_METRIC_MARKER in (t.last_result or {})
                       for t in trials if t is not trial)
        others = "  ".join(f"{m} {_fmt_value(last.get(m))}" for m in self.space.metrics[1:])
        print(f"kd-study: trial {trial.trial_id} finished ({done}/{self.space.num_samples}): {metric} "
              f"{value:.4f} {others} (best {self._best:.4f})  {_params_text(trial.config)}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"kd-study: trial {trial.trial_id} failed: {tracking.trial_error_line(trial)}", flush=True)


def _params_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(config.items()))


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---- Ray ------------------------------------------------------------------------------------------
class _RaySession:
    """ray.init on entry (a fresh local Ray, or the cluster at --ray-address), shutdown on exit if we started it."""

    def __init__(self, address: str | None, num_cpus: int | None):
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self):
        import ray

        for key, value in RAY_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # Intermediate reports carry the metric only at evaluation steps.
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        # Snapshot the experiment every second (default: ≥10 s), so that a killed driver rarely
        # leaves a started trial out of the snapshot (see the module docstring for the rest).
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        if ray.is_initialized():
            return ray
        env_vars = {k: os.environ[k] for k in (*RAY_ENV_DEFAULTS, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                    if k in os.environ}
        check_ray_address(self.address)
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
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _trial_cpus(cfg: TrialConfig) -> tuple[float, float]:
    r = cfg.resources
    return r.num_workers * r.cpus_per_worker, (r.num_workers if r.use_gpu else 0)


def _concurrency(space: SearchSpace, ray, remote: bool, say) -> int:
    """max_concurrent_trials, capped so that the trials' Train workers fit into the cluster."""
    cpus_needed, gpus_needed = _trial_cpus(space.base)
    for param in space.params:  # searched resources: take the largest
        if param.name.startswith("resources."):
            for value in param.spec.extremes():
                c, g = _trial_cpus(space.base.with_overrides({param.name: value}))
                cpus_needed, gpus_needed = max(cpus_needed, c), max(gpus_needed, g)
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if cpus_needed > cpus or gpus_needed > gpus:
        message = (f"a trial needs {cpus_needed:g} CPUs and {gpus_needed:g} GPUs (resources.num_workers × "
                   f"cpus_per_worker, use_gpu) but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs")
        if not remote:
            raise StudyError(message)
        say(f"warning: {message}; waiting for the autoscaler")
        return space.study.max_concurrent_trials
    fit = int(min(cpus // cpus_needed if cpus_needed else math.inf, gpus // gpus_needed if gpus_needed else math.inf))
    wanted = space.study.max_concurrent_trials
    if wanted > fit and not remote:
        say(f"note: {wanted} concurrent trials do not fit into {cpus:g} CPUs ({cpus_needed:g} each): running {fit} at a time")
        return max(1, fit)
    return wanted


# ---- shared assets ----------------------------------------------------------------------------------
def _prepare_assets(space: SearchSpace, paths: StudyPaths, say) -> dict[str, Any]:
    from trainables.assets import prepare_assets

    say(f"kd-study: preparing shared assets (pools, teacher scores) in {space.base.cache_dir} ...")
    assets = prepare_assets(space.base, progress=True)
    stats = {k: v for k, v in assets.stats.items() if isinstance(v, (int, float, str, bool)) or v is None}
    info = {"training_set_path": assets.training_set_path, "keys": assets.keys, "stats": stats}
    _check_pool_sizes(space, stats)
    tmp = paths.assets.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, paths.assets)
    say(_assets_line(stats))
    return info


def _assets_line(stats: dict[str, Any]) -> str:
    scored = stats.get("teacher_pairs_scored")
    hit = "cache hit" if scored == 0 else f"{scored} teacher pairs scored"
    return f"kd-study: assets ready ({stats.get('n_train_queries')} training queries, {hit})"


def _check_pool_sizes(space: SearchSpace, stats: dict[str, Any]) -> None:
    """K larger than the smallest real pool fails before any trial (unless sampler.on_small_pool=clip)."""
    smallest = stats.get("pool_size_min")
    if smallest is None:
        return
    ks = [space.base.sampler.k]
    clip = space.base.sampler.on_small_pool == "clip"
    for param in space.params:
        if param.name == "sampler.k":
            ks += [int(v) for v in param.spec.extremes()]
        if param.name == "sampler.on_small_pool":
            clip = False  # some trials may use "error"
    if not clip and max(ks) > smallest:
        raise ConfigError(f"{space.source}: sampler.k: K={max(ks)} is larger than the smallest candidate pool "
                          f"({smallest} candidates; data.pool_depth={space.base.data.pool_depth}): lower K, or set "
                          "sampler.on_small_pool: clip")


def _total_steps(space: SearchSpace, assets: dict[str, Any]) -> int | None:
    n = assets["stats"].get("n_train_queries")
    if not n:
        return None
    from trainables.train_loop import total_steps

    return total_steps(space.base, int(n))


# ---- run / resume -------------------------------------------------------------------------------------
def _absolute(space: SearchSpace) -> SearchSpace:
    """Relative paths in the base (cache_dir, beir: folders, ...) resolved now: Tune runs trials in their own folders."""
    from trainables.trial import absolute_paths

    space.base = absolute_paths(space.base)
    return space


def _optuna_storage_url(opts: StudyOptions, paths: StudyPaths) -> str:
    return opts.optuna_storage or f"sqlite:///{paths.optuna_db}"


def _check_optuna_storage(url: str, study_name: str, *, fresh: bool) -> None:
    try:
        storage = optuna.storages.RDBStorage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as error:  # noqa: BLE001
        raise StudyError(f"Optuna storage {url} is not usable: {tracking.cause_line(str(error))}") from None
    if fresh and study_name in names:
        raise StudyError(f"Optuna storage {url} already holds a study named {study_name!r}: "
                         "delete it, or give this study another name (--name)")


def run_study(space_path: str | Path, opts: StudyOptions, *, overrides: dict[str, Any] | None = None,
              pin: dict[str, Any] | None = None) -> StudyOutcome:
    """`kd-study run`: validate everything, build assets once, run the Tune study, report."""
    space = load_space(space_path, overrides=overrides, pin=pin)
    paths = check_new_study(space.name, opts.root)
    check_ray_address(opts.ray_address)
    tracking_uri = tracking.resolve_tracking_uri(opts.tracking_uri)
    tracking.check_tracking(tracking_uri)
    storage_url = _optuna_storage_url(opts, paths)
    if opts.optuna_storage:
        _check_optuna_storage(storage_url, space.name, fresh=True)
    space = _absolute(space)

    with _RaySession(opts.ray_address, opts.num_cpus) as ray:   # an unreachable cluster fails here
        max_concurrent = _concurrency(space, ray, remote=bool(opts.ray_address), say=opts.say)
        paths.dir.mkdir(parents=True, exist_ok=True)
        parent_run_id = None
        try:
            shutil.copyfile(space_path, paths.space_copy)
            paths.space_resolved.write_text(dump_space(space))
            state = paths.update_state(name=space.name, status="preparing", tracking_uri=tracking_uri,
                                       optuna_storage=storage_url, experiment=opts.experiment or space.name,
                                       space_source=str(Path(space_path).resolve()), log_models=opts.log_models,
                                       num_samples=space.num_samples, metrics=space.metrics, modes=space.modes)
            assets = _prepare_assets(space, paths, opts.say)
            experiment_id, parent_run_id = tracking.start_parent_run(
                tracking_uri, state["experiment"], space.name,
                space_params=_space_params(space),
                tags={tags.GIT_SHA_TAG: tracking.git_revision(), tags.STUDY_DIR_TAG: str(paths.dir),
                      tags.ALGORITHM_TAG: space.study.algorithm,
                      tags.METRIC_TAG: ",".join(space.metrics),
                      **{tags.ASSET_TAG_PREFIX + k: v for k, v in assets["keys"].items()}},
                artifacts=[paths.space_copy, paths.space_resolved, paths.assets],
            )
        except BaseException:
            if parent_run_id is None:  # nothing ran: leave no half-made study behind (fix the input, run again)
                shutil.rmtree(paths.dir, ignore_errors=True)
            raise
        paths.update_state(status="running", experiment_id=experiment_id, parent_run_id=parent_run_id)
        opts.say(f"kd-study: study {space.name}: {space.num_samples} trials, MLflow {tracking_uri} "
                 f"(experiment {state['experiment']!r}, parent run {parent_run_id})")
        tuner = _new_tuner(space, paths, assets, opts, max_concurrent, tracking_uri, experiment_id,
                           parent_run_id, storage_url)
        return _fit_and_finish(tuner, space, paths, opts, tracking_uri, parent_run_id, storage_url)


def resume_study(name: str, opts: StudyOptions) -> StudyOutcome:
    """`kd-study resume NAME`: restore the Tune experiment (finished trials kept, unfinished and errored re-run)."""
    paths = check_existing_study(name, opts.root)
    check_ray_address(opts.ray_address)
    state = paths.read_state()
    tracking_uri = state["tracking_uri"]
    if opts.tracking_uri and tracking.resolve_tracking_uri(opts.tracking_uri) != tracking_uri:
        raise ConfigError(f"study {name!r} logs to {tracking_uri}; --tracking-uri cannot change on resume")
    tracking.check_tracking(tracking_uri)
    space = load_space(paths.space_resolved)
    storage_url = state.get("optuna_storage") or _optuna_storage_url(opts, paths)
    opts.log_models = bool(state.get("log_models"))
    with _RaySession(opts.ray_address, opts.num_cpus) as ray:
        assets = _prepare_assets(space, paths, opts.say)
        experiment_id = state.get("experiment_id")
        parent_run_id = state.get("parent_run_id")
        if parent_run_id is None:  # killed before the parent run existed
            experiment_id, parent_run_id = tracking.start_parent_run(
                tracking_uri, state.get("experiment") or name, name, space_params=_space_params(space),
                tags={tags.GIT_SHA_TAG: tracking.git_revision(), tags.STUDY_DIR_TAG: str(paths.dir),
                      **{tags.ASSET_TAG_PREFIX + k: v for k, v in assets["keys"].items()}},
                artifacts=[paths.space_copy, paths.space_resolved, paths.assets])
        else:
            tracking.reopen_run(tracking_uri, parent_run_id)
            # Runs left RUNNING by the killed driver; the trials Tune resumes re-open their own.
            tracking.end_open_trial_runs(tracking_uri, parent_run_id)
        paths.update_state(status="running", experiment_id=experiment_id, parent_run_id=parent_run_id)
        from ray import tune

        if tune.Tuner.can_restore(str(paths.tune_dir)):
            opts.say(f"kd-study: resuming study {name} from {paths.tune_dir}")
            tuner = tune.Tuner.restore(str(paths.tune_dir), trainable=_trainable(space, paths, assets),
                                       resume_unfinished=True, resume_errored=True)
        else:
            # Killed before Tune saved anything: no trial ran, so start the search afresh.
            opts.say(f"kd-study: no Tune state in {paths.tune_dir} yet; starting study {name} afresh")
            _delete_optuna_study(storage_url, name)
            shutil.rmtree(paths.tune_dir, ignore_errors=True)
            tuner = _new_tuner(space, paths, assets, opts, _concurrency(space, ray, bool(opts.ray_address), opts.say),
                               tracking_uri, experiment_id, parent_run_id, storage_url)
        return _fit_and_finish(tuner, space, paths, opts, tracking_uri, parent_run_id, storage_url)


def _delete_optuna_study(url: str, name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:
        pass


def _trainable(space: SearchSpace, paths: StudyPaths, assets: dict[str, Any]):
    from ray import tune

    paths.trials_dir.mkdir(parents=True, exist_ok=True)
    fn = tune.with_parameters(distil_trial, space=space, training_set_path=assets["training_set_path"],
                              asset_keys=assets["keys"], trials_dir=str(paths.trials_dir))
    # The function holds no CPU: the trial's TorchTrainer workers hold them ({"cpu": 0} is rejected).
    return tune.with_resources(fn, {"memory": 1})


def _new_tuner(space, paths, assets, opts, max_concurrent, tracking_uri, experiment_id, parent_run_id, storage_url):
    from ray import tune

    callback = NestedTrialRunsCallback(
        tracking_uri, experiment_id=experiment_id, parent_run_id=parent_run_id, study_name=space.name,
        space=space, log_models=opts.log_models)
    return tune.Tuner(
        _trainable(space, paths, assets),
        tune_config=tune.TuneConfig(
            search_alg=build_search(space, storage_url, max_concurrent),
            scheduler=build_scheduler(space, _total_steps(space, assets)),
            num_samples=space.num_samples,
            # single objective: the trial table shows the current best; ASHA takes metric/mode from here
            metric=space.metrics[0] if len(space.metrics) == 1 else None,
            mode=space.modes[0] if len(space.metrics) == 1 else None,
            trial_dirname_creator=trial_dirname,
            # Keep the trial actor (and its imports) for the next trial: every trial asks for the
            # same {"memory": 1}, and distil_trial holds no state between calls.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=paths.tune_dir.name,
            storage_path=str(paths.dir),
            callbacks=[callback, TrialLines(space)],
            failure_config=tune.FailureConfig(max_failures=0),  # Ray Train retries worker failures itself
            verbose=opts.verbose,
        ),
    )


def _fit_and_finish(tuner, space, paths, opts, tracking_uri, parent_run_id, storage_url) -> StudyOutcome:
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        grid = None
    outcome = _outcome(space, paths, grid, storage_url)
    if outcome.interrupted:
        tracking.end_open_trial_runs(tracking_uri, parent_run_id)
        tracking.end_run(tracking_uri, parent_run_id, "KILLED")
        paths.update_state(status="interrupted")
        return outcome
    status = "FAILED" if outcome.errored and not outcome.finished else "FINISHED"
    if opts.report and outcome.finished:
        _report(space, paths, opts, tracking_uri, storage_url, outcome)
    tracking.end_run(tracking_uri, parent_run_id, status)
    paths.update_state(status="errors" if outcome.errored else "finished")
    return outcome


def _optuna_states(storage_url: str, study_name: str) -> dict[str, str]:
    """Ray trial id → state of its Optuna trial (PRUNED tells an early-stopped trial from an interrupted one)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
    except Exception:  # noqa: BLE001 - informative only
        return {}
    return {t.user_attrs["ray_trial_id"]: t.state.name for t in study.get_trials(deepcopy=False)
            if "ray_trial_id" in t.user_attrs}


def _outcome(space: SearchSpace, paths: StudyPaths, grid, storage_url: str) -> StudyOutcome:
    outcome = StudyOutcome(space.name, paths.dir, space.num_samples)
    trials = list(grid._experiment_analysis.trials) if grid is not None else []
    optuna_states = _optuna_states(storage_url, space.name)
    for trial in trials:
        last = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": trial.status, **dict(trial.config),
               **{m: last.get(m) for m in space.metrics}}
        if trial.status == "ERROR":
            cause = tracking.trial_error_line(trial)
            outcome.errored.append((trial.trial_id, cause))
            row["status"] = "ERROR"
        elif trial.status == "TERMINATED" and FINAL_METRIC_MARKER in last:
            outcome.finished.append(trial.trial_id)
            row["status"] = "FINISHED"
        elif trial.status == "TERMINATED" and optuna_states.get(trial.trial_id) == "PRUNED":
            outcome.pruned.append(trial.trial_id)
            row["status"] = "PRUNED"
        else:  # running or paused when the study was interrupted
            outcome.unfinished.append(trial.trial_id)
            row["status"] = "INTERRUPTED"
        outcome.rows.append(row)
    if len(space.metrics) > 1:
        try:
            front = optuna.load_study(study_name=space.name, storage=storage_url).best_trials
            outcome.pareto = [t.user_attrs["ray_trial_id"] for t in front if "ray_trial_id" in t.user_attrs]
        except Exception:  # noqa: BLE001 - informative only
            outcome.pareto = []
    done = [r for r in outcome.rows if r["status"] == "FINISHED" and r.get(space.metrics[0]) is not None]
    if done:
        sign = 1 if space.modes[0] == "max" else -1
        outcome.best = max(done, key=lambda r: sign * r[space.metrics[0]])
    return outcome


def _report(space, paths, opts, tracking_uri, storage_url, outcome: StudyOutcome) -> None:
    """Tables on the parent run (study.report) and best.yaml (study.export); their absence is not fatal."""
    metric = space.metrics[0]
    try:
        from study.report import report_study
    except ImportError as error:
        opts.say(f"kd-study: report skipped: study.report is not available ({error})")
    else:
        try:
            outcome.report_path = Path(report_study(space.name, tracking_uri, paths.report_dir, metric=metric,
                                                    optuna_storage=storage_url))
        except Exception as error:  # noqa: BLE001 - the study's trials are safe in MLflow either way
            opts.say(f"kd-study: report failed: {tracking.cause_line(str(error))} "
                     f"(retry with `kd-study report {space.name}`)")
    try:
        from study.export import export_best
    except ImportError as error:
        opts.say(f"kd-study: best.yaml skipped: study.export is not available ({error})")
    else:
        try:
            outcome.best_config_path = Path(export_best(space.name, tracking_uri, metric, paths.best,
                                                         mode=space.modes[0]))
        except Exception as error:  # noqa: BLE001
            opts.say(f"kd-study: best.yaml failed: {tracking.cause_line(str(error))} "
                     f"(retry with `kd-study export {space.name}`)")


def _space_params(space: SearchSpace) -> dict[str, Any]:
    """The space file as parent-run params: study.*, search.<param> (its spec), fixed.*, base (the resolved file)."""
    params: dict[str, Any] = {f"study.{k}": v for k, v in space.study.model_dump(mode="json").items()}
    for param in space.params:
        params[f"search.{param.name}"] = param.spec.model_dump(mode="json", exclude_none=True)
    params.update({f"fixed.{k}": v for k, v in space.fixed.items()})
    params["space.source"] = space.source
    params["space.grid_size"] = len(space.grid_points()) if space.study.algorithm == "grid" else None
    return params


# ---- kd-study train -----------------------------------------------------------------------------------
def train_single(config_path: str | Path, opts: StudyOptions, *, name: str | None = None,
                 output_dir: str | None = None):
    """`kd-study train CONFIG.yaml`: prepare assets and run one trial outside Tune; returns its TrialResult."""
    from trainables.trial import absolute_paths

    cfg = TrialConfig.from_yaml(config_path)
    overrides = {k: v for k, v in (("name", name), ("output_dir", output_dir)) if v is not None}
    cfg = absolute_paths(cfg.with_overrides(overrides, source=str(config_path)) if overrides else cfg)
    with _RaySession(opts.ray_address, opts.num_cpus) as ray:
        from trainables.assets import prepare_assets
        from trainables.trial import run_trial

        needed, gpus = _trial_cpus(cfg)
        have = ray.cluster_resources()
        if not opts.ray_address and (needed > have.get("CPU", 0) or gpus > have.get("GPU", 0)):
            raise StudyError(f"the trial needs {needed:g} CPUs and {gpus:g} GPUs but Ray has "
                             f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs (resources.*)")
        opts.say(f"kd-study: preparing shared assets in {cfg.cache_dir} ...")
        assets = prepare_assets(cfg, progress=True)
        opts.say(_assets_line(assets.stats))
        smallest = assets.stats.get("pool_size_min")
        if smallest is not None and cfg.sampler.on_small_pool == "error" and cfg.sampler.k > smallest:
            raise ConfigError(f"{config_path}: sampler.k: K={cfg.sampler.k} is larger than the smallest candidate "
                              f"pool ({smallest}); lower K or set sampler.on_small_pool: clip")
        opts.say(f"kd-study: training {cfg.name} → {Path(cfg.output_dir) / cfg.name}")
        return cfg, run_trial(cfg, assets, storage_path=cfg.output_dir, name=cfg.name)


