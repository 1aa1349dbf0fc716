"""Run and resume a study: shared assets once, then Ray Tune over a function trainable.

One study = `prepare_assets(base config)` once (study.run.assets) → a Ray Tune `Tuner`
(study.run.tuner) whose trainable is a plain function (study.run.trainable) that runs one distillation
trial (`trainables.train.trial.run_trial`, a Ray Train `TorchTrainer` with `TuneReportCallback`) →
OptunaSearch (define-by-run, seeded, persisted in an RDB storage) in a ConcurrencyLimiter, with
optional ASHA on intermediate evaluations (study.run.search) → MLflow parent + nested runs
(study.track.tracking, study.track.trial_runs) → report and best config at the end (study.run.outcome).

Resume (`kd-study resume NAME`) = `Tuner.restore(<study>/tune, resume_errored=True)`: Tune's
experiment snapshot restores the trials and the searcher state (OptunaSearch pickles its study
handle; the study itself lives in the RDB storage). The snapshot is taken every second here
(TUNE_GLOBAL_CHECKPOINT_S, set by study.run.ray_session; Tune's default is ≥10 s); the gaps it can
still leave are closed here:
- a trial that finished after the last snapshot is replayed, not re-trained: `distil_trial` keeps a
  result marker per trial and re-reports it, and the MLflow callback leaves a FINISHED run alone;
- an Optuna trial asked after the last snapshot (so unknown to Tune) is marked FAIL and its point
  re-enqueued, so a grid still runs every point exactly once;
- an errored trial retried by the resume records its result as a new COMPLETE Optuna trial (the
  failed attempt stays FAIL);
- MLflow runs left RUNNING by the killed driver are closed as KILLED (study.track.stale, also by `run`,
  `report` and `export`); the trials Tune resumes re-open their own run, never a second one.
- on a cluster the killed driver's trials die with it (nothing is detached), and no folder has two
  writers: the driver holds the study folder's lease and each trial run its run folder's
  (trainables.train.checkpoints.FolderLease), which a lost run's surviving workers check at each checkpoint.

Light to import (Ray, Optuna and torch load inside the functions), so the CLI can import it and
still fail fast on bad inputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any, Callable

from trainables.config import ConfigError

from study.track import tags, tracking
from study.track.dataset_inputs import dataset_records, ref_key
from study.run.outcome import StudyOutcome, collect_outcome
from study.paths import StudyPaths
from study.run.preflight import (
    StudyError, check_existing_study, check_new_study, check_optuna_storage, check_ray_address, check_trial_inputs,
)
from study.run.ray_session import check_fits_local_ray, driver_session, max_concurrent_trials, space_trial_cpus
from study.run.assets import AssetsRecord, prepare_study_assets
from study.run.context import StudyContext, StudyOptions
from study.space.schema import SearchSpace, dump_space, load_space
from study.run.storage import check_study_storage, on_storage
from study.track.stale import close_dead_driver

__all__ = ["StudyContext", "StudyError", "StudyOptions", "StudyOutcome", "resume_study", "run_study"]


# ---- run / resume -------------------------------------------------------------------------------------
def run_study(space: SearchSpace, opts: StudyOptions, *, parent_tags: dict[str, str] | None = None) -> StudyOutcome:
    """`kd-study run`: check the inputs, build assets once, run the Tune study, report.

    `space` is the loaded space (CLI overrides and pins applied); `space.source` is the file copied
    into the study folder. `parent_tags` go on the parent run (`kd-study confirm` nests its child
    study's parent run under the sweep's).
    """
    space = on_storage(space, opts)
    close_dead_driver(StudyPaths.of(space.name, opts.root), opts.say)   # before "already exists": no run left RUNNING
    paths = check_new_study(space.name, opts.root)
    check_fits_local_ray(space_trial_cpus(space), opts.num_cpus, opts.ray_address, space.source)
    check_ray_address(opts.ray_address)
    storage_url = _optuna_storage_url(opts, paths)
    if opts.optuna_storage:   # before the tracking store is made: nothing written for a study that cannot run
        check_optuna_storage(storage_url, space.name)
    space = _absolute(space)
    checked = check_trial_inputs(space.base, space.source)   # every data set, model spec and folder: seconds
    _check(space, checked.train, opts.say)   # a space that cannot test what it searches stops before any asset
    tracking_uri = tracking.resolve_tracking_uri(opts.tracking_uri)
    tracking.check_tracking(tracking_uri)

    opts.say(f"kd-study: checked {len(checked.sets)} data sets, the model specs, folders and stores")
    with driver_session(opts.ray_address, opts.num_cpus) as ray, contextlib.ExitStack() as held:   # an unreachable cluster fails here
        check_study_storage(ray, bool(opts.ray_address), [paths.root, Path(space.base.cache_dir)])
        max_concurrent = max_concurrent_trials(space, ray, remote=bool(opts.ray_address), say=opts.say)
        paths.dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(_study_lease(paths, opts.say))
        if tracking.redact(tracking_uri) != tracking_uri or tracking.redact(storage_url) != storage_url:
            paths.dir.chmod(0o700)   # Tune's pickles in tune/ hold the store URIs, credentials included
        parent_run_id = None
        try:
            shutil.copyfile(space.source, paths.space_copy)
            paths.space_resolved.write_text(dump_space(space))
            state = paths.update_state(name=space.name, status="preparing", tracking_uri=tracking_uri,
                                       storage=opts.storage, optuna_storage=storage_url, experiment=opts.experiment or space.name,
                                       space_source=str(Path(space.source).resolve()), log_models=opts.log_models,
                                       num_samples=space.num_samples, metrics=space.metrics, modes=space.modes)
            assets = prepare_study_assets(space, paths, opts.say, data=checked.train)
            datasets = dataset_records(space.base, {ref_key(s.ref): s.fingerprint for s in checked.sets},
                                       assets["keys"], assets["stats"])
            paths.update_state(datasets=datasets)   # resume logs the same inputs
            _check(space, checked.train, opts.say, assets["keys"])   # again, on the study's teacher scores
            experiment_id, parent_run_id = _start_parent_run(
                space, paths, assets, tracking_uri, state["experiment"],
                {tags.ALGORITHM_TAG: space.study.algorithm, tags.METRIC_TAG: ",".join(space.metrics),
                 **(parent_tags or {})})
        except BaseException:
            if parent_run_id is None:  # nothing ran: leave no half-made study behind (fix the input, run again)
                shutil.rmtree(paths.dir, ignore_errors=True)
            raise
        ctx = StudyContext(space, paths, assets, opts, tracking_uri, experiment_id, parent_run_id, storage_url,
                           datasets)

        def start():
            from study.run.tuner import new_tuner

            paths.update_state(status="running", experiment_id=experiment_id, parent_run_id=parent_run_id)
            seeds = f" ({space.num_samples} points × {space.replicates} seeds)" if space.replicates > 1 else ""
            opts.say(f"kd-study: study {space.name}: {space.num_trials} trials{seeds}, MLflow {tracking.redact(tracking_uri)} "
                     f"(experiment {state['experiment']!r}, parent run {parent_run_id})")
            return new_tuner(ctx, max_concurrent)

        return _fit_and_finish(start, ctx)


def _check(space: SearchSpace, data, say: Callable[[str], None], keys: dict[str, str] | None = None) -> None:
    """`kd-study check` before any trial (study.check): errors stop the run (exit 2), warnings are said."""
    from study.check.report import raise_on_errors
    from study.check.scores import check_for_run

    report = check_for_run(space, data, keys)
    if keys is not None or report.errors:   # said once: with the scores, or when it stops the run
        for line in report.flag_lines():
            say(f"kd-study: check: {line}")
    raise_on_errors(report)


def resume_study(name: str, opts: StudyOptions) -> StudyOutcome:
    """`kd-study resume NAME`: restore the Tune experiment (finished trials kept, unfinished and errored re-run)."""
    paths = check_existing_study(name, opts.root)
    check_ray_address(opts.ray_address)
    close_dead_driver(paths, opts.say)   # a killed driver's runs: KILLED, with the reason
    with _study_lease(paths, opts.say):   # before anything touches the study's runs or trials
        return _resume_study(paths, opts)


def _resume_study(paths: StudyPaths, opts: StudyOptions) -> StudyOutcome:
    name = paths.name
    state = paths.read_state()
    tracking_uri = state["tracking_uri"]
    if opts.tracking_uri and tracking.resolve_tracking_uri(opts.tracking_uri) != tracking_uri:
        raise ConfigError(f"study {name!r} logs to {tracking.redact(tracking_uri)}; --tracking-uri cannot change "
                          "on resume")
    tracking.check_tracking(tracking_uri)
    space = load_space(paths.space_resolved)
    storage_url = state.get("optuna_storage") or _optuna_storage_url(opts, paths)
    opts.log_models = bool(state.get("log_models"))
    with driver_session(opts.ray_address, opts.num_cpus) as ray:
        check_study_storage(ray, bool(opts.ray_address), [paths.root, Path(space.base.cache_dir)])
        assets = prepare_study_assets(space, paths, opts.say)
        experiment_id = state.get("experiment_id")
        parent_run_id = state.get("parent_run_id")
        reopen = parent_run_id is not None
        if not reopen:  # killed before the parent run existed
            experiment_id, parent_run_id = _start_parent_run(space, paths, assets, tracking_uri,
                                                             state.get("experiment") or name)
        ctx = StudyContext(space, paths, assets, opts, tracking_uri, experiment_id, parent_run_id, storage_url,
                           state.get("datasets") or [])

        def start():
            from study.run.search import delete_study
            from study.run.tuner import can_restore, new_tuner, restore_tuner

            if reopen:
                tracking.reopen_run(tracking_uri, parent_run_id)
                # Runs left RUNNING by the killed driver; the trials Tune resumes re-open their own.
                tracking.end_open_trial_runs(tracking_uri, parent_run_id)
            paths.update_state(status="running", experiment_id=experiment_id, parent_run_id=parent_run_id)
            if can_restore(ctx):
                opts.say(f"kd-study: resuming study {name} from {paths.tune_dir} "
                         f"(MLflow {tracking.redact(tracking_uri)}, parent run {parent_run_id})")
                return restore_tuner(ctx)
            # Stopped before Tune saved anything whole (a kill, a full disk): start the search afresh.
            opts.say(f"kd-study: no whole Tune state in {paths.tune_dir} yet; starting study {name} afresh")
            delete_study(storage_url, name)
            shutil.rmtree(paths.tune_dir, ignore_errors=True)
            return new_tuner(ctx, max_concurrent_trials(space, ray, bool(opts.ray_address), opts.say))

        return _fit_and_finish(start, ctx)


@contextlib.contextmanager
def _study_lease(paths: StudyPaths, say: Callable[[str], None]):
    """One driver per study at a time: the study folder's lease, held while this driver runs it.

    `resume` while the study's driver still runs would close its runs and re-run its trials beside it.
    A killed driver's lease is free at once on its own host, after LEASE_TTL_S elsewhere.
    """
    from trainables.train.checkpoints import FolderBusy, FolderLease, holder_text, read_lease

    try:
        lease = FolderLease(paths.dir).acquire(on_wait=lambda message: say(f"kd-study: {message}"))
    except FolderBusy:
        held = read_lease(paths.dir) or {}
        raise StudyError(f"study {paths.name} is being run by another live driver ({holder_text(held)}); "
                         "stop it first, or wait for it to end") from None
    try:
        yield lease
    finally:
        lease.release()


def _absolute(space: SearchSpace) -> SearchSpace:
    """Relative paths in the base (cache_dir, beir: folders, ...) resolved now: Tune runs trials in their own folders."""
    from trainables.config import absolute_paths

    return dataclasses.replace(space, base=absolute_paths(space.base))


def _optuna_storage_url(opts: StudyOptions, paths: StudyPaths) -> str:
    return opts.optuna_storage or f"sqlite:///{paths.optuna_db}"


def _start_parent_run(space: SearchSpace, paths: StudyPaths, assets: AssetsRecord, tracking_uri: str,
                      experiment: str, extra_tags: dict[str, str] | None = None) -> tuple[str, str]:
    """The study's MLflow parent run: the space as params, the study folder's files as artifacts."""
    return tracking.start_parent_run(
        tracking_uri, experiment, space.name, space_params=_space_params(space),
        tags={tags.GIT_SHA_TAG: tracking.git_revision(), tags.STUDY_DIR_TAG: str(paths.dir), **(extra_tags or {}),
              **{tags.ASSET_TAG_PREFIX + k: v for k, v in assets["keys"].items()}},
        artifacts=[paths.space_copy, paths.space_resolved, paths.assets], metrics=assets.get("references") or {})


def _space_params(space: SearchSpace) -> dict[str, Any]:
    """The space file as parent-run params: study.*, search.<param> (its spec), fixed.*, base (the resolved file)."""
    params: dict[str, Any] = {f"study.{k}": v for k, v in space.study.model_dump(mode="json").items()}
    for param in space.params:
        params[f"search.{param.name}"] = param.spec.model_dump(mode="json", exclude_none=True)
    params.update({f"fixed.{k}": v for k, v in space.fixed.items()})
    params["space.source"] = space.source
    params["space.grid_size"] = len(space.grid_points()) if space.study.algorithm == "grid" else None
    return params


def _fit_and_finish(start: Callable[[], Any], ctx: StudyContext) -> StudyOutcome:
    """Run the Tuner `start()` builds and close the study: an interrupt keeps the finished trials.

    Ctrl-C (or SIGTERM, which the CLI turns into the same) during `fit` is Tune's graceful stop: it
    returns the trials as they are. One before or a second one during `fit` is a KeyboardInterrupt.
    Either way the runs still RUNNING end KILLED and the state says "interrupted" (`resume` continues
    it); any other error ends them FAILED with its cause (study.track.stale.close_on_error).
    """
    try:
        try:
            grid = start().fit()
            importlib.import_module("study.run.tuner").mend_finished_runs(ctx, grid)   # a session that lost its server
        except KeyboardInterrupt:
            grid = None
        outcome = collect_outcome(ctx.space, ctx.paths, grid, ctx.storage_url)
        if outcome.interrupted:
            tracking.end_open_trial_runs(ctx.tracking_uri, ctx.parent_run_id)
            tracking.end_run(ctx.tracking_uri, ctx.parent_run_id, "KILLED")
            ctx.paths.update_state(status="interrupted")
            return outcome
        status = "FAILED" if outcome.errored and not outcome.finished else "FINISHED"
        if ctx.opts.report and outcome.finished:
            _report(ctx, outcome)
        tracking.end_run(ctx.tracking_uri, ctx.parent_run_id, status)
        ctx.paths.update_state(status="errors" if outcome.errored else "finished")
        return outcome
    except BaseException as error:   # a bug, a full disk, a store error after training: no run left RUNNING
        from study.track.stale import close_on_error

        said = close_on_error(ctx.paths, ctx.tracking_uri, ctx.parent_run_id, error, ctx.opts.say)
        if said is error:
            raise
        raise said from error


def _report(ctx: StudyContext, outcome: StudyOutcome) -> None:
    """Tables on the parent run (study.report) and best.yaml (study.report.export); a failure of either is not
    fatal (the trials are safe in MLflow) and says how to retry."""
    from study.report import report_study
    from study.report.export import export_best

    space, paths, say = ctx.space, ctx.paths, ctx.opts.say
    metric = space.metrics[0]
    try:
        outcome.report_path = Path(report_study(space.name, ctx.tracking_uri, paths.report_dir, metric=metric,
                                                optuna_storage=ctx.storage_url))
    except Exception as error:  # noqa: BLE001 - the study's trials are safe in MLflow either way
        say(f"kd-study: report failed: {tracking.cause_line(str(error))} (retry with `kd-study report {space.name}`)")
    try:
        outcome.best_config_path = Path(export_best(space.name, ctx.tracking_uri, metric, paths.best,
                                                     mode=space.modes[0]))
    except Exception as error:  # noqa: BLE001
        say(f"kd-study: best.yaml failed: {tracking.cause_line(str(error))} (retry with `kd-study export {space.name}`)")


def __getattr__(name: str) -> Any:
    """Names that moved out of this module, for the pickles of studies started before (study/moved.py)."""
    from study.moved import NAMES
    from trainables.moved import moved_name

    return moved_name(__name__, name, NAMES)
