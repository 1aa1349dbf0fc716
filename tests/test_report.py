"""Study report against a real MLflow sqlite store: a parent run and nested trial runs, as tracking writes them."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.report.export import export_best
from study.report import (
    DAGGER,
    ReportError,
    best_trial,
    build_report,
    collect_trials,
    load_per_query,
    paired_test,
    print_report,
    render_report,
    report_study,
    sensitivity_table,
)
from study.report.runs import study_baseline, study_objectives
from trainables.config import TrialConfig

STUDY = "wkl-sweep"
KL_ONLY = "kl-only"
N_QUERIES = 30
QIDS = [f"q{i}" for i in range(N_QUERIES)]


@dataclass
class Store:
    uri: str
    parent_id: str
    kl_only_parent_id: str
    run_ids: dict[str, str]            # trial_id → run id
    dev: dict[str, float]              # trial_id → dev_mrr_at_10
    configs: dict[str, TrialConfig]    # trial_id → config logged as trial_config.yaml
    optuna_db: Path
    artifacts: Path


def _flatten(raw: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def _trial_specs() -> list[dict]:
    """Per-query dev RR@10 built so the tests know the answer: (γ1=5, α=1) best over 2 seeds,
    (5, 0) equal up to symmetric noise, (2, 0) lower on every query; KL runs for sampler × K."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, N_QUERIES)
    seed_noise = rng.normal(0.0, 0.05, N_QUERIES)
    symmetric = np.tile([0.15, -0.15], N_QUERIES // 2)  # mean 0, large spread: no evidence
    wkl = dict(loss="wkl", sampler="stratified", k=8)
    kl = dict(loss="kl", gamma1=0.0, alpha=0.0)
    return [
        dict(trial="t0", gamma1=5.0, alpha=1.0, seed=0, values=base + seed_noise, **wkl),
        dict(trial="t1", gamma1=5.0, alpha=1.0, seed=1, values=base - seed_noise, **wkl),
        dict(trial="t2", gamma1=5.0, alpha=0.0, seed=0, values=base + symmetric - 0.002, **wkl),
        dict(trial="t3", gamma1=2.0, alpha=0.0, seed=0, values=base - 0.08 + rng.normal(0, 0.01, N_QUERIES), **wkl),
        dict(trial="t4", gamma1=2.0, alpha=1.0, seed=0, values=base - 0.01 + rng.normal(0, 0.1, N_QUERIES), **wkl),
        dict(trial="t5", sampler="topk", k=4, seed=0, values=base - 0.05 + rng.normal(0, 0.02, N_QUERIES), **kl),
        dict(trial="t6", sampler="stratified", k=4, seed=0, values=base - 0.02 + rng.normal(0, 0.02, N_QUERIES), **kl),
        dict(trial="t7", sampler="stratified", k=8, seed=0, values=base + rng.normal(0, 0.02, N_QUERIES), **kl),
        # Killed with a record metric: it must never count.
        dict(trial="t8", gamma1=6.0, alpha=1.5, seed=0, values=np.full(N_QUERIES, 0.99), status="KILLED", **wkl),
    ]


def _log_trial(client, experiment_id: str, parent_id: str, spec: dict, tmp: Path) -> tuple[str, float, TrialConfig]:
    from mlflow.entities import Metric, Param

    config = TrialConfig().with_overrides({
        "name": spec["trial"], "seed": spec["seed"], "loss.name": spec["loss"], "loss.gamma1": spec["gamma1"],
        "loss.alpha": spec["alpha"], "sampler.name": spec["sampler"], "sampler.k": spec["k"],
    })
    values = np.clip(spec["values"], 0.0, 1.0)
    dev = float(values.mean())
    run = client.create_run(experiment_id, run_name=spec["trial"], tags={
        "mlflow.parentRunId": parent_id, "kd_study.kind": "trial", "kd_study.name": STUDY,
        "kd_study.trial_id": spec["trial"], "sampler": spec["sampler"],
        "loss": spec["loss"], "k": str(spec["k"]), **spec.get("tags", {}),
    })
    stratified = spec["sampler"] == "stratified"
    metrics = {
        "dev_mrr_at_10": dev, "dev_ndcg_at_10": dev + 0.05, "beir_ndcg_at_10_avg": 0.6 - dev / 4,
        "beir/scifact/ndcg_at_10": 0.6 - dev / 4, "train/sampled_score_variance": 4.0 if stratified else 0.5,
        "train/sampled_score_entropy": 2.0 if stratified else 1.2, "time/teacher_s": 12.0,
        "time/train_s": 30.0 + spec["k"], "time/eval_s": 8.0, "time/overhead_s": 20.0,
        **spec.get("extra_metrics", {}),
    }
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in _flatten(config.model_dump(mode="json")).items()])
    config_path = tmp / f"{spec['trial']}" / "trial_config.yaml"
    config_path.parent.mkdir(parents=True)
    config.to_yaml(config_path)
    client.log_artifact(run.info.run_id, str(config_path))
    per_query = {"dev_mrr_at_10": dict(zip(QIDS, values.tolist())),
                 "dev_ndcg_at_10": dict(zip(QIDS, (values + 0.05).tolist()))}
    client.log_text(run.info.run_id, json.dumps(per_query), "per_query.json")
    client.set_terminated(run.info.run_id, spec.get("status", "FINISHED"))
    return run.info.run_id, dev, config


