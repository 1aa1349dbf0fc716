"""The driver's Tune plumbing: the trainable's resources, a new or restored Tuner, the console's view.

A new Tuner = `study.run.trainable.distil_trial` (no CPU of its own) + the searcher and scheduler of
study.run.search + two callbacks: the nested MLflow runs (study.track.trial_runs) and the console's live view
of the trials (TrialLines → study.console.console.StudyView). Tune's own output (status tables, result
boxes) is off unless --verbose: the view replaces it.
"""
from __future__ import annotations

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
    from study.run.runner import StudyContext


def new_tuner(ctx: StudyContext, max_concurrent: int) -> tune.Tuner:
    space = ctx.space
    callback = NestedTrialRunsCallback(
        ctx.tracking_uri, experiment_id=ctx.experiment_id, parent_run_id=ctx.parent_run_id, study_name=space.name,
        space=space, log_models=ctx.opts.log_models, datasets=ctx.datasets)
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
            callbacks=[callback, TrialLines(space, ctx.opts.verbose)],
            failure_config=tune.FailureConfig(max_failures=0),  # Ray Train retries worker failures itself
            verbose=tune_verbosity(ctx.opts.verbose),
        ),
    )


def can_restore(ctx: StudyContext) -> bool:
    return tune.Tuner.can_restore(str(ctx.paths.tune_dir))


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
    restored trials). A Ray Client tuner keeps the old settings.
    """
    run_config = compat.tuner_run_config(tuner)
    if run_config is None:
        return
    run_config.verbose = tune_verbosity(ctx.opts.verbose)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, TrialLines)] \
        + [TrialLines(ctx.space, ctx.opts.verbose)]


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

    def __init__(self, space: SearchSpace, verbose: int = console.NORMAL):
        # the status line only in the default mode: --quiet wants events only, --verbose has Tune's table
        self.view = console.StudyView(space.name, space.num_trials, space.metrics, space.modes,
                                      live=verbose == console.NORMAL)

    def on_step_end(self, iteration, trials, **info) -> None:
        self.view.tick(trial_counts(trials))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.view.started(trial.trial_id, trial.config)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if FINAL_METRIC_MARKER in last and isinstance(last.get(self.view.metrics[0]), (int, float)):
            self.view.finished(trial.trial_id, trial.config, last, trial_counts(trials, trial, "finished"))
        else:
            self.view.stopped_early(trial.trial_id, trial.config, last, trial_counts(trials, trial, "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.view.failed(trial.trial_id, trial_error_line(trial), trial_counts(trials, trial, "failed"))

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
