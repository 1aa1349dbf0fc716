"""Replicates: N seeds per configuration point, one mean per point in Optuna, no point run twice.

Fast tests drive the real searcher (Optuna on sqlite) and the real MLflow callback without Ray;
the slow test runs a tiny study with `replicates: 2` end to end (`kd-study run`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import pandas as pd
import yaml

from study.space.replicates import REPLICATE_KEY, bootstrap_interval, point_id
from study.space.schema import load_space
from trainables.config import ConfigError

from tests.test_study import FakeTrial, run_cli, study_runs, write_space


def small_space(tmp_path: Path, name: str = "r", **study) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}, "seed": 7},
        "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
                   "sampler.name": {"type": "categorical", "choices": ["topk", "random"]}},
        "study": {"name": name, "algorithm": "random", "num_samples": 4, "replicates": 2, **study}}))
    return path


# ---- the space ------------------------------------------------------------------------------------------
def test_replicates_count_points_and_seed_each_replicate(tmp_path):
    space = load_space(small_space(tmp_path))
    assert space.replicates == 2 and space.num_samples == 4 and space.num_trials == 8
    point = {"loss.name": "kl", "sampler.name": "topk"}
    assert space.trial_config(point).seed == 7                                   # no replicate: the base seed
    assert [space.trial_config({**point, REPLICATE_KEY: r}).seed for r in (0, 1)] == [7, 8]
    assert load_space(small_space(tmp_path, replicates=1)).num_trials == 4       # default layout unchanged


@pytest.mark.parametrize("study, message", [
    ({"baseline": {"loss.nme": "kl"}}, "study.baseline.loss.nme: not a searched parameter"),
    ({"baseline": {"loss.name": "margin_mse"}}, "study.baseline.loss.name: 'margin_mse' is outside its search"),
    ({"replicates": 0}, "study.replicates"),
    ({"scheduler": "asha"}, "replicates > 1 runs with scheduler: none"),
])
def test_bad_replicate_settings_name_the_key(tmp_path, study, message):
    with pytest.raises(ConfigError, match=message):
        load_space(small_space(tmp_path, **study))


def test_a_baseline_inside_the_search_loads(tmp_path):
    assert load_space(small_space(tmp_path, baseline={"loss.name": "kl"})).study.baseline == {"loss.name": "kl"}


def test_point_id_ignores_the_replicate_and_int_vs_float():
    assert point_id({"a": 2, "b": "x"}) == point_id({"b": "x", "a": 2.0, REPLICATE_KEY: 1})
    assert point_id({"a": 2}) != point_id({"a": 3})


def test_bootstrap_interval_holds_the_mean_and_widens_with_seed_spread():
    tight = [{f"q{i}": 0.5 + 0.01 * (i % 3) for i in range(40)}] * 2
    spread = [{f"q{i}": v + 0.2 * s for i, v in enumerate(tight[0].values())} for s in range(2)]
    mean, low, high, n = bootstrap_interval(tight)
    assert n == 40 and low <= mean <= high and high - low < 0.01
    _, low2, high2, _ = bootstrap_interval(spread)
    assert high2 - low2 > 0.1                                                    # the seeds' spread is in it
    assert bootstrap_interval([{"q1": 1.0}, {"q2": 1.0}]) is None                # no common query


# ---- the searcher ----------------------------------------------------------------------------------------
def test_searcher_tells_one_mean_per_point_and_never_reruns_a_point(tmp_path):
    """2 seeds per point, handed out in a row; Optuna gets their mean; repeated proposals are skipped."""
    from study.compat import searcher_study
    from study.run.search import DUPLICATE_OF_ATTR, build_search
    from study.track.tracking import FINAL_METRIC_MARKER

    space = load_space(small_space(tmp_path))
    limiter = build_search(space, f"sqlite:///{tmp_path / 'o.db'}", max_concurrent=2)
    search = limiter.searcher
    seen, value = [], 0.1
    for i in range(space.num_trials):        # the 4 points of the space, 2 seeds each, then nothing left
        first, second = search.suggest(f"t{i}a"), search.suggest(f"t{i}b")
        assert first[REPLICATE_KEY] == 0 and second[REPLICATE_KEY] == 1
        assert point_id(first) == point_id(second)
        seen.append(point_id(first))
        search.on_trial_complete(f"t{i}b", {"dev_mrr_at_10": value + 0.2, FINAL_METRIC_MARKER: 0.1})
        search.on_trial_complete(f"t{i}a", {"dev_mrr_at_10": value, FINAL_METRIC_MARKER: 0.1})
        value += 0.1
        if len(seen) == 4:
            break
    assert len(set(seen)) == 4                                                  # every point once
    assert search.suggest("exhausted") == "FINISHED"                            # 2 × 2 points: nothing new left
    from study.run.search import search_exhausted

    assert search_exhausted(f"sqlite:///{tmp_path / 'o.db'}", "r")              # the study ends as done
    trials = searcher_study(search).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({point_id(t.params) for t in complete}) == 4   # one value per point
    assert [round(t.value, 6) for t in complete] == [0.2, 0.3, 0.4, 0.5]        # mean of the two seeds
    skipped = [t for t in trials if t.state.name == "FAIL"]
    assert skipped and all(DUPLICATE_OF_ATTR in t.user_attrs for t in skipped)  # repeats: skipped, not run


def test_a_point_with_a_failed_seed_fails_and_a_retried_seed_completes_it(tmp_path):
    from study.compat import searcher_study
    from study.run.search import build_search
    from study.track.tracking import FINAL_METRIC_MARKER

    search = build_search(load_space(small_space(tmp_path)), f"sqlite:///{tmp_path / 'o.db'}", 2).searcher
    search.suggest("a"), search.suggest("b")
    search.on_trial_complete("a", {"dev_mrr_at_10": 0.4, FINAL_METRIC_MARKER: 0.1})
    assert searcher_study(search).trials[0].state.name == "RUNNING"             # waits for its other seed
    search.on_trial_complete("b", None, error=True)
    assert searcher_study(search).trials[0].state.name == "FAIL"
    search.on_trial_complete("b", {"dev_mrr_at_10": 0.6, FINAL_METRIC_MARKER: 0.1})   # `resume` retried it
    retried = [t for t in searcher_study(search).trials if t.state.name == "COMPLETE"]
    assert len(retried) == 1 and retried[0].value == pytest.approx(0.5)


def test_one_seed_studies_keep_their_trial_configs(tmp_path):
    from study.run.search import build_search

    search = build_search(load_space(small_space(tmp_path, replicates=1)), f"sqlite:///{tmp_path / 'o.db'}", 1).searcher
    assert REPLICATE_KEY not in search.suggest("a")


# ---- MLflow: parent → point runs → seed runs ------------------------------------------------------------
def test_point_runs_hold_the_mean_and_interval_of_their_seed_runs(tmp_path):
    import mlflow

    from study.track import tracking
    from study.report.runs import load_study_runs
    from study.track.tags import CI_HIGH_SUFFIX, CI_LOW_SUFFIX, POINT_SEEDS_METRIC
    from study.track.trial_runs import NestedTrialRunsCallback

    space = load_space(small_space(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    experiment_id, parent = tracking.start_parent_run(uri, "r", "r", space_params={"study.metric": "dev_mrr_at_10"},
                                                      tags={}, artifacts=[])
    callback = NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name="r",
                                       space=space)
    callback.setup()
    point = {"loss.name": "kl", "sampler.name": "topk"}
    for replicate, value in ((0, 0.4), (1, 0.6)):
        checkpoint = tmp_path / f"ckpt{replicate}"
        checkpoint.mkdir()
        (checkpoint / "per_query.json").write_text(json.dumps({"dev_mrr_at_10": {f"q{i}": value for i in range(5)}}))
        trial = FakeTrial(f"s{replicate}", {**point, REPLICATE_KEY: replicate},
                          {"step": 4, "dev_mrr_at_10": value, tracking.FINAL_METRIC_MARKER: 0.1,
                           "checkpoint_path": str(checkpoint)})
        callback.log_trial_start(trial)
        callback.log_trial_result(4, trial, trial.last_result)
        callback.log_trial_end(trial)

    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([experiment_id], f"tags.`kd_study.study_run` = '{parent}'")
    points = [r for r in runs if r.data.tags["kd_study.kind"] == "point"]
    seeds = [r for r in runs if r.data.tags["kd_study.kind"] == "trial"]
    assert len(points) == 1 and len(seeds) == 2
    point_run = points[0]
    assert point_run.info.status == "FINISHED" and point_run.data.tags["mlflow.parentRunId"] == parent
    assert "seed" not in point_run.data.params and point_run.data.params["loss.name"] == "kl"
    metrics = point_run.data.metrics
    assert metrics["dev_mrr_at_10"] == pytest.approx(0.5) and metrics[POINT_SEEDS_METRIC] == 2
    assert metrics["dev_mrr_at_10" + CI_LOW_SUFFIX] == pytest.approx(0.4)      # the seeds differ on every query
    assert metrics["dev_mrr_at_10" + CI_HIGH_SUFFIX] == pytest.approx(0.6)
    assert {r.data.tags["mlflow.parentRunId"] for r in seeds} == {point_run.info.run_id}
    assert sorted(r.data.tags["kd_study.replicate"] for r in seeds) == ["0", "1"]
    assert sorted(r.data.params["seed"] for r in seeds) == ["7", "8"]
    assert {r.data.tags["kd_study.point"] for r in seeds} == {point_id(point)}
    study = load_study_runs("r", uri)                                          # the report reads the seed runs
    assert sorted(study.trials["trial_id"]) == ["s0", "s1"]


# ---- end to end -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("kd-replicates")


@pytest.mark.slow
def test_a_tiny_study_runs_two_seeds_per_point_and_each_point_once(workdir, sample_data):
    """`replicates: 2` over a 2-point space: 2 seed runs per point, one value per point in Optuna."""
    import optuna

    name = "tiny-replicates"
    space = write_space(workdir, sample_data, name, {"algorithm": "random", "num_samples": 2, "replicates": 2,
                                                     "max_concurrent_trials": 2},
                        {"sampler.name": {"type": "categorical", "choices": ["topk", "random"]}})
    raw = yaml.safe_load(space.read_text())
    raw["base"]["resources"] = {"num_workers": 1, "cpus_per_worker": 1}    # the 2 seeds side by side on 2 CPUs
    raw["base"]["optim"]["epochs"] = 1
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_cli(workdir, "run", str(space), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]

    client, parents, seeds = study_runs(workdir, name)
    points = client.search_runs([parents[0].info.experiment_id],
                                f"tags.`kd_study.name` = '{name}' and tags.`kd_study.kind` = 'point'")
    assert len(parents) == 1 and len(points) == 2 and len(seeds) == 4
    for point in points:
        mine = [s for s in seeds if s.data.tags["mlflow.parentRunId"] == point.info.run_id]
        assert len(mine) == 2 and sorted(s.data.tags["kd_study.replicate"] for s in mine) == ["0", "1"]
        assert len({s.data.params["seed"] for s in mine}) == 2
        mean = sum(s.data.metrics["dev_mrr_at_10"] for s in mine) / 2
        assert point.data.metrics["dev_mrr_at_10"] == pytest.approx(mean)
        assert point.data.metrics["point/n_seeds"] == 2 and point.info.status == "FINISHED"

    study_dir = workdir / "studies" / name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and len({t.params["sampler.name"] for t in complete}) == 2   # each point once
    by_sampler = {p.data.params["sampler.name"]: p.data.metrics["dev_mrr_at_10"] for p in points}
    assert {t.params["sampler.name"]: t.value for t in complete} == pytest.approx(by_sampler)


# ---- kd-study confirm -----------------------------------------------------------------------------------
def test_kendall_tau_matches_scipy_and_its_interval_holds_it():
    from scipy.stats import kendalltau

    from study.report.ranking import kendall_tau

    x, y = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.15, 0.1, 0.35, 0.3, 0.6, 0.5]
    tau, low, high, p = kendall_tau(x, y)
    assert tau == pytest.approx(kendalltau(x, y).statistic) and p == pytest.approx(kendalltau(x, y).pvalue)
    assert low <= tau <= high <= 1.0
    assert kendall_tau([0.1, 0.2], [0.2, 0.1])[0] == -1.0                        # 2 points: τ, no interval


def test_tied_with_best_holm_corrects_paired_tests():
    """The best's paired t-tests over queries, Holm-adjusted: a close point is tied, a far one is not."""
    import numpy as np
    from scipy.stats import ttest_rel

    from study.run.confirm import tied_with_best

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 60)
    per_point = {"best": base + 0.2, "close": base + 0.19 + rng.normal(0, 0.05, 60),
                 "far": base - 0.1 + rng.normal(0, 0.05, 60)}
    frames = {p: pd.DataFrame({0: vals}, index=[f"q{i}" for i in range(60)]) for p, vals in per_point.items()}
    means = {p: float(np.mean(v)) for p, v in per_point.items()}
    tied, test, n = tied_with_best(frames, means, "max")
    assert tied == {"best": True, "close": True, "far": False} and n == 60 and "Holm" in test and "one seed" in test
    raw = [ttest_rel(per_point["best"], per_point[p]).pvalue for p in ("close", "far")]
    assert raw[0] > 0.05 and raw[1] < 1e-6
    # two seeds, paired by replicate: the test generalises over queries and seeds, as the report's contrasts do
    seeds = {p: pd.DataFrame({0: v, 1: v + rng.normal(0, 0.02, 60)}, index=frames[p].index) for p, v in per_point.items()}
    tied, test, _ = tied_with_best(seeds, means, "max")
    assert tied["far"] is False and "60 queries × 2 seeds" in test