def _migrated_db(base: Path) -> Path:
    """An empty, migrated MLflow sqlite file, made once per session (migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    template = base / "mlflow-template" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir(exist_ok=True)
        MlflowClient(f"sqlite:///{template}").search_experiments()
    return template


def make_study_store(root: Path, base: Path) -> Store:
    """A sqlite MLflow store in `root` with the study `wkl-sweep` (8 finished + 1 killed trial) and `kl-only`."""
    import optuna
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_db(base), root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    artifacts = root / "artifacts"
    experiment_id = client.create_experiment("kd-study", artifact_location=artifacts.as_uri())
    parent = client.create_run(experiment_id, run_name=STUDY,
                               tags={"kd_study.name": STUDY, "kd_study.kind": "study"})
    run_ids, dev, configs = {}, {}, {}
    for spec in _trial_specs():
        run_ids[spec["trial"]], dev[spec["trial"]], configs[spec["trial"]] = _log_trial(
            client, experiment_id, parent.info.run_id, spec, root / "logged")
    client.set_terminated(parent.info.run_id)

    # A second study in the same store, with no WKL trial and no per-query values.
    kl_parent = client.create_run(experiment_id, tags={"kd_study.name": KL_ONLY, "kd_study.kind": "study"})
    for spec in _trial_specs()[5:7]:
        run_id, *_ = _log_trial(client, experiment_id, kl_parent.info.run_id, {**spec, "trial": "kl-" + spec["trial"]},
                                root / "logged-kl")
        client.delete_tag(run_id, "kd_study.trial_id")
    client.set_terminated(kl_parent.info.run_id)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_db = root / "optuna.db"
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{optuna_db}", direction="maximize")
    distributions = {"loss.gamma1": optuna.distributions.FloatDistribution(0.0, 6.0),
                     "loss.alpha": optuna.distributions.CategoricalDistribution([0.0, 0.5, 1.0, 1.5]),
                     "sampler.k": optuna.distributions.CategoricalDistribution([8])}
    for spec in _trial_specs()[:5]:
        study.add_trial(optuna.trial.create_trial(
            params={"loss.gamma1": spec["gamma1"], "loss.alpha": spec["alpha"], "sampler.k": 8},
            distributions=distributions, value=dev[spec["trial"]]))
    return Store(uri, parent.info.run_id, kl_parent.info.run_id, run_ids, dev, configs, optuna_db, artifacts)


LOSS_MIN = "loss-min"
# A `mode: min` study: the lowest final training loss wins. t2 has it; t0 has the highest Dev MRR@10
# (what a report that ignored the study's mode would name); the killed t8 has an even lower loss.
MIN_LOSSES = {"t0": 0.40, "t1": 0.42, "t2": 0.20, "t3": 0.60, "t4": 0.55, "t8": 0.01}


def make_min_study_store(root: Path, base: Path) -> Store:
    """A sqlite MLflow store with the study `loss-min`, whose parent run logs `study.metric`/`study.mode: min`."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_db(base), root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("kd-study", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=LOSS_MIN,
                               tags={"kd_study.name": LOSS_MIN, "kd_study.kind": "study"})
    # As tracking.log_params writes the space file's `study:` block.
    client.log_batch(parent.info.run_id, params=[Param("study.metric", "train/loss_final"), Param("study.mode", "min"),
                                                 Param("study.objectives", "None")])
    run_ids, dev, configs = {}, {}, {}
    for spec in _trial_specs():
        if spec["trial"] in MIN_LOSSES:
            spec = {**spec, "extra_metrics": {"train/loss_final": MIN_LOSSES[spec["trial"]]}}
            run_ids[spec["trial"]], dev[spec["trial"]], configs[spec["trial"]] = _log_trial(
                client, experiment_id, parent.info.run_id, spec, root / "logged")
    client.set_terminated(parent.info.run_id)
    return Store(uri, parent.info.run_id, "", run_ids, dev, configs, root / "no-optuna.db", root / "artifacts")


