"""The driver's Tune plumbing: the trainable's resources, a new or restored Tuner, the console's view.

A new Tuner = `study.run.trainable.distil_trial` (no CPU of its own) + the searcher and scheduler of
study.run.search + two callbacks: the nested MLflow runs (study.track.trial_runs) and the console's live view
of the trials (TrialLines → study.console.console.StudyView). Tune's own output (status tables, result
boxes) is off unless --verbose: the view replaces it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune import Callback

from study import compat
from study.console import console
from study.run.search import build_scheduler, build_search
from study.space.schema import SearchSpace
from study.track.tracking import FINAL_METRIC_MARKER, trial_error_line
from study.run.trainable import distil_trial
from study.track.trial_runs import NestedTrialRunsCallback

if TYPE_CHECKING:
    from study.run.context import StudyContext


def runs_callback(ctx: StudyContext) -> NestedTrialRunsCallback:
    return NestedTrialRunsCallback(
        ctx.tracking_uri, experiment_id=ctx.experiment_id, parent_run_id=ctx.parent_run_id, study_name=ctx.space.name,
        space=ctx.space, log_models=ctx.opts.log_models, datasets=ctx.datasets, trials_dir=str(ctx.paths.trials_dir))


def mend_finished_runs(ctx: StudyContext, grid) -> int:
    """After `fit`: every finished trial's run FINISHED with its whole history (how many had to be mended).

    A run can lag its trial when the tracking server was away at the end of the last session, or the
    driver was killed between a trial's end and its run's: Tune does not replay a trial it saw finish.
    """
    callback = runs_callback(ctx)
    callback.setup()
    finished = [t for t in compat.result_grid_trials(grid) if FINAL_METRIC_MARKER in (t.last_result or {})]
    return sum(callback.mend(trial) for trial in finished if trial.status == "TERMINATED")


def new_tuner(ctx: StudyContext, max_concurrent: int) -> tune.Tuner:
    space = ctx.space
    callback = runs_callback(ctx)
    return tune.Tuner(
        _trainable(ctx),
        tune_config=tune.TuneConfig(
            search_alg=build_search(space, ctx.storage_url, max_concurrent),
            scheduler=build_scheduler(space, _total_steps(space, ctx.assets["stats"])),
            num_samples=space.num_trials,   # every point once per replicate
            # single objective: the trial table shows the current best; ASHA takes metric/mode from here
            metric=space.metrics[0] if len(space.metrics) == 1 else None,
            mode=space.modes[0] if len(space.metrics) == 1 else None,
            trial_dirname_creator=trial_dirname,
            # Keep the trial actor (and its imports) for the next trial: every trial asks for the
            # same {"memory": 1}, and distil_trial holds no state between calls.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=ctx.paths.tune_dir.name,
            storage_path=str(ctx.paths.dir),
            callbacks=[callback, TrialLines(space, ctx.opts.verbose, ctx.assets["stats"].get("n_train_queries"))],
            failure_config=tune.FailureConfig(max_failures=0),  # Ray Train retries worker failures itself
            verbose=tune_verbosity(ctx.opts.verbose),
        ),
    )


def can_restore(ctx: StudyContext) -> bool:
    """Tune saved a state to resume from: its `tuner.pkl` exists and was written to the end."""
    tune_dir = str(ctx.paths.tune_dir)
    return tune.Tuner.can_restore(tune_dir) and written_whole(Path(tune_dir) / "tuner.pkl")


def written_whole(pickled: Path) -> bool:
    """False for a pickle cut short, as a disk that fills while Tune writes `tuner.pkl` leaves it (empty, or
    without the STOP opcode that ends every pickle); True where it cannot be read here (remote storage)."""
    try:
        with open(pickled, "rb") as handle:
            size = handle.seek(0, 2)
            if size == 0:
                return False
            handle.seek(size - 1)
            return handle.read(1) == b"."
    except OSError:
        return True


def restore_tuner(ctx: StudyContext) -> tune.Tuner:
    """The study's Tune experiment as last snapshotted: unfinished and errored trials run again."""
    tuner = tune.Tuner.restore(str(ctx.paths.tune_dir), trainable=_trainable(ctx),
                               resume_unfinished=True, resume_errored=True)
    _this_sessions_console(tuner, ctx)
    return tuner


def tune_verbosity(verbose: int) -> int:
    """Tune's own output: its status table only with --verbose (0 = silent: the console's view replaces it)."""
    return 1 if verbose >= console.VERBOSE else 0