def test_the_confirmation_space_runs_the_top_points_at_full_fidelity(tmp_path):
    from study.run.confirm import confirm_space_file
    from study.paths import StudyPaths
    from study.space.schema import dump_space

    sweep = load_space(small_space(tmp_path, name="sweep"))
    raw = yaml.safe_load(dump_space(sweep))
    raw["base"]["eval"]["subset_distractors"] = 50
    paths = StudyPaths.of("sweep", tmp_path / "studies")
    paths.dir.mkdir(parents=True)
    paths.space_resolved.write_text(yaml.safe_dump(raw))
    top = [{"loss.name": "wkl", "sampler.name": "topk"}, {"loss.name": "kl", "sampler.name": "random"}]
    path = confirm_space_file("sweep", str(tmp_path / "studies"), top, child="sweep-confirm", replicates=3,
                              pins={"sampler.name": "topk"}, epochs=None, max_steps=None,
                              metric="dev_mrr_at_10", mode="max")
    child = load_space(path)
    assert child.name == "sweep-confirm" and child.num_samples == 2 and child.replicates == 3
    assert child.base.eval.subset_distractors is None and child.base.optim.epochs == 2 * sweep.base.optim.epochs
    assert child.param_names == ["loss.name"] and child.base.sampler.name == "topk"   # a pin is no longer searched
    assert child.study.points_to_evaluate == [{"loss.name": "wkl"}, {"loss.name": "kl"}]