REPLICATED = "replicated"


def _replicated_specs() -> list[dict]:
    """Three KL points × 2 seed runs tagged as the replicates contract says: stratified K=8 best, topk K=8
    0.01 behind with noisy queries (tied), topk K=4 0.15 behind on every query (worse)."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.7, N_QUERIES)
    kl = dict(loss="kl", gamma1=0.0, alpha=0.0)
    points = [("p-strat8", "stratified", 8, 0.0, 0.01), ("p-topk8", "topk", 8, -0.01, 0.06),
              ("p-topk4", "topk", 4, -0.15, 0.01)]
    return [dict(trial=f"{point}-s{replicate}", sampler=sampler, k=k, seed=replicate,
                 values=base + shift + rng.normal(0, noise, N_QUERIES),
                 tags={"kd_study.point": point, "kd_study.replicate": str(replicate)}, **kl)
            for point, sampler, k, shift, noise in points for replicate in range(2)]


def make_replicated_store(root: Path, base: Path) -> Store:
    """A sqlite MLflow store with the study `replicated`: 3 points × 2 seed runs, baseline sampler topk."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_db(base), root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("kd-study", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=REPLICATED,
                               tags={"kd_study.name": REPLICATED, "kd_study.kind": "study"})
    # As runner._space_params logs the space file's `study:` block (a dict param is JSON).
    client.log_batch(parent.info.run_id, params=[Param("study.metric", "dev_mrr_at_10"), Param("study.mode", "max"),
                                                 Param("study.baseline", '{"sampler.name": "topk"}')])
    run_ids, dev, configs = {}, {}, {}
    for spec in _replicated_specs():
        run_ids[spec["trial"]], dev[spec["trial"]], configs[spec["trial"]] = _log_trial(
            client, experiment_id, parent.info.run_id, spec, root / "logged")
    client.set_terminated(parent.info.run_id)
    return Store(uri, parent.info.run_id, "", run_ids, dev, configs, root / "no-optuna.db", root / "artifacts")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return make_study_store(tmp_path_factory.mktemp("store"), tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def written(store, tmp_path_factory) -> Path:
    """The report of `wkl-sweep`, written once (with Optuna importances) and logged on the parent run."""
    return report_study(STUDY, store.uri, tmp_path_factory.mktemp("report"), optuna_storage=store.optuna_db)


@pytest.fixture(scope="module")
def trials(store) -> pd.DataFrame:
    return collect_trials(STUDY, store.uri)


@pytest.fixture(scope="module")
def per_query(store, trials) -> dict:
    return load_per_query(store.uri, trials["run_id"], metrics=["dev_mrr_at_10"])


# ---- collecting -------------------------------------------------------------------------------------
def test_collect_trials_keeps_finished_runs_with_typed_params(store, trials):
    assert sorted(trials["trial_id"]) == [f"t{i}" for i in range(8)]  # t8 was KILLED
    assert set(trials["run_id"]) == {store.run_ids[f"t{i}"] for i in range(8)}
    assert trials["loss.gamma1"].dtype.kind == "f" and trials["sampler.k"].dtype.kind == "i"
    t3 = trials.set_index("trial_id").loc["t3"]
    assert (t3["loss.name"], t3["loss.gamma1"], t3["loss.alpha"]) == ("wkl", 2.0, 0.0)
    assert t3["dev_mrr_at_10"] == pytest.approx(store.dev["t3"])
    assert "beir/scifact/ndcg_at_10" in trials.columns and "time/train_s" in trials.columns
    assert trials.attrs["parent_run_id"] == store.parent_id


def test_collect_trials_falls_back_to_run_name_without_trial_tag(store):
    trials = collect_trials(KL_ONLY, store.uri)
    assert sorted(trials["trial_id"]) == ["kl-t5", "kl-t6"]


def test_unknown_study_is_a_one_line_error(store):
    with pytest.raises(ReportError, match=r"no study named 'nope' .*known studies: kl-only, wkl-sweep") as error:
        collect_trials("nope", store.uri)
    assert "\n" not in str(error.value)
    with pytest.raises(ReportError, match="no study named 'nope'"):
        report_study("nope", store.uri, "unused")


def test_unknown_metric_lists_the_available_ones(store, tmp_path):
    with pytest.raises(ReportError, match=r"unknown metric 'dev_map'.*available metrics: .*dev_mrr_at_10") as error:
        report_study(STUDY, store.uri, tmp_path, metric="dev_map")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "report.md").exists()


