"""The driver's Tune plumbing: the trainable's resources, a new or restored Tuner, the trial lines.

A new Tuner = `study.trainable.distil_trial` (no CPU of its own) + the searcher and scheduler of
study.search + two callbacks: the nested MLflow runs (study.trial_runs) and one console line per
trial start and end (TrialLines).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune import Callback

from study.search import build_scheduler, build_search
from study.space import SearchSpace
from study.tracking import FINAL_METRIC_MARKER, trial_error_line
from study.trainable import distil_trial
from study.trial_runs import NestedTrialRunsCallback

if TYPE_CHECKING:
    from study.runner import StudyContext


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
            name=ctx.paths.tune_dir.name,
            storage_path=str(ctx.paths.dir),
            callbacks=[callback, TrialLines(space)],
            failure_config=tune.FailureConfig(max_failures=0),  # Ray Train retries worker failures itself
            verbose=ctx.opts.verbose,
        ),
    )


def can_restore(ctx: StudyContext) -> bool:
    return tune.Tuner.can_restore(str(ctx.paths.tune_dir))


def restore_tuner(ctx: StudyContext) -> tune.Tuner:
    """The study's Tune experiment as last snapshotted: unfinished and errored trials run again."""
    return tune.Tuner.restore(str(ctx.paths.tune_dir), trainable=_trainable(ctx),
                              resume_unfinished=True, resume_errored=True)


def _trainable(ctx: StudyContext):
    ctx.paths.trials_dir.mkdir(parents=True, exist_ok=True)
    fn = tune.with_parameters(distil_trial, space=ctx.space, training_set_path=ctx.assets["training_set_path"],
                              asset_keys=ctx.assets["keys"], trials_dir=str(ctx.paths.trials_dir))
    # The function holds no CPU: the trial's TorchTrainer workers hold them ({"cpu": 0} is rejected).
    return tune.with_resources(fn, {"memory": 1})


def _total_steps(space: SearchSpace, stats: dict[str, Any]) -> int | None:
    n = stats.get("n_train_queries")
    if not n:
        return None
    from trainables.epoch_plan import total_steps

    return total_steps(space.base, int(n))


def trial_dirname(trial) -> str:
    return trial.trial_id


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
        print(f"kd-study: trial {trial.trial_id} failed: {trial_error_line(trial)}", flush=True)


def _params_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(config.items()))


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