@pytest.mark.slow
def test_confirm_reruns_the_top_points_and_prints_the_rank_correlation(workdir):
    """`kd-study confirm` on the tiny replicates study: a child study under its parent run, the τ table."""
    name = "tiny-replicates"
    if not (workdir / "studies" / name / "study.json").is_file():
        pytest.skip("needs the tiny replicates study of the test above")
    result = run_cli(workdir, "confirm", name, "--top", "2", "--replicates", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Kendall τ" in result.stdout and "tied with the best" in result.stdout
    console = result.stdout + result.stderr                               # --quiet: the libraries' lines go to logs/
    assert "RayTrainWorker" not in console and "Reporting training result" not in console, console[-2000:]
    assert (workdir / "studies" / f"{name}-confirm" / "logs" / "driver.log").is_file()
    table = (workdir / "studies" / name / "confirm" / f"{name}-confirm.md").read_text()
    print(table)                                                          # the rank-correlation table, in CI logs
    assert "| confirmed rank |" in table.replace("dev_mrr_at_10 ", "") or "confirmed rank" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "point" not in line]
    assert len(rows) == 2

    client, parents, _ = study_runs(workdir, f"{name}-confirm")
    _, sweep_parents, _ = study_runs(workdir, name)
    assert len(parents) == 1 and parents[0].data.tags["mlflow.parentRunId"] == sweep_parents[0].info.run_id
    _, _, confirm_trials = study_runs(workdir, f"{name}-confirm")
    assert len(confirm_trials) == 2
    assert {r.data.params["eval.subset_distractors"] for r in confirm_trials} == {"None"}
    assert {r.data.params["optim.epochs"] for r in confirm_trials} == {"2"}          # twice the sweep's 1 epoch
    from study.report.runs import load_study_runs

    sweep = load_study_runs(name, f"sqlite:///{workdir / 'mlruns.db'}")
    assert len(sweep.trials) == 4                                         # the child study is not a trial
    artifacts = {a.path for a in client.list_artifacts(sweep.parent_run_id, "confirm")}
    assert f"confirm/{name}-confirm.md" in artifacts