# ---- sensitivity tables --------------------------------------------------------------------------------
def test_gamma_alpha_table_has_cell_means_over_seeds(store, trials, per_query):
    wkl = trials[trials["loss.name"] == "wkl"]
    table = sensitivity_table(wkl, "loss.gamma1", "loss.alpha", "dev_mrr_at_10", per_query)
    assert list(table.mean.index) == [2.0, 5.0] and list(table.mean.columns) == [0.0, 1.0]
    assert table.mean.loc[5.0, 1.0] == pytest.approx((store.dev["t0"] + store.dev["t1"]) / 2)
    assert table.count.loc[5.0, 1.0] == 2 and table.count.loc[2.0, 0.0] == 1
    assert table.mean.loc[2.0, 0.0] == pytest.approx(store.dev["t3"])
    assert table.best == (5.0, 1.0)
    assert table.formatted().shape == (2, 2)


def test_clearly_worse_cell_is_marked_and_noisy_equal_and_best_are_not(trials, per_query):
    wkl = trials[trials["loss.name"] == "wkl"]
    table = sensitivity_table(wkl, "loss.gamma1", "loss.alpha", "dev_mrr_at_10", per_query)
    assert table.worse.loc[2.0, 0.0] and table.p_value.loc[2.0, 0.0] < 1e-6
    assert table.cell_text(2.0, 0.0).count(DAGGER) == 1
    assert not table.worse.loc[5.0, 0.0] and table.p_value.loc[5.0, 0.0] > 0.5
    assert not table.worse.loc[5.0, 1.0] and DAGGER not in table.cell_text(5.0, 1.0)
    assert table.n_queries.loc[2.0, 0.0] == N_QUERIES
    markdown = table.to_markdown()
    assert "**" + table.cell_text(5.0, 1.0) + "**" in markdown and DAGGER in markdown


def test_sampler_k_table_leaves_untried_cells_empty(trials, per_query):
    kl = trials[trials["loss.name"] == "kl"]
    table = sensitivity_table(kl, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query)
    assert list(table.mean.index) == ["topk", "stratified"] and list(table.mean.columns) == [4, 8]
    assert np.isnan(table.mean.loc["topk", 8]) and table.cell_text("topk", 8) == "—"
    assert table.best == ("stratified", 8)
    assert table.worse.loc["topk", 4]  # 0.05 below on every query, small noise
    assert len(table.long()) == 3


def test_without_per_query_values_nothing_is_marked(trials):
    wkl = trials[trials["loss.name"] == "wkl"]
    table = sensitivity_table(wkl, "loss.gamma1", "loss.alpha", "dev_mrr_at_10")
    assert not table.worse.to_numpy().any() and not table.tested
    assert any("no significance test" in n for n in table.notes)


def test_paired_test_handles_identical_and_shifted_values():
    a = pd.Series({"q1": 0.5, "q2": 0.7, "q3": 0.2})
    assert paired_test(a, a)[0] == 1.0
    p, diff, n = paired_test(a - 0.1, a)
    assert p == 0.0 and diff == pytest.approx(-0.1) and n == 3
    assert np.isnan(paired_test(a.iloc[:1], a)[0])  # one shared query: no test


