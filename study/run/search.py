"""Optuna inside Tune: the study's searcher, its concurrency limiter and the ASHA scheduler.

OptunaSearch (define-by-run, seeded, persisted in an RDB storage) in a ConcurrencyLimiter; the
subclass adds what a study needs on top: intermediate values without the metric, pruned trials,
errored trials retried by `resume`, and the repairs of a restore (see study.run.runner).
Each Optuna trial carries its Ray trial id as the user attribute RAY_TRIAL_ID_ATTR.

Points and replicates (study/space/replicates.py): one Optuna trial is one configuration point. With
`study.replicates: N` the searcher hands the point it asked for to N Tune trials in a row (config
REPLICATE_KEY = 0..N-1, so a point's seeds run concurrently when the limiter allows) and tells
Optuna once, when all N have ended: the mean over seeds. Optuna's storage holds one value per
point. A proposal identical to a point already asked (running or done) is skipped, never run
again: its Optuna trial is marked FAIL with DUPLICATE_OF_ATTR (TPE and random sampling ignore FAIL
trials) and the sampler is asked again; after MAX_DUPLICATE_ASKS identical proposals in a row the
space is taken as exhausted and the search ends.
"""
from __future__ import annotations

import logging
import math

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study import compat
from study.space.replicates import REPLICATE_KEY, point_id, point_mean
from study.space.schema import SearchSpace
from study.track.tracking import FINAL_METRIC_MARKER

log = logging.getLogger("kd_study")

RAY_TRIAL_ID_ATTR = "ray_trial_id"
RETRY_OF_ATTR = "retry_of"   # on the COMPLETE trial of a retried errored trial: the failed attempt's number
DUPLICATE_OF_ATTR = "duplicate_of"   # on a skipped proposal: the number of the trial that ran its point
REPLICATE_TRIALS_ATTR = "replicate_trial_ids"   # on a point's trial: the Ray trial ids of its seeds
MAX_DUPLICATE_ASKS = 100
EXHAUSTED_ATTR = "exhausted"   # on the Optuna study: the searcher ended the search, every point it finds has run
_ERRORED = "errored"           # a seed that failed, in StudySearch._ended


