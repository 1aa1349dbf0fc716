"""Optuna inside Tune: the study's searcher, its concurrency limiter and the ASHA scheduler.

OptunaSearch (define-by-run, seeded, persisted in an RDB storage) in a ConcurrencyLimiter; the
subclass adds what a study needs on top: intermediate values without the metric, pruned trials,
errored trials retried by `resume`, and the repairs of a restore (see study.runner).
Each Optuna trial carries its Ray trial id as the user attribute RAY_TRIAL_ID_ATTR.
"""
from __future__ import annotations

import logging
import math

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from study import compat
from study.space import SearchSpace
from study.tracking import FINAL_METRIC_MARKER

log = logging.getLogger("kd_study")

RAY_TRIAL_ID_ATTR = "ray_trial_id"
RETRY_OF_ATTR = "retry_of"   # on the COMPLETE trial of a retried errored trial: the failed attempt's number


class StudySearch(OptunaSearch):
    """OptunaSearch + intermediate results without the metric, pruned trials, and resume repairs."""

    def __init__(self, *args, storage_url: str, **kwargs):
        self._storage_url = storage_url
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        ot_trial = compat.searcher_trials(self).get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Intermediate reports carry the metric only at evaluation steps.
        ot_trials = compat.searcher_trials(self)
        if (isinstance(self.metric, list) or self.metric not in result or trial_id not in ot_trials
                or FINAL_METRIC_MARKER in result):  # the final value is told on completion
            return
        value = result[self.metric]
        if isinstance(value, (int, float)) and math.isfinite(value):
            ot_trials[trial_id].report(value, int(result.get("step", result.get("training_iteration", 0))))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = compat.searcher_trials(self).get(trial_id)
        if ot_trial is None:
            return
        study = compat.searcher_study(self)
        stored = _frozen(study, ot_trial.number)
        final = bool(result) and FINAL_METRIC_MARKER in result and not error
        values = self._values(result) if final else None
        try:
            if stored.state.is_finished():
                if final and stored.state != TrialState.COMPLETE and values is not None:
                    # an errored trial that `resume` retried: record the successful attempt
                    study.add_trial(optuna.trial.create_trial(
                        params=stored.params, distributions=stored.distributions,
                        user_attrs={**stored.user_attrs, RETRY_OF_ATTR: stored.number},
                        **({"values": values} if isinstance(values, list) else {"value": values})))
            elif final and values is not None:
                study.tell(ot_trial, values)
            elif error or final:
                study.tell(ot_trial, state=TrialState.FAIL)
            else:  # stopped early by the scheduler
                study.tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - Optuna refuses NaN values etc.; never stop the study
            log.warning("optuna: trial %s: %s", trial_id, exc)

    def _values(self, result: dict):
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values] if isinstance(self.metric, list) else float(values[0])

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # A fresh handle on the storage (the pickled one carries a cache from the snapshot's time).
        pickled = compat.searcher_study(self)
        storage = optuna.storages.RDBStorage(self._storage_url)
        study = optuna.load_study(study_name=pickled.study_name, storage=storage, sampler=pickled.sampler)
        compat.rebind_searcher(self, study, storage)
        known = {compat.storage_trial_id(t) for t in compat.searcher_trials(self).values()}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if compat.storage_trial_id(frozen) in known:
                continue
            # Asked after Tune's last snapshot, so Tune will never run it: run its point again.
            storage.set_trial_state_values(compat.storage_trial_id(frozen), state=TrialState.FAIL)
            study.enqueue_trial(frozen.params)
            log.info("optuna: trial %d was asked but never started; its point is queued again", frozen.number)


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The stored state of trial `number` (a retried trial may have been told already)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


class StudyLimiter(ConcurrencyLimiter):
    """ConcurrencyLimiter that still forwards completions of trials it does not track (retried errors)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def build_search(space: SearchSpace, storage_url: str, max_concurrent: int) -> StudyLimiter:
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


# ---- reading the Optuna study back ---------------------------------------------------------------
def trial_states(storage_url: str, study_name: str) -> dict[str, str]:
    """Ray trial id → state of its Optuna trial (PRUNED tells an early-stopped trial from an interrupted one)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
    except Exception:  # noqa: BLE001 - informative only
        return {}
    return {t.user_attrs[RAY_TRIAL_ID_ATTR]: t.state.name for t in study.get_trials(deepcopy=False)
            if RAY_TRIAL_ID_ATTR in t.user_attrs}


def pareto_trial_ids(storage_url: str, study_name: str) -> list[str]:
    """Ray trial ids of a multi-objective study's Pareto front ([] when the study cannot be read)."""
    try:
        front = optuna.load_study(study_name=study_name, storage=storage_url).best_trials
    except Exception:  # noqa: BLE001 - informative only
        return []
    return [t.user_attrs[RAY_TRIAL_ID_ATTR] for t in front if RAY_TRIAL_ID_ATTR in t.user_attrs]


def delete_study(storage_url: str, study_name: str) -> None:
    """Drop the Optuna study (a resume that found no Tune state starts the search afresh)."""
    try:
        optuna.delete_study(study_name=study_name, storage=storage_url)
    except KeyError:
        pass