def _this_sessions_console(tuner: tune.Tuner, ctx: StudyContext) -> None:
    """A restored Tuner brings the RunConfig pickled by the first session: its verbosity and its view.

    This session's --verbose/--quiet apply instead, with a fresh view (its counts come from the
    restored trials), and the tracking URI from study.json (the pickle keeps it redacted). A Ray
    Client tuner keeps the old settings.
    """
    run_config = compat.tuner_run_config(tuner)
    if run_config is None:
        return
    run_config.verbose = tune_verbosity(ctx.opts.verbose)
    for callback in run_config.callbacks or []:
        if isinstance(callback, NestedTrialRunsCallback):   # pickled by a version that did not mend histories
            callback.trials_dir = str(ctx.paths.trials_dir)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, TrialLines)] \
        + [TrialLines(ctx.space, ctx.opts.verbose, ctx.assets["stats"].get("n_train_queries"))]
    for callback in run_config.callbacks:   # tuner.pkl keeps the store URI without its password
        if isinstance(callback, NestedTrialRunsCallback):
            callback.use_tracking_uri(ctx.tracking_uri)


def _trainable(ctx: StudyContext):
    ctx.paths.trials_dir.mkdir(parents=True, exist_ok=True)
    fn = tune.with_parameters(distil_trial, space=ctx.space, training_set_path=ctx.assets["training_set_path"],
                              asset_keys=ctx.assets["keys"], trials_dir=str(ctx.paths.trials_dir),
                              hooks=ctx.opts.hooks)
    # The function holds no CPU: the trial's TorchTrainer workers hold them ({"cpu": 0} is rejected).
    return tune.with_resources(fn, {"memory": 1})


def _total_steps(space: SearchSpace, stats: dict[str, Any]) -> int | None:
    n = stats.get("n_train_queries")
    if not n:
        return None
    from trainables.train.epoch_plan import total_steps

    return total_steps(space.base, int(n))


def trial_dirname(trial) -> str:
    return trial.trial_id


class TrialLines(Callback):
    """The console's live view (study.console.console.StudyView), fed by Tune's trial events on the driver.

    Kept under this name: Tune pickles its callbacks into a study's tune/ folder.
    """

    def __init__(self, space: SearchSpace, verbose: int = console.NORMAL, n_train_queries: int | None = None):
        from trainables.outputs import eval_metric_keys

        # the status line (or a log's progress lines) only in the default mode: --quiet wants events
        # only, --verbose has Tune's table
        self.view = console.StudyView(space.name, space.num_trials, space.metrics, space.modes,
                                      live=verbose == console.NORMAL, eval_keys=eval_metric_keys(space.base.eval))
        self.space, self.n_train_queries = space, n_train_queries

    def on_step_end(self, iteration, trials, **info) -> None:
        self.view.tick(trial_counts(trials))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.view.started(trial.trial_id, trial.config, self._total_steps(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.view.result(trial.trial_id, result)

    def _total_steps(self, config: dict[str, Any]) -> int | None:
        """The trial's step budget (its searched batch size or epochs included); None when unknown."""
        if not self.n_train_queries:
            return None
        from trainables.train.epoch_plan import total_steps

        try:
            return total_steps(self.space.trial_config(config), int(self.n_train_queries))
        except Exception:  # noqa: BLE001 - a progress line without a total is no reason to stop the study
            return None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if FINAL_METRIC_MARKER in last and isinstance(last.get(self.view.metrics[0]), (int, float)):
            self.view.finished(trial.trial_id, trial.config, last, trial_counts(trials, trial, "finished"))
        else:
            self.view.stopped_early(trial.trial_id, trial.config, last, trial_counts(trials, trial, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.view.failed(trial.trial_id, trial_error_line(trial), trial_counts(trials, trial, "failed"))
        stop_if_disk_full(trial)


def stop_if_disk_full(trial) -> None:
    """A trial that found its disk full stops the study: every next trial would fail alike.

    Raised from a Tune callback, `DiskFull` ends `fit`; the runner closes the runs and the CLI says
    the one line naming the path (exit 2). `kd-study resume`, once there is room, re-runs the trial.
    """
    import re

    from trainables.disk import disk_full, is_disk_full
    from trainables.errors import DiskFull

    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text() if path and Path(path).is_file() else str(getattr(trial, "error_msg", "") or "")
    except OSError:
        text = ""
    if not is_disk_full(RuntimeError(text)):
        return
    ours = re.search(r"no space left on device writing [^\n]*", text)   # trainables.disk's own line
    raise DiskFull(ours.group(0)) if ours else disk_full(Path(getattr(trial, "path", None) or "."), RuntimeError(text))

    def on_experiment_end(self, trials, **info) -> None:
        self.view.close()


def trial_counts(trials, ending=None, ended_as: str | None = None) -> console.Counts:
    """Tune's trials by state; `ending` (whose event is being handled, its status not yet final) as `ended_as`."""
    counts = {"finished": 0, "stopped": 0, "failed": 0, "running": 0}
    for trial in trials:
        if trial is ending:
            state = ended_as
        elif trial.status == "ERROR":
            state = "failed"
        elif trial.status == "RUNNING":
            state = "running"
        elif trial.status == "TERMINATED":
            state = "finished" if FINAL_METRIC_MARKER in (trial.last_result or {}) else "stopped"
        else:
            state = None   # pending, paused
        if state:
            counts[state] += 1
    return console.Counts(**counts)
