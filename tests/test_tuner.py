"""The driver's Tune plumbing (study.run.tuner): the console's view on new and restored Tuners, and its trial counts."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from study import compat
from study.console import console
from study.space.schema import load_space
from study.track.tracking import FINAL_METRIC_MARKER

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def trial(trial_id: str, status: str, final: bool = False):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result={FINAL_METRIC_MARKER: 0.1} if final else {})


def test_trial_counts_by_state_with_the_ending_trial_as_it_ends():
    from study.run.tuner import trial_counts

    trials = [trial("a", "TERMINATED", final=True), trial("b", "TERMINATED"), trial("c", "ERROR"),
              trial("d", "RUNNING"), trial("e", "PENDING"), trial("f", "RUNNING")]
    assert trial_counts(trials) == console.Counts(finished=1, stopped=1, failed=1, running=2)
    # Tune calls on_trial_complete before it marks the trial TERMINATED
    assert trial_counts(trials, trials[-1], "finished") == console.Counts(finished=2, stopped=1, failed=1, running=1)


@pytest.mark.parametrize("verbose,tune_verbose,live", [(console.QUIET, 0, False), (console.NORMAL, 0, True),
                                                       (console.VERBOSE, 1, False)])
def test_a_restored_tuner_gets_this_sessions_verbosity_and_a_fresh_view(tmp_path, verbose, tune_verbose, live):
    """Tune.restore brings the first session's pickled RunConfig; resume --verbose/--quiet must still apply."""
    from ray import tune

    from study.run.tuner import TrialLines, _this_sessions_console

    space = load_space(QUICKSTART)
    old, other = TrialLines(space, console.NORMAL), tune.Callback()
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(
        storage_path=str(tmp_path), verbose=1, callbacks=[other, old]))
    _this_sessions_console(tuner, SimpleNamespace(space=space, opts=SimpleNamespace(verbose=verbose),
                                                  assets={"stats": {"n_train_queries": 16}}))
    run_config = compat.tuner_run_config(tuner)
    assert run_config.verbose == tune_verbose
    assert run_config.callbacks[0] is other and len(run_config.callbacks) == 2
    fresh = run_config.callbacks[1]
    assert isinstance(fresh, TrialLines) and fresh is not old and fresh.view.live is live
    assert fresh.n_train_queries == 16   # its progress lines' step totals


def test_tuner_pkl_keeps_no_tracking_password_and_resume_gets_it_from_the_study(tmp_path):
    """README: only study.json (0600) keeps the store's password; tuner.pkl used to keep it too (issue 27)."""
    from ray import tune

    from study.track.trial_runs import NestedTrialRunsCallback
    from study.run.tuner import TrialLines, _this_sessions_console

    space = load_space(QUICKSTART)
    uri = "http://user:s3cret-pw@127.0.0.1:5000"
    callback = NestedTrialRunsCallback(uri, experiment_id="1", parent_run_id="p", study_name=space.name, space=space)

    def trainable(config):
        return {"x": 1}

    tune.Tuner(trainable, run_config=tune.RunConfig(name="tune", storage_path=str(tmp_path),
                                                    callbacks=[callback, TrialLines(space)]))
    pickled = (tmp_path / "tune" / "tuner.pkl").read_bytes()
    assert b"s3cret-pw" not in pickled and b"http://user:***@127.0.0.1:5000" in pickled
    assert callback.tracking_uri == uri   # the running study keeps using the real one

    restored = tune.Tuner.restore(str(tmp_path / "tune"), trainable=trainable)
    _this_sessions_console(restored, SimpleNamespace(space=space, opts=SimpleNamespace(verbose=console.NORMAL),
                                                     tracking_uri=uri, assets={"stats": {}},
                                                     paths=SimpleNamespace(trials_dir=tmp_path / "trials")))   # what resume reads from study.json
    (again,) = [c for c in compat.tuner_run_config(restored).callbacks if isinstance(c, NestedTrialRunsCallback)]
    assert again.tracking_uri == uri