# ---- written report ----------------------------------------------------------------------------------------
def test_report_writes_tables_heatmaps_and_report_md(written):
    out = written.parent
    for stem in ("sensitivity_gamma1_alpha", "sensitivity_sampler_k_kl", "sensitivity_sampler_k_wkl"):
        for suffix in (".csv", ".md", ".png"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0, stem + suffix
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    long = pd.read_csv(out / "sensitivity_gamma1_alpha.csv")
    assert len(long) == 4 and long["significantly_worse"].sum() >= 1 and long["best"].sum() == 1
    text = written.read_text()
    assert "γ1 × α (WKL)" in text and DAGGER in text and "paired t-test" in text
    assert "## Best trial config" in text and "gamma1: 5.0" in text
    assert "t8" in text and "KILLED" in text  # listed, not counted
    assert "8 finished" in text


def test_report_tables_of_importances_diagnostics_and_times(written):
    out = written.parent
    importances = pd.read_csv(out / "importances.csv")
    assert set(importances["param"]) == {"loss.gamma1", "loss.alpha"}
    assert importances["importance"].sum() == pytest.approx(1.0)
    assert (out / "importances.png").exists()
    assert "constant in every completed trial, so no importance: sampler.k" in written.read_text()
    diagnostics = pd.read_csv(out / "sampler_diagnostics.csv")
    stratified = diagnostics[diagnostics["sampler.name"] == "stratified"]
    assert (stratified["mean sampled-score variance"] == 4.0).all()
    assert diagnostics.set_index(["sampler.name", "sampler.k"]).loc[("topk", 4), "n_trials"] == 1
    times = pd.read_csv(out / "trial_times.csv")
    assert len(times) == 8
    assert [c for c in times.columns if c.startswith("time/")] == [
        "time/teacher_s", "time/train_s", "time/eval_s", "time/overhead_s", "time/trial_wall_s"]
    assert (times["time/trial_wall_s"] >= 0).all()  # MLflow run start → end; the logged overhead is kept


def test_report_files_are_logged_on_the_parent_run(store, written):
    from mlflow.tracking import MlflowClient

    logged = {Path(f.path).name for f in MlflowClient(store.uri).list_artifacts(store.parent_id, "report")}
    on_disk = {p.name for p in written.parent.iterdir()}
    assert logged == on_disk
    assert {"report.md", "sensitivity_gamma1_alpha.png", "importances.png", "trials.csv"} <= logged


def test_report_without_wkl_trials_skips_the_gamma_alpha_table(store, tmp_path):
    few_trials = tmp_path / "optuna.db"
    import optuna

    optuna.create_study(study_name=KL_ONLY, storage=f"sqlite:///{few_trials}").add_trial(
        optuna.trial.create_trial(params={"x": 1.0}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 2)}, value=0.3))
    path = report_study(KL_ONLY, store.uri, tmp_path / "out", optuna_storage=few_trials, log_to_parent=False)
    text = path.read_text()
    assert "no finished WKL trials: γ1 × α table skipped" in text
    assert not (tmp_path / "out" / "sensitivity_gamma1_alpha.png").exists()
    assert (tmp_path / "out" / "sensitivity_sampler_k_kl.png").exists()
    assert "at least 2 completed Optuna trials, the study has 1" in text
    from mlflow.tracking import MlflowClient

    assert MlflowClient(store.uri).list_artifacts(store.kl_only_parent_id, "report") == []


def test_metric_default_and_explicit_beir_metric(store):
    report = build_report(STUDY, store.uri)
    assert report.metric == "dev_mrr_at_10" and report.best["trial_id"] == "t0"
    beir = build_report(STUDY, store.uri, metric="beir_ndcg_at_10_avg")
    # No per-query values for the BEIR average: the table exists, unmarked, and says why.
    table = beir.tables["gamma1_alpha"]
    assert not table.tested and any("per-query values of beir_ndcg_at_10_avg" in n for n in beir.notes)


def test_print_report_renders_tables(store):
    from rich.console import Console

    console = Console(record=True, width=160, color_system=None)
    print_report(STUDY, store.uri, console=console)
    text = console.export_text()
    assert "Dev MRR@10 by γ1 × α (WKL)" in text and DAGGER in text and "sampler × K (loss: kl)" in text
    assert "Trial times" in text and "Excluded runs" in text
    render_report(build_report(KL_ONLY, store.uri), Console(record=True, width=120))


# ---- the study's own metric and mode ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def min_store(tmp_path_factory) -> Store:
    return make_min_study_store(tmp_path_factory.mktemp("min-store"), tmp_path_factory.getbasetemp())