def test_a_searched_seed_is_the_points_own_not_the_seed_its_replicate_trained_with(tmp_path):
    """An A/A control searches `seed` (0 vs 100): its replicate r trains with seed + r and logs that. The confirm
    must read the point back as seed 0 or 100 with all its replicates, not one point per trained seed."""
    from types import SimpleNamespace

    from study.run.confirm import point_means

    path = tmp_path / "aa.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
        "search": {"loss.name": {"type": "categorical", "choices": ["kl"]},
                   "seed": {"type": "categorical", "choices": [0, 100]}},
        "study": {"name": "aa", "algorithm": "grid", "replicates": 3}}))
    space = load_space(path)
    assert [space.trial_config({"loss.name": "kl", "seed": 100, REPLICATE_KEY: r}).seed for r in (0, 1, 2)] == \
        [100, 101, 102]
    trials = pd.DataFrame([{"run_id": f"{seed}-{r}", "loss.name": "kl", "seed": seed + r, "replicate": r,
                            "dev": 0.1 * (seed > 0) + 0.01 * r} for seed in (0, 100) for r in (0, 1, 2)])
    points = point_means(SimpleNamespace(trials=trials), space, "dev")
    assert sorted(p["params"]["seed"] for p in points.values()) == [0, 100]
    assert {p["n"] for p in points.values()} == {3}