class StudySearch(OptunaSearch):
    """OptunaSearch + intermediate results without the metric, pruned trials, and resume repairs."""

    def __init__(self, *args, storage_url: str, replicates: int = 1, **kwargs):
        self._storage_url = storage_url
        self._replicates = replicates
        # Pickled with the searcher (OptunaSearch.save pickles __dict__), so a resumed study keeps them.
        self._points: dict[str, str] = {}                  # point id → its key in _ot_trials (first seed's id)
        self._point_params: dict[str, dict] = {}           # point key → searched values
        self._handing_out: dict[str, int] = {}            # point key → next replicate to hand out
        self._seed_of: dict[str, tuple[str, int]] = {}     # Ray trial id → (point key, replicate)
        self._ended: dict[str, dict[int, dict | str | None]] = {}   # point key → replicate → how its seed ended
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        if trial_id in self._seed_of:
            key, replicate = self._seed_of[trial_id]
            return self._config(key, replicate)
        for key, replicate in self._handing_out.items():   # the open point's next seed first
            self._hand_out(trial_id, key, replicate)
            return self._config(key, replicate)
        for _ in range(MAX_DUPLICATE_ASKS):
            params = super().suggest(trial_id)
            ot_trial = compat.searcher_trials(self).get(trial_id)
            pid = point_id(params)
            if pid not in self._points:
                break
            self._skip_duplicate(trial_id, ot_trial, pid)
        else:
            log.warning("optuna: %d proposals in a row repeated points already run; the space looks exhausted, "
                        "ending the search", MAX_DUPLICATE_ASKS)
            compat.searcher_study(self).set_user_attr(EXHAUSTED_ATTR, True)
            return Searcher.FINISHED
        if ot_trial is not None:
            ot_trial.set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        self._points[pid], self._point_params[trial_id], self._ended[trial_id] = trial_id, params, {}
        self._hand_out(trial_id, trial_id, 0)
        return self._config(trial_id, 0)

    def _hand_out(self, trial_id: str, key: str, replicate: int) -> None:
        self._seed_of[trial_id] = (key, replicate)
        if replicate + 1 < self._replicates:
            self._handing_out[key] = replicate + 1
        else:
            self._handing_out.pop(key, None)
        if self._replicates > 1:
            ot_trial = compat.searcher_trials(self).get(key)
            if ot_trial is not None:
                seeds = [t for t, (k, _) in self._seed_of.items() if k == key]
                ot_trial.set_user_attr(REPLICATE_TRIALS_ATTR, seeds)

    def _config(self, key: str, replicate: int) -> dict:
        params = dict(self._point_params[key])
        return {**params, REPLICATE_KEY: replicate} if self._replicates > 1 else params

    def _skip_duplicate(self, trial_id: str, ot_trial, pid: str) -> None:
        """A proposal of a point already asked: FAIL (no value, so the samplers ignore it), never run."""
        study = compat.searcher_study(self)
        compat.searcher_trials(self).pop(trial_id, None)
        if ot_trial is None:
            return
        original = compat.searcher_trials(self).get(self._points[pid])
        if original is not None:
            ot_trial.set_user_attr(DUPLICATE_OF_ATTR, original.number)
        study.tell(ot_trial, state=TrialState.FAIL)
        log.info("optuna: trial %d proposed a point already run (%s); skipped", ot_trial.number, pid)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        key, replicate = self._seed_of.get(trial_id, (trial_id, 0))
        if replicate != 0:   # intermediate values come from the point's first seed (its steps, once)
            return
        # Intermediate reports carry the metric only at evaluation steps.
        ot_trials = compat.searcher_trials(self)
        if (isinstance(self.metric, list) or self.metric not in result or key not in ot_trials
                or FINAL_METRIC_MARKER in result):  # the final value is told on completion
            return
        value = result[self.metric]
        if isinstance(value, (int, float)) and math.isfinite(value):
            ot_trials[key].report(value, int(result.get("step", result.get("training_iteration", 0))))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key, replicate = self._seed_of.get(trial_id, (trial_id, 0))
        if self._replicates > 1:
            ended = self._ended.setdefault(key, {})
            final = bool(result) and FINAL_METRIC_MARKER in result and not error
            # a seed's objective values (final), ERRORED, or None (stopped early)
            ended[replicate] = {m: result.get(m) for m in self._metrics()} if final else (_ERRORED if error else None)
            if len(ended) < self._replicates or key in self._handing_out:
                return   # the point's other seeds are still running
            result, error = self._point_result(ended)
        self._tell(key, result, error)

    def _metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    def _point_result(self, ended: dict[int, dict | None]) -> tuple[dict | None, bool]:
        """The point's result once all its seeds ended: the mean when all finished, else an error or a stop."""
        outcomes = list(ended.values())
        if all(isinstance(o, dict) for o in outcomes):
            return {**point_mean(outcomes, self._metrics()), FINAL_METRIC_MARKER: 1.0}, False
        if any(o == _ERRORED for o in outcomes):
            return None, True
        return {}, False

    def _tell(self, trial_id: str, result: dict | None, error: bool) -> None:
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
        self._point_state_defaults(study)
        known = {compat.storage_trial_id(t) for t in compat.searcher_trials(self).values()}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if compat.storage_trial_id(frozen) in known:
                continue
            # Asked after Tune's last snapshot, so Tune will never run it: run its point again.
            storage.set_trial_state_values(compat.storage_trial_id(frozen), state=TrialState.FAIL)
            study.enqueue_trial(frozen.params)
            log.info("optuna: trial %d was asked but never started; its point is queued again", frozen.number)


    def _point_state_defaults(self, study: optuna.Study) -> None:
        """A searcher pickled before replicates existed: one seed per point, the points it ran read from storage."""
        if "_points" in self.__dict__:
            return
        self._replicates, self._handing_out, self._seed_of, self._ended = 1, {}, {}, {}
        self._points, self._point_params = {}, {}
        for frozen in study.get_trials(deepcopy=False):
            key = frozen.user_attrs.get(RAY_TRIAL_ID_ATTR)
            if key is not None and frozen.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED):
                self._points[point_id(frozen.params)], self._point_params[key] = key, dict(frozen.params)


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
    """The study's searcher in its limiter; `max_concurrent` counts Tune trials (seeds), not points."""
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
        replicates=space.replicates,
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


def search_exhausted(storage_url: str, study_name: str) -> bool:
    """Whether the searcher ended the search early because it kept proposing points already run."""
    try:
        return bool(optuna.load_study(study_name=study_name, storage=storage_url).user_attrs.get(EXHAUSTED_ATTR))
    except Exception:  # noqa: BLE001 - informative only
        return False


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