def test_min_study_reports_and_exports_the_same_best_trial(min_store, tmp_path):
    path = report_study(LOSS_MIN, min_store.uri, tmp_path / "report", log_to_parent=False)
    exported = export_best(LOSS_MIN, min_store.uri, out_path=tmp_path / "best.yaml")
    text = path.read_text()
    assert "- metric: train/loss_final (`train/loss_final`), lower is better" in text
    assert f"- best trial: `t2` (run `{min_store.run_ids['t2']}`): train/loss_final = 0.2000" in text
    assert TrialConfig.from_yaml(exported) == min_store.configs["t2"]
    assert "# train/loss_final = 0.2 (min over 5 finished trials)" in exported.read_text()
    # An explicit metric the study did not optimise is judged higher-is-better, in both.
    assert build_report(LOSS_MIN, min_store.uri, metric="dev_mrr_at_10").best["trial_id"] == "t0"
    export_best(LOSS_MIN, min_store.uri, metric="dev_mrr_at_10", out_path=tmp_path / "dev.yaml")
    assert TrialConfig.from_yaml(tmp_path / "dev.yaml") == min_store.configs["t0"]


def test_min_study_tables_pick_the_lowest_cell(min_store):
    report = build_report(LOSS_MIN, min_store.uri)
    table = report.tables["gamma1_alpha"]
    assert (report.metric, report.mode, table.mode) == ("train/loss_final", "min", "min")
    assert table.best == (5.0, 0.0) and table.mean.loc[5.0, 0.0] == pytest.approx(0.20)
    assert "lower is better" in table.legend()
    assert build_report(LOSS_MIN, min_store.uri, mode="max").tables["gamma1_alpha"].best == (2.0, 0.0)


def test_min_mode_marks_cells_above_the_best():
    qids = [f"q{i}" for i in range(20)]
    base = np.linspace(1.0, 3.0, 20)
    runs = {"low": base, "high": base + 0.5 + np.tile([0.01, -0.01], 10),
            "equal": base + 0.002 + np.tile([0.3, -0.3], 10)}  # higher on average, but no evidence
    df = pd.DataFrame({"run_id": list(runs), "sampler.name": ["stratified", "topk", "random"],
                       "sampler.k": [8, 8, 8], "dev_rank": [float(v.mean()) for v in runs.values()]})
    per_query = {run: {"dev_rank": dict(zip(qids, values.tolist()))} for run, values in runs.items()}
    low = sensitivity_table(df, "sampler.name", "sampler.k", "dev_rank", per_query, mode="min")
    assert low.best == ("stratified", 8)
    assert low.worse.loc["topk", 8] and not low.worse.loc["random", 8]
    high = sensitivity_table(df, "sampler.name", "sampler.k", "dev_rank", per_query, mode="max")
    assert high.best == ("topk", 8) and high.worse.loc["stratified", 8]


def test_best_trial_honours_mode_and_skips_non_finite_values():
    df = pd.DataFrame({"trial_id": list("abcde"), "m": [0.3, np.inf, 0.1, np.nan, -np.inf]})
    assert best_trial(df, "m")["trial_id"] == "a"
    assert best_trial(df, "m", "min")["trial_id"] == "c"
    with pytest.raises(ReportError, match="no finished trial has metric 'm'"):
        best_trial(df.iloc[[1, 3, 4]], "m")
    with pytest.raises(ReportError, match="mode must be 'max' or 'min'"):
        best_trial(df, "m", "best")


def test_study_objectives_read_from_the_parent_runs_params():
    assert study_objectives({"study.metric": "m", "study.mode": "min", "study.objectives": "None"}) == (("m", "min"),)
    objectives = '[{"metric": "a", "mode": "max"}, {"metric": "b", "mode": "min"}]'
    assert study_objectives({"study.metric": "None", "study.mode": "max", "study.objectives": objectives}) == (
        ("a", "max"), ("b", "min"))
    assert study_objectives({}) == ()


