"""The private Ray, Ray Tune and Optuna attributes the study reaches into, each spelled here only.

Tested with ray 2.60.0 and optuna 5.0.0 (pyproject.toml caps both at these releases);
tests/test_compat.py fails when an upgrade renames or removes one of them. Each accessor says why
no public API gives the same thing. Nothing here imports Ray or Optuna when imported: callers pass
their objects, or an accessor imports what it reads.
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


def tuner_run_config(tuner: Any) -> Any | None:
    """The RunConfig a Tuner will fit with (`Tuner._local_tuner.get_run_config()`); None for a Ray Client tuner.

    `Tuner.restore` takes no RunConfig: it brings the first session's, pickled, verbosity and
    callbacks included; this session's console settings are set on it in place.
    """
    internal = getattr(tuner, "_local_tuner", None)
    return internal.get_run_config() if internal is not None else None


# ray.init(log_to_driver=True) registers this handler on the dispatcher below: it prints the output
# the Ray processes forward to the driver on the console.
RAY_CONSOLE_PRINTER = "ray_print_logs"


def worker_output_dispatcher() -> Any:
    """Ray's dispatcher of worker output on the driver (`ray._private.worker.global_worker_stdstream_dispatcher`).

    Its handlers (`handlers`, `add_handler(name, fn)`, `remove_handler(name)`) get every batch the
    Ray processes print. The only public switch, `log_to_driver=False`, drops that output on the
    driver (it stays in each node's session folder); kd-study swaps the console printer for a file.
    """
    from ray._private import worker

    return worker.global_worker_stdstream_dispatcher


def ray_logs_dir() -> str | None:
    """This driver's Ray session log folder (`ray._private.worker._global_node.get_logs_dir_path()`), if Ray runs.

    Ray prints it nowhere public; the driver log names it, for the processes' own log files.
    """
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    return node.get_logs_dir_path() if node is not None else None


def swap_raylet_error_printer(printer: Any) -> Any:
    """Make `printer(data, ignore_prefix)` print the raylet's error messages on the driver; returns the one it replaces.

    `ray._private.worker.listen_error_messages` hands them to the module's `print_to_stdstream`
    (looked up at each call), not to the worker-output dispatcher: "A worker died or was killed…".
    """
    from ray._private import worker

    previous = worker.print_to_stdstream
    worker.print_to_stdstream = printer
    return previous
