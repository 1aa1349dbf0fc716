"""The private Ray and Optuna attributes study.compat reaches into: each must still exist after an upgrade.

No Ray cluster: an OptunaSearch on Optuna's in-memory storage, a ResultGrid over a stand-in analysis.
"""
from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from study import compat


def define_by_run(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0.0, 1.0)


@pytest.fixture
def searcher():
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(space=define_by_run, metric="m", mode="max", study_name="compat",
                        storage=optuna.storages.InMemoryStorage(), sampler=optuna.samplers.RandomSampler(seed=0))


def test_searcher_trials_and_study_are_the_ones_optuna_search_asks(searcher):
    params = searcher.suggest("ray-1")
    trials = compat.searcher_trials(searcher)
    study = compat.searcher_study(searcher)
    assert isinstance(study, optuna.Study) and study.study_name == "compat"
    assert set(trials) == {"ray-1"} and isinstance(trials["ray-1"], optuna.trial.Trial)
    assert study.trials[trials["ray-1"].number].params == params


def test_storage_trial_id_names_the_same_trial_live_and_frozen(searcher):
    searcher.suggest("ray-1")
    live = compat.searcher_trials(searcher)["ray-1"]
    frozen = compat.searcher_study(searcher).get_trials(deepcopy=False)[live.number]
    assert isinstance(compat.storage_trial_id(live), int)
    assert compat.storage_trial_id(live) == compat.storage_trial_id(frozen)


def test_rebind_searcher_moves_the_trials_to_a_fresh_study_handle(searcher, tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="fresh", storage=storage, direction="maximize")
    asked = study.ask()
    # pair the searcher's Ray trial with a trial of the fresh study (same storage id)
    compat.searcher_trials(searcher)["ray-1"] = asked
    compat.rebind_searcher(searcher, study, storage)
    rebound = compat.searcher_trials(searcher)["ray-1"]
    assert compat.searcher_study(searcher) is study
    assert rebound is not asked and rebound.study is study
    assert compat.storage_trial_id(rebound) == compat.storage_trial_id(asked)
    searcher.on_trial_complete("ray-1", {"m": 0.5})            # OptunaSearch tells through the fresh handle
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE and study.trials[0].value == 0.5


def test_result_grid_trials_are_the_analysis_trials():
    from ray.tune import ResultGrid

    analysis = SimpleNamespace(trials=[], experiment_path="/nowhere")
    assert compat.result_grid_trials(ResultGrid(analysis)) == []
    trial = SimpleNamespace(trial_id="t1", status="TERMINATED")
    grid = ResultGrid(analysis)
    analysis.trials.append(trial)                               # ResultGrid keeps the analysis, not a copy
    assert compat.result_grid_trials(grid) == [trial]


def test_ray_names_the_checkpoint_path_key_tune_report_callback_adds():
    """study.run.trainable and study.track.trial_runs read the final checkpoint folder under Ray's own key."""
    from ray.tune.integration import ray_train

    assert isinstance(ray_train.CHECKPOINT_PATH_KEY, str) and ray_train.CHECKPOINT_PATH_KEY


def test_a_tuners_run_config_is_the_one_it_fits_with(tmp_path):
    from ray import tune

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=2))
    run_config = compat.tuner_run_config(tuner)
    assert run_config.verbose == 2
    run_config.verbose = 0                      # what restore_tuner does for this session's console
    assert compat.tuner_run_config(tuner).verbose == 0


def test_the_worker_output_dispatcher_takes_named_handlers():
    dispatcher = compat.worker_output_dispatcher()
    seen = []
    dispatcher.add_handler("compat-test", seen.append)
    try:
        dispatcher.emit({"pid": 1, "lines": ["x"]})
        assert "compat-test" in dict(dispatcher.handlers) and seen == [{"pid": 1, "lines": ["x"]}]
    finally:
        dispatcher.remove_handler("compat-test")
    assert "compat-test" not in dict(dispatcher.handlers)
    assert compat.ray_logs_dir() is None or isinstance(compat.ray_logs_dir(), str)
