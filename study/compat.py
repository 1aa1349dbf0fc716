"""The private Ray Tune and Optuna attributes the study reaches into, each spelled here only.

Tested with ray 2.60.0 and optuna 5.0.0 (pyproject.toml caps both at these releases);
tests/test_compat.py fails when an upgrade renames or removes one of them. Each accessor says why
no public API gives the same thing. Nothing here imports Ray or Optuna: callers pass their objects.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from ray.tune import ResultGrid
    from ray.tune.search.optuna import OptunaSearch

def searcher_trials(searcher: OptunaSearch) -> dict[str, optuna.trial.Trial]:
    """Ray trial id → the Optuna trial OptunaSearch asked for it (`OptunaSearch._ot_trials`).

    OptunaSearch keeps the pairing to itself; the study adds intermediate values, pruned and retried
    trials and resume repairs on top of it.
    """
    return searcher._ot_trials


def searcher_study(searcher: OptunaSearch) -> optuna.Study:
    """The Optuna study OptunaSearch asks and tells (`OptunaSearch._ot_study`); no public handle exists."""
    return searcher._ot_study


def rebind_searcher(searcher: OptunaSearch, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Point a restored OptunaSearch at a fresh study handle (`_ot_study`, `_storage`, `_ot_trials`).

    The handle Tune unpickles on resume carries the storage cache of its snapshot's time; its trials
    are re-made on the fresh study by storage id (`optuna.trial.Trial(study, trial_id)`, a constructor
    Optuna documents as not meant for direct use).
    """
    import optuna

    searcher._ot_trials = {ray_id: optuna.trial.Trial(study, storage_trial_id(trial))
                           for ray_id, trial in searcher._ot_trials.items()}
    searcher._ot_study, searcher._storage = study, storage


def storage_trial_id(trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of an Optuna trial (`Trial._trial_id`, `FrozenTrial._trial_id`).

    Public API names a trial by its number within the study; the storage calls that mark a trial
    FAIL and the `Trial` constructor take the storage id.
    """
    return trial._trial_id


def result_grid_trials(grid: ResultGrid) -> list[Any]:
    """The Tune trials behind a ResultGrid (`ResultGrid._experiment_analysis.trials`).

    A public `Result` carries the last metrics and the error but not the trial's status (finished,
    stopped, still running when the driver was interrupted) nor its error file.
    """
    return list(grid._experiment_analysis.trials)