def test_a_searched_training_length_the_confirmation_fixes_is_not_part_of_a_point(tmp_path):
    """The v3 arms search `optim.epochs: [1]` (the control trains 2): confirmed at 3 epochs, a point must keep its id."""
    from types import SimpleNamespace

    from study.run.confirm import point_means, training_length

    assert training_length({"epochs": 2}, None, None) == {"optim.epochs": 4}
    assert training_length({"epochs": 2, "max_steps": 50}, None, None) == {"optim.max_steps": 100}
    assert training_length({"epochs": 2}, 3, None) == {"optim.epochs": 3}
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
        "search": {"loss.name": {"type": "categorical", "choices": ["kl", "labels"]},
                   "optim.epochs": {"type": "categorical", "choices": [1]}},
        "study": {"name": "arms", "algorithm": "grid", "replicates": 1}}))
    space = load_space(path)
    sweep = pd.DataFrame([{"run_id": f"s-{loss}", "loss.name": loss, "optim.epochs": 1, "dev": 0.3}
                          for loss in ("kl", "labels")])
    child = sweep.assign(run_id=lambda f: "c" + f["run_id"], **{"optim.epochs": 3})
    pinned = set(training_length({"epochs": 2}, 3, None))
    before, after = (point_means(SimpleNamespace(trials=t), space, "dev", exclude=pinned) for t in (sweep, child))
    assert set(before) == set(after) and len(before) == 2
    unpinned = [set(point_means(SimpleNamespace(trials=t), space, "dev")) for t in (sweep, child)]
    assert unpinned[0].isdisjoint(unpinned[1])                            # the old mismatch: no point in common