# ---- CIs, corrected marks, the tied set and power (crafted frames, no store) -------------------------------
def _crafted(shifts: dict[tuple[str, int], float], n_queries: int = 100, n_seeds: int = 1, noise: float = 0.14,
             seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Seed runs of sampler × K points: per-query values = base + shift + noise, `point`/`replicate` as tracked."""
    rng = np.random.default_rng(seed)
    qids = [f"q{i}" for i in range(n_queries)]
    base = rng.uniform(0.0, 0.3, n_queries)
    rows, per_query = [], {}
    for (sampler, k), shift in shifts.items():
        for replicate in range(n_seeds):
            run_id = f"{sampler}-{k}-{replicate}"
            values = base + shift + rng.normal(0, noise, n_queries)
            per_query[run_id] = {"dev_mrr_at_10": dict(zip(qids, values.tolist()))}
            rows.append({"run_id": run_id, "trial_id": run_id, "point": f"{sampler}-{k}", "replicate": replicate,
                         "loss.name": "kl", "sampler.name": sampler, "sampler.k": k,
                         "dev_mrr_at_10": float(values.mean())})
    return pd.DataFrame(rows), per_query


def test_small_differences_are_tied_and_the_table_says_it_cannot_separate_them():
    # The quickstart's situation: cells 0.007 apart, per-query SD of differences ≈ 0.14 (0.1·√2) over 100
    # queries, so MDE ≈ 0.04.
    shifts = {("topk", 4): 0.0, ("topk", 8): 0.004, ("stratified", 4): 0.007, ("stratified", 8): 0.003}
    df, per_query = _crafted(shifts, noise=0.1)
    table = sensitivity_table(df, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query, n_resamples=500)
    assert not table.worse.to_numpy().any()
    assert len(table.tied_cells()) == 4 and table.tied_cells()[0] == table.best
    assert table.power.mde > table.power.spread and not table.power.separable
    # MDE at the corrected level of the family of 3 contrasts with the best: ≈ 0.043 × (t_{1−0.05/6} + t_{0.8})/2.80
    assert table.power.family_size == 3 and 0.045 < table.power.mde < 0.055
    legend = table.legend()
    assert "this study cannot separate its cells" in legend and "Holm correction" in legend
    assert "n = 100 queries × 1 seed(s)" in legend and "Tied with the best: " in legend
    for r, c in shifts:
        assert table.ci_low.loc[r, c] < table.mean.loc[r, c] < table.ci_high.loc[r, c]
        assert 0.02 < table.ci_high.loc[r, c] - table.ci_low.loc[r, c] < 0.08   # ≈ 2 × 1.96 × 0.14/√100
    cell = table.cell_text("topk", 4)
    assert " ± " in cell and "≈" in cell and "†" not in cell


def test_corrected_marks_tied_set_and_baseline_with_seed_replicates():
    shifts = {("topk", 4): 0.0, ("topk", 8): 0.02, ("stratified", 4): 0.10, ("stratified", 8): 0.11}
    df, per_query = _crafted(shifts, n_seeds=2, noise=0.05)
    baseline = {"loss.name": "kl", "sampler.name": "topk"}
    table = sensitivity_table(df, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query, baseline=baseline,
                              n_resamples=500)
    assert table.best == ("stratified", 8) and (table.count == 2).all().all() and (table.n_seeds == 2).all().all()
    assert table.worse.loc["topk", 4] and table.worse.loc["topk", 8]
    assert set(table.tied_cells()) == {("stratified", 8), ("stratified", 4)}
    # Holm: each corrected p is at least the raw one; the smallest is multiplied by the family size (3).
    raw, adjusted = table.p_value.stack().dropna(), table.p_adjusted.stack().dropna()
    assert (adjusted >= raw - 1e-15).all() and adjusted.min() == pytest.approx(min(1.0, 3 * raw.min()))
    # The baseline (topk) at each K: stratified is better at both, topk K=8 is its own K's baseline.
    assert table.vs_baseline.loc["topk", 4] == "baseline" and table.vs_baseline.loc["topk", 8] == "baseline"
    assert table.vs_baseline.loc["stratified", 4] == "better" and table.vs_baseline.loc["stratified", 8] == "better"
    assert table.baseline_diff.loc["stratified", 8] == pytest.approx(0.11, abs=0.03)
    markdown = table.to_markdown()
    assert "▲" in markdown and "(baseline)" in markdown and "† (n=2)" in markdown
    assert "n = 100 queries × 2 seed(s)" in table.legend() and "seed SD" in table.legend()
    bh = sensitivity_table(df, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query, correction="bh",
                           n_resamples=200)
    assert "Benjamini–Hochberg correction" in bh.legend()
    long = table.long()
    assert {"ci_low", "ci_high", "p_adjusted_vs_best", "tied_with_best", "vs_baseline"} <= set(long.columns)
    assert long["tied_with_best"].sum() == 2


def test_baseline_outside_the_table_is_a_note():
    df, per_query = _crafted({("topk", 4): 0.0, ("stratified", 4): 0.01})
    table = sensitivity_table(df, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query,
                              baseline={"loss.name": "wkl"}, n_resamples=100)
    assert table.vs_baseline is None and any("baseline (loss.name=wkl) is not in this table" in n for n in table.notes)


def test_points_table_lists_the_configurations_tied_with_the_best():
    from study.report.points import point_table, tied_points

    shifts = {("topk", 4): 0.0, ("stratified", 4): 0.10, ("stratified", 8): 0.105}
    df, per_query = _crafted(shifts, n_seeds=2, noise=0.05)
    points = point_table(df, "dev_mrr_at_10", per_query, ["sampler.name", "sampler.k"], n_resamples=200)
    assert list(points["point"]) == ["topk-4", "stratified-4", "stratified-8"] and (points["n_seeds"] == 2).all()
    tied = tied_points(points)
    assert list(tied["point"]) == ["stratified-8", "stratified-4"]
    assert (tied["ci_low"] < tied["mean"]).all() and (tied["mean"] < tied["ci_high"]).all()
    low = point_table(df, "dev_mrr_at_10", per_query, ["sampler.name", "sampler.k"], mode="min", n_resamples=200)
    assert list(tied_points(low)["point"]) == ["topk-4"]


def test_heatmap_colours_by_the_test_not_by_the_mean(tmp_path):
    from study.report.figures import cell_category, plot_heatmap

    shifts = {("topk", 4): 0.0, ("topk", 8): 0.004, ("stratified", 4): 0.007, ("stratified", 8): -0.2}
    df, per_query = _crafted(shifts)
    table = sensitivity_table(df, "sampler.name", "sampler.k", "dev_mrr_at_10", per_query, n_resamples=200)
    categories = {cell: cell_category(table, *cell) for cell in shifts}
    assert categories[table.best] == "best" and categories[("stratified", 8)] == "worse"
    assert sorted(categories.values()).count("tied") == 2   # 0.007 apart: the same colour, not two ends of a scale
    assert plot_heatmap(table, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def replicated(tmp_path_factory) -> Store:
    return make_replicated_store(tmp_path_factory.mktemp("replicated"), tmp_path_factory.getbasetemp())


def test_replicated_study_reads_points_replicates_and_baseline(replicated):
    from study.report import load_study_runs

    runs = load_study_runs(REPLICATED, replicated.uri)
    assert runs.baseline == {"sampler.name": "topk"}
    trials = runs.trials.set_index("trial_id")
    assert trials.loc["p-topk8-s1", "point"] == "p-topk8" and trials.loc["p-topk8-s1", "replicate"] == 1


def test_replicated_report_pools_seeds_per_point_and_lists_the_tied_set(replicated, tmp_path):
    report = build_report(REPLICATED, replicated.uri)
    best_mean = (replicated.dev["p-strat8-s0"] + replicated.dev["p-strat8-s1"]) / 2
    assert report.best["point"] == "p-strat8" and report.best["dev_mrr_at_10"] == pytest.approx(best_mean)
    table = report.tables["sampler_k_kl"]
    assert (table.n_seeds.loc["stratified", 8], table.count.loc["topk", 4]) == (2, 2)
    assert table.worse.loc["topk", 4] and table.tied.loc["topk", 8]
    assert table.vs_baseline.loc["stratified", 8] in ("better", "") and table.vs_baseline.loc["topk", 4] == "baseline"
    assert list(report.points.loc[report.points["tied_with_best"], "point"]) == ["p-strat8", "p-topk8"]
    text = report_study(REPLICATED, replicated.uri, tmp_path, log_to_parent=False).read_text()
    assert "## Configurations tied with the best" in text and "2 of 3 configurations" in text
    assert "30 queries × 2 seed(s)" in text and "Holm" in text and " ± " in text
    assert "(`study.baseline`: sampler.name=topk)" in text
    assert (tmp_path / "points.csv").exists()


def test_one_seed_study_reads_as_one_point_per_trial(trials):
    assert (trials["point"] == trials["trial_id"]).all() and (trials["replicate"] == 0).all()


def test_study_baseline_round_trips_through_the_parent_runs_param():
    from study.track.tracking import _param_value   # how the parent run logs a dict-valued `study.*` field

    baseline = {"loss.name": "kl", "sampler.name": "topk", "sampler.k": 8}
    assert study_baseline({"study.baseline": _param_value(baseline)}) == baseline
    assert study_baseline({"study.baseline": "None"}) == {} and study_baseline({}) == {}