def test_compare_ranks_points_of_a_sweep_and_its_confirmation(tmp_path):
    """The confirmation table from two studies in the store (runs made by the real MLflow callback)."""
    import math

    from study.track import tracking
    from study.run.confirm import compare, point_means, write_confirmation
    from study.report.runs import load_study_runs
    from study.track.trial_runs import NestedTrialRunsCallback

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    space = load_space(small_space(tmp_path))
    scores = {"sweep": {("kl", "topk"): 0.5, ("wkl", "topk"): 0.4, ("kl", "random"): 0.3},
              "sweep-confirm": {("kl", "topk"): 0.6, ("wkl", "topk"): 0.595, ("kl", "random"): 0.2}}
    for study, points in scores.items():
        experiment_id, parent = tracking.start_parent_run(uri, "e", study, space_params={"study.metric": "dev_mrr_at_10"},
                                                          tags={}, artifacts=[])
        callback = NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name=study,
                                           space=space)
        callback.setup()
        for (loss, sampler), value in points.items():
            for replicate in (0, 1):
                trial_id = f"{study}-{loss}-{sampler}-{replicate}"
                checkpoint = tmp_path / trial_id
                checkpoint.mkdir()
                shift = len(loss) * 3 + len(sampler)       # each point its own per-query pattern
                noise = [0.01 * ((i * 7 + replicate + shift) % 5 - 2) for i in range(30)]
                per_query = {f"q{i}": value + n for i, n in enumerate(noise)}
                (checkpoint / "per_query.json").write_text(json.dumps({"dev_mrr_at_10": per_query}))
                mean = sum(per_query.values()) / len(per_query)
                trial = FakeTrial(trial_id, {"loss.name": loss, "sampler.name": sampler, REPLICATE_KEY: replicate},
                                  {"dev_mrr_at_10": mean, tracking.FINAL_METRIC_MARKER: 0.1,
                                   "checkpoint_path": str(checkpoint)})
                callback.log_trial_start(trial)
                callback.log_trial_result(1, trial, trial.last_result)
                callback.log_trial_end(trial)
    sweep_points = point_means(load_study_runs("sweep", uri), space, "dev_mrr_at_10")
    assert len(sweep_points) == 3 and {p["n"] for p in sweep_points.values()} == {2}
    chosen = sorted(sweep_points, key=lambda p: -sweep_points[p]["mean"])
    result = compare("sweep", "sweep-confirm", uri, space, sweep_points, chosen, "dev_mrr_at_10", "dev_mrr_at_10",
                     "max", set())
    assert [r["sweep_rank"] for r in result.rows] == [1, 2, 3]
    assert [r["confirm_rank"] for r in result.rows] == [1, 2, 3] and math.isclose(result.tau, 1.0)
    tied = {tuple(r["params"].values()): r["tied"] for r in result.rows}
    assert tied == {("kl", "topk"): True, ("wkl", "topk"): True, ("kl", "random"): False}   # 0.005 apart: tied
    md, csv_path = write_confirmation(result, tmp_path / "out")
    assert "Kendall τ" in md.read_text() and len(csv_path.read_text().splitlines()) == 4
