"""Studies end to end: `kd-study run` / `resume` with the real runner, real trials and MLflow.

The slow tests (Ray, 2 Train workers per trial) run each study as its own `kd-study` process, as a
user runs it, with its own local Ray. Data: ../shared/data/scifact_ci (1,000 docs, 50 queries), a
tiny random BERT as teacher and student, so a trial costs mostly Ray's start-up. The fast tests
check the two pieces resume relies on, without Ray: the searcher's restore and the MLflow callback.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from study.space.schema import load_space
from trainables.config import TrialConfig

FINAL_METRICS = ("dev_mrr_at_10", "beir_ndcg_at_10_avg", "beir/scifact_ci/ndcg_at_10")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for the module: the shared asset cache is built by the first study, reused by the next."""
    return tmp_path_factory.mktemp("kd-study")


def write_space(workdir: Path, sample_data: Path, name: str, study: dict, search: dict | None = None) -> Path:
    data = {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}
    space = {
        "base": {
            "name": "tiny",
            "data": {"train": data, "pool_depth": 16, "max_train_queries": 16},
            "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 48},
            "student": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 48},
            "sampler": {"name": "stratified", "k": 4},
            "loss": {"beta_refresh_steps": 2, "beta_pool_depth": 8},
            "optim": {"lr": 1.0e-3, "batch_size": 8, "epochs": 2, "log_every_steps": 1},
            # One learning-curve point mid-way (step 2 of 4) besides the final evaluation.
            "eval": {"dev": data, "beir": [{**data, "name": "scifact_ci"}], "batch_size": 128,
                     "at_fractions": [0.5, 1.0]},
            "resources": {"num_workers": 2, "cpus_per_worker": 1},
            "cache_dir": str(workdir / "cache"),
        },
        "search": search or {},
        "study": {"name": name, "max_concurrent_trials": 1, "seed": 0, **study},
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def cli(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", "--tracking-uri", f"sqlite:///{workdir / 'mlruns.db'}",
            "--root", str(workdir / "studies"), "--num-cpus", "2", *args]


def env() -> dict[str, str]:
    # KD_PROGRESS_INTERVAL_S=0: a progress line per trial report on these pipes (tests/test_progress.py)
    return {**os.environ, "KD_PROGRESS_INTERVAL_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray_kds_", dir="/tmp")}


def run_cli(workdir: Path, *args: str, timeout: float = 800) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run(cli(workdir, *args), cwd=workdir, env=env(), capture_output=True, text=True,
                            timeout=timeout)
    print(f"kd-study {' '.join(args[:2])}: {time.perf_counter() - started:.0f} s, exit {result.returncode}")
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:])
    return result


def study_runs(workdir: Path, name: str):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlruns.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`kd_study.name` = '{name}'")
    parents = [r for r in runs if r.data.tags.get("kd_study.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("kd_study.kind") == "trial"]
    return client, parents, trials


@pytest.mark.slow
def test_study_logs_one_parent_and_a_nested_run_per_trial(workdir, sample_data):
    search = {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
              "loss.gamma1": {"type": "float", "low": 0.0, "high": 4.0, "when": {"loss.name": "wkl"}},
              "sampler.name": {"type": "categorical", "choices": ["topk", "random", "stratified"]}}
    points = [{"loss.name": "kl", "sampler.name": "topk"},
              {"loss.name": "wkl", "loss.gamma1": 2.0, "sampler.name": "stratified"}]
    space = write_space(workdir, sample_data, "tiny-tpe", {"algorithm": "tpe", "num_samples": 2,
                                                           "points_to_evaluate": points}, search)
    result = run_cli(workdir, "run", str(space), "--log-models")
    assert result.returncode == 0, result.stderr[-2000:]
    # A console a person reads: kd-study's lines only; Ray's, Train's, Tune's and the libraries' in logs/
    console = (result.stdout + result.stderr).splitlines()
    progress = [line for line in console if re.match(r"kd-study: trial \S+ step \d+/4 \(\d+%\), loss ", line)]
    assert len({line.split()[2] for line in progress}) == 2     # a pipe gets each running trial's progress
    loops = [line for line in console if re.match(r"kd-study: [^:]+ [\d,]+/[\d,]+ (\(\d+%\), \S+ \w+/s|done in)", line)]
    console = [line for line in console if line not in progress and line not in loops]
    assert len(console) <= 20 + 3 * 2, "\n".join(console)
    assert not [line for line in console if "pid=" in line or "Ray Train Controller" in line
                or "Loading faiss" in line or "Configuration for experiment" in line]
    study_logs = workdir / "studies" / "tiny-tpe" / "logs"
    assert "kd-study: logs: studies/tiny-tpe/logs/" in result.stdout       # relative to the working folder
    driver, workers = (study_logs / "driver.log").read_text(), (study_logs / "workers.log").read_text()
    assert "Started a local Ray instance" in driver and "A new study created" in driver   # Ray's and Optuna's
    assert "(RayTrainWorker pid=" in workers and "(TrainController pid=" in workers

    client, parents, trials = study_runs(workdir, "tiny-tpe")
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kd_study.kind"] == "study" and parent.data.tags["kd_study.git_sha"]
    assert parent.data.params["search.loss.gamma1"]          # the space file is on the parent
    assert {"space.yaml", "space.resolved.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # The reference points of the learning curves, computed once for the study, on the parent run.
    for role in ("untrained", "teacher"):
        assert 0.0 <= parent.data.metrics[f"reference/{role}/dev_mrr_at_10"] <= 1.0
    report_files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/learning_curves.png", "report/learning_curves.csv"} <= report_files

    seen = []
    for run in trials:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["loss"] == params["loss.name"] and tags["sampler"] == params["sampler.name"]
        assert tags["k"] == params["sampler.k"] == "4"
        seen.append((params["loss.name"], params["sampler.name"], params.get("loss.gamma1")))   # KL has no γ1
        for key in FINAL_METRICS:
            assert 0.0 <= metrics[key] <= 1.0, key
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2  # every report, with its step
        # The learning curve: the dev set at the configured point (step 2) and at the end (step 4);
        # the other sets only at the end.
        curve = client.get_metric_history(run.info.run_id, "dev_mrr_at_10")
        assert sorted(m.step for m in curve) == [2, 4]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "beir_ndcg_at_10_avg")] == [4]
        assert metrics["dev_mrr_at_10_best"] == max(m.value for m in curve)
        assert metrics["best_step"] == min(m.step for m in curve if m.value == metrics["dev_mrr_at_10_best"])
        assert {"optim.lr", "data.pool_depth", "eval.top_k", "resources.num_workers"} <= set(params)

        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"trial_config.yaml", "per_query.json", "student", "runs"} <= artifacts      # --log-models; TREC runs
        folder = Path(client.download_artifacts(run.info.run_id, "", str(workdir / "dl" / run.info.run_id)))
        cfg = TrialConfig.from_yaml(folder / "trial_config.yaml")
        assert cfg.loss.name == params["loss.name"] and getattr(cfg.loss, "gamma1", None) == (
            float(params["loss.gamma1"]) if "loss.gamma1" in params else None)   # the loss block's own fields
        per_query = json.loads((folder / "per_query.json").read_text())
        assert len(per_query["dev_mrr_at_10"]) == 50
        inputs = {(i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"])
                  for i in client.get_run(run.info.run_id).inputs.dataset_inputs}       # the Dataset column
        training_set = parent.data.tags["kd_study.asset.training_set"]   # the shared assets' content key
        assert {(name, context) for name, _, context in inputs} == {
            ("scifact_ci", "training"), ("dev:scifact_ci", "evaluation"), ("beir:scifact_ci", "evaluation")}
        assert ("scifact_ci", training_set, "training") in inputs
    assert sorted(seen) == [("kl", "topk", None), ("wkl", "stratified", "2.0")]   # the seeded points
    assert len({r.data.tags["kd_study.trial_id"] for r in trials}) == 2

    study_dir = workdir / "studies" / "tiny-tpe"
    for name in ("space.yaml", "space.resolved.yaml", "study.json", "assets.json", "optuna.db"):
        assert (study_dir / name).is_file(), name
    import optuna

    study = optuna.load_study(study_name="tiny-tpe", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_train_reruns_the_exported_best_config(workdir):
    """`kd-study train best.yaml` outside Tune: the study's best trial config, re-run as is."""
    best = workdir / "studies" / "tiny-tpe" / "best.yaml"
    if not best.is_file():
        pytest.skip("needs the study of test_study_logs_one_parent_and_a_nested_run_per_trial")
    result = run_cli(workdir, "train", str(best), "--name", "best-again", "--output-dir", str(workdir / "runs"),
                     "--model", str(workdir / "best-again-model"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Dev MRR@10" in result.stdout and "BEIR nDCG@10 (avg)" in result.stdout
    assert "training queries, cache hit)" in result.stderr      # the study's shared assets, reused
    assert (workdir / "runs" / "best-again" / "trial_config.yaml").is_file()
    student = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("student:"))
    assert_same_encoder(workdir / "best-again-model", Path(student))


@pytest.mark.slow
def test_export_writes_the_best_trials_model(workdir):
    """`kd-study export NAME --model DIR`: the best trial's own checkpoint student, as sentence-transformers loads it."""
    if not (workdir / "studies" / "tiny-tpe" / "best.yaml").is_file():
        pytest.skip("needs the study of test_study_logs_one_parent_and_a_nested_run_per_trial")
    result = run_cli(workdir, "export", "tiny-tpe", "--model", str(workdir / "tiny-tpe-model"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trial_id = result.stdout.split("(trial ")[1].split(";")[0]
    _, _, trials = study_runs(workdir, "tiny-tpe")
    [best] = [r for r in trials if r.data.tags["kd_study.trial_id"] == trial_id]
    assert_same_encoder(workdir / "tiny-tpe-model", Path(best.data.tags["kd_study.checkpoint"]) / "student")


def assert_same_encoder(folder: Path, student_dir: Path) -> None:
    """SentenceTransformer(folder) embeds passages as kd-study's saved student in `student_dir` does."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from trainables.models.student import BiEncoder

    texts = ["aspirin and heart attacks", "Cats sleep most of the day. " * 20]
    ours = BiEncoder.load(student_dir).encode(texts, is_query=False)
    np.testing.assert_allclose(SentenceTransformer(str(folder), device="cpu").encode(texts), ours, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_resume_after_killed_driver_keeps_finished_trials(workdir, sample_data):
    name = "tiny-grid"
    space = write_space(workdir, sample_data, name, {"algorithm": "grid"}, {
        "loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
        "loss.gamma1": {"type": "categorical", "choices": [1.0, 3.0], "when": {"loss.name": "wkl"}},
    })
    log = open(workdir / f"{name}.run.log", "w")
    driver = subprocess.Popen(cli(workdir, "run", str(space), "--quiet", "--no-report"), cwd=workdir, env=env(),
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        first = None
        state = workdir / "studies" / name / "study.json"
        while time.monotonic() < deadline and driver.poll() is None:
            # Touch the store only once the driver made it (two processes creating one sqlite store race).
            if not (state.is_file() and "parent_run_id" in state.read_text()):
                time.sleep(2)
                continue
            _, _, trials = study_runs(workdir, name)
            finished = [r for r in trials if r.info.status == "FINISHED"]
            if finished:
                first = finished[0]
                break
            time.sleep(2)
        assert first is not None, (workdir / f"{name}.run.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
        log.close()

    study_dir = workdir / "studies" / name
    first_log = study_dir / "trials" / first.data.tags["kd_study.trial_id"] / "train_log.jsonl"
    log_before = first_log.read_text()

    result = run_cli(workdir, "resume", name, "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr[-2000:]

    client, parents, trials = study_runs(workdir, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert len(finished) == 3                                                     # exactly num_samples
    ids = [r.data.tags["kd_study.trial_id"] for r in finished]
    assert len(set(ids)) == 3                                                     # no duplicated runs
    points = sorted((r.data.params["loss.name"], r.data.params.get("loss.gamma1", "-")) for r in finished)
    assert points == [("kl", "-"), ("wkl", "1.0"), ("wkl", "3.0")]               # the grid, each point once (KL: no γ1)
    for run in finished:
        assert all(key in run.data.metrics for key in FINAL_METRICS)
    # The trial that had finished was neither re-trained nor re-logged.
    again = client.get_run(first.info.run_id)
    assert again.info.status == "FINISHED" and again.info.end_time == first.info.end_time
    assert first_log.read_text() == log_before
    # Any run left open by the killed driver was closed; trials that resumed re-used theirs.
    assert all(r.info.status in ("FINISHED", "KILLED") for r in trials)
    assert len(trials) - len(finished) <= 1

    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    complete = sorted((t.params["loss.name"], t.params.get("loss.gamma1", 0.0))
                      for t in study.trials if t.state.name == "COMPLETE")
    assert complete == [("kl", 0.0), ("wkl", 1.0), ("wkl", 3.0)]
    assert json.loads((study_dir / "study.json").read_text())["status"] == "finished"


# ---- fast: the pieces resume relies on ---------------------------------------------------------------
def grid_space(tmp_path: Path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
        "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
                   "loss.gamma1": {"type": "categorical", "choices": [1.0, 3.0], "when": {"loss.name": "wkl"}}},
        "study": {"name": "g", "algorithm": "grid"}}))
    return load_space(path)


def test_searcher_restore_requeues_a_point_asked_after_the_snapshot(tmp_path):
    """Tune snapshots every second or so: a trial asked after the last snapshot is unknown on resume."""
    from study.compat import searcher_study
    from study.run.search import build_search
    from study.track.tracking import FINAL_METRIC_MARKER

    space = grid_space(tmp_path)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    limiter = build_search(space, url, max_concurrent=3)
    pristine = pickle.dumps(limiter)                               # as pickled into Tune's tuner.pkl
    search = limiter.searcher
    first = search.suggest("t1")
    search.on_trial_complete("t1", {"dev_mrr_at_10": 0.3, FINAL_METRIC_MARKER: 0.1})
    search.suggest("t2")
    search.save(str(tmp_path / "snapshot.pkl"))                  # Tune's snapshot
    orphan = search.suggest("t3")                                 # asked, then the driver is killed

    restored = pickle.loads(pristine).searcher                     # Tuner.restore unpickles, then restores
    restored.restore(str(tmp_path / "snapshot.pkl"))
    assert restored.suggest("t4") == orphan                       # the lost point runs again
    restored.on_trial_complete("t2", {"dev_mrr_at_10": 0.4, FINAL_METRIC_MARKER: 0.1})
    restored.on_trial_complete("t4", {"dev_mrr_at_10": 0.5, FINAL_METRIC_MARKER: 0.1})
    states = [(t.params, t.state.name) for t in searcher_study(restored).trials]
    complete = [p for p, state in states if state == "COMPLETE"]
    assert first in complete and orphan in complete
    assert sorted(map(str, complete)) == sorted(map(str, space.grid_points()))   # the grid, once each
    assert [state for _, state in states].count("FAIL") == 1      # the orphan's lost attempt


def test_searcher_tolerates_results_without_the_metric_and_marks_pruned(tmp_path):
    from study.compat import searcher_study
    from study.run.search import build_search

    space = grid_space(tmp_path)
    search = build_search(space, f"sqlite:///{tmp_path / 'o.db'}", max_concurrent=2).searcher
    search.suggest("a")
    search.on_trial_result("a", {"step": 1, "train/loss": 1.0})                 # no metric yet
    search.on_trial_result("a", {"step": 2, "dev_mrr_at_10": 0.2})              # an intermediate evaluation
    search.on_trial_complete("a", {"step": 2, "dev_mrr_at_10": 0.2})            # stopped: no final report
    trial = searcher_study(search).trials[0]
    assert trial.state.name == "PRUNED" and trial.intermediate_values == {2: 0.2}


def test_a_retried_errored_trial_records_its_result(tmp_path):
    """`kd-study resume` retries errored trials (resume_errored): the success reaches Optuna."""
    from study.compat import searcher_study
    from study.run.search import build_search
    from study.track.tracking import FINAL_METRIC_MARKER

    limiter = build_search(grid_space(tmp_path), f"sqlite:///{tmp_path / 'o.db'}", max_concurrent=1)
    params = limiter.suggest("a")
    limiter.on_trial_complete("a", None, error=True)                             # the first attempt crashed
    assert limiter.suggest("b") is not None                                      # its slot is free again
    limiter.on_trial_complete("a", {"dev_mrr_at_10": 0.7, FINAL_METRIC_MARKER: 0.1})  # the retry finished
    trials = [t for t in searcher_study(limiter.searcher).trials if t.state.name != "WAITING"]   # grid points left
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "COMPLETE"]
    assert trials[2].params == params and trials[2].value == 0.7 and trials[2].user_attrs["retry_of"] == 0


class FakeTrial:
    def __init__(self, trial_id: str, config: dict, last_result: dict | None = None):
        self.trial_id, self.config, self.last_result = trial_id, config, last_result or {}

    def __str__(self) -> str:
        return self.trial_id


def test_study_experiments_open_on_the_runs_table_in_mlflow_ui(tmp_path):
    from mlflow.tracking import MlflowClient

    from study.track import tracking

    mlflow_client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    older = mlflow_client.create_experiment("older")                     # made before the tag existed
    chosen = mlflow_client.create_experiment("chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    new = tracking.experiment_id_for(mlflow_client, "new")
    assert tracking.experiment_id_for(mlflow_client, "older") == older
    assert tracking.experiment_id_for(mlflow_client, "chosen") == chosen
    kinds = {e: mlflow_client.get_experiment(e).tags.get(tracking.EXPERIMENT_KIND_TAG) for e in (new, older, chosen)}
    assert kinds == {new: "custom_model_development", older: "custom_model_development", chosen: "genai_development"}


def test_callback_reuses_runs_across_driver_restarts(tmp_path):
    import mlflow

    from study.track import tracking
    from study.track.trial_runs import NestedTrialRunsCallback

    space = grid_space(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    experiment_id, parent = tracking.start_parent_run(uri, "g", "g", space_params={}, tags={}, artifacts=[])
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "per_query.json").write_text(json.dumps({"dev_mrr_at_10": {"q1": 1.0}}))
    final = {"step": 4, "dev_mrr_at_10": 0.5, "beir_ndcg_at_10_avg": 0.4, tracking.FINAL_METRIC_MARKER: 0.1,
             "checkpoint_path": str(checkpoint)}

    def callback():
        cb = NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name="g",
                                     space=space)
        cb.setup()
        return cb

    done = FakeTrial("done", {"loss.name": "kl"}, final)
    running = FakeTrial("running", {"loss.name": "wkl", "loss.gamma1": 3.0})
    first = callback()
    for trial in (done, running):
        first.log_trial_start(trial)
        first.log_trial_result(1, trial, {"step": 1, "train/loss": 1.0})
    first.log_trial_result(2, done, final)
    first.log_trial_end(done)
    # the driver dies here; a resumed driver has a fresh callback (Tune pickles it without state)
    second = callback()
    for trial in (done, running):       # Tune replays the finished trial and resumes the running one
        second.log_trial_start(trial)
        second.log_trial_result(2, trial, {**final, "dev_mrr_at_10": 0.9})
    running.last_result = final
    second.log_trial_end(done)
    second.log_trial_end(running)

    runs = mlflow.tracking.MlflowClient(uri).search_runs([experiment_id], "tags.`kd_study.kind` = 'trial'")
    by_id = {r.data.tags["kd_study.trial_id"]: r for r in runs}
    assert len(runs) == 2 and set(by_id) == {"done", "running"}                    # no duplicates
    assert by_id["done"].data.metrics["dev_mrr_at_10"] == 0.5                       # replay left it alone
    assert by_id["running"].data.metrics["dev_mrr_at_10"] == 0.9
    assert by_id["running"].data.params["loss.gamma1"] == "3.0"
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent for r in runs)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient(uri).list_artifacts(by_id["running"].info.run_id)}
    assert artifacts == {"trial_config.yaml", "per_query.json"}


def test_a_tune_trial_actor_imports_neither_transformers_nor_faiss():
    """What `distil_trial` imports in each Tune trial actor; the asset builders cost ~9 s of imports per trial."""
    code = ("import sys, study.run.runner, study.run.trainable\n"
            "from trainables.train.trial import run_trial\n"
            "from trainables.data.training_set import Assets\n"
            "print(sorted(m for m in ('transformers', 'faiss', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"


def test_the_cli_imports_the_runner_before_ray_optuna_or_torch():
    """`kd-study run` imports study.run.runner and still fails in seconds on a bad input."""
    code = ("import sys, study.run.runner\n"
            "print(sorted(m for m in ('ray', 'optuna', 'torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"


def test_a_study_started_before_the_runner_was_split_still_unpickles():
    """Tune pickled these classes as `study.run.runner.<name>` into the tune/ folder of older studies."""
    import study.run.search
    import study.run.trainable
    import study.run.tuner

    moved = {"StudySearch": study.run.search, "StudyLimiter": study.run.search, "TrialLines": study.run.tuner,
             "trial_dirname": study.run.tuner, "distil_trial": study.run.trainable}
    for name, home in moved.items():
        assert pickle.loads(f"cstudy.runner\n{name}\n.".encode()) is getattr(home, name)


@pytest.mark.slow
def test_a_diverging_trial_fails_everywhere_and_is_never_best(workdir, sample_data, monkeypatch):
    """A trial whose loss turns NaN (TrainHooks: at step 3, WKL trials only) stops with the cause, FAILED in
    Ray, MLflow and Optuna; the other trial finishes and is the study's best and exported config.

    The hooks are an object the test hands to the runner (`StudyOptions.hooks`), so the study runs from a
    script of the test's rather than from the `kd-study` command (which has no way to inject faults)."""
    import math

    from trainables.outputs import STAGING_DIR

    name = "tiny-nan"
    space = write_space(workdir, sample_data, name, {"algorithm": "grid"},
                        {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}})
    script = textwrap.dedent(f"""
        from study.run.runner import StudyOptions, run_study
        from study.space.schema import load_space
        from trainables.train.hooks import TrainHooks

        hooks = TrainHooks(nan_loss_at_step=3, only={{"loss.name": "wkl"}})   # WKL trials: NaN loss at step 3
        opts = StudyOptions(root={str(workdir / "studies")!r}, tracking_uri={f"sqlite:///{workdir / 'mlruns.db'}"!r},
                            num_cpus=2, verbose=0, hooks=hooks)
        outcome = run_study(load_space({str(space)!r}), opts)
        print(f"{{len(outcome.errored)}} of {{len(outcome.errored) + len(outcome.finished)}} trials failed")
        print(*(cause for _, cause in outcome.errored), sep="\\n")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env(), capture_output=True, text=True,
                            timeout=800)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 of 2 trials failed" in result.stdout and "diverged at step 3: loss is nan" in result.stdout

    client, parents, trials = study_runs(workdir, name)
    by_loss = {r.data.params["loss.name"]: r for r in trials}
    assert len(trials) == 2 and set(by_loss) == {"kl", "wkl"}
    diverged, good = by_loss["wkl"], by_loss["kl"]
    assert diverged.info.status == "FAILED" and diverged.data.tags["kd_study.state"] == "failed"
    assert "diverged at step 3: loss is nan" in diverged.data.tags["kd_study.error"]
    history = client.get_metric_history(diverged.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2] and all(math.isfinite(m.value) for m in history)
    assert "train/loss_final" not in diverged.data.metrics
    assert good.info.status == "FINISHED" and all(key in good.data.metrics for key in FINAL_METRICS)

    import optuna

    study_dir = workdir / "studies" / name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    assert sorted((t.params["loss.name"], t.state.name) for t in study.trials) == [("kl", "COMPLETE"),
                                                                                   ("wkl", "FAIL")]
    best = (study_dir / "best.yaml").read_text()
    assert f"# trial: {good.data.tags['kd_study.trial_id']} " in best and "over 1 finished trials" in best
    assert TrialConfig.from_yaml(study_dir / "best.yaml").loss.name == "kl"
    # Checkpoints were staged inside each trial's own folder, and nothing is left there.
    staged = {loss: study_dir / "trials" / run.data.tags["kd_study.trial_id"] / STAGING_DIR
              for loss, run in by_loss.items()}
    assert staged["kl"].is_dir() and not any(staged["kl"].iterdir())
    assert not staged["wkl"].exists() or not any(staged["wkl"].iterdir())


@pytest.mark.slow
def test_sigterm_stops_a_study_like_ctrl_c(workdir, sample_data):
    """What a cluster scheduler sends: the study stops as after Ctrl-C (state kept, runs closed), exit 143."""
    name = "tiny-sigterm"
    space = write_space(workdir, sample_data, name, {"algorithm": "random", "num_samples": 2},
                        {"sampler.name": {"type": "categorical", "choices": ["topk", "random"]}})
    raw = yaml.safe_load(space.read_text())
    raw["base"]["optim"]["epochs"] = 200           # the trial is still training when the signal comes
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    log_path = workdir / f"{name}.run.log"
    log = open(log_path, "w")   # a file, not a pipe: Ray's worker logs would fill a pipe and block the driver
    driver = subprocess.Popen(cli(workdir, "run", str(space), "--quiet", "--no-report"), cwd=workdir, env=env(),
                              stdout=subprocess.DEVNULL, stderr=log)
    state = workdir / "studies" / name / "study.json"
    try:
        deadline = time.monotonic() + 300
        running = None
        while time.monotonic() < deadline and driver.poll() is None and running is None:
            time.sleep(2)
            if state.is_file() and "parent_run_id" in state.read_text():
                trials = list((workdir / "studies" / name / "trials").glob("*/train_log.jsonl"))
                running = trials[0] if trials else None                  # a trial has reported a step
        assert running is not None, log_path.read_text()[-3000:]
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
        log.close()
    stderr = log_path.read_text()

    assert driver.returncode == 143, stderr[-3000:]
    assert "C++" not in stderr and "SIGTERM received at" not in stderr            # no stack dump
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"kd-study: error: study {name} stopped by SIGTERM with 0 of 2 trials done;")
    assert f"continue it with `kd-study resume {name} --root {workdir / 'studies'}" in last
    assert json.loads(state.read_text())["status"] == "interrupted"
    _, parents, trials = study_runs(workdir, name)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert trials and all(t.info.status == "KILLED" for t in trials)        # none left RUNNING
    assert all(t.data.tags.get("kd_study.state") == "interrupted" for t in trials)


def test_an_interrupted_study_is_closed_and_its_lines_show_no_password(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) before `fit` ends, on run and resume: state "interrupted", runs KILLED, URIs redacted."""
    import contextlib

    import study.run.ray_session
    import study.run.runner as runner
    import study.run.tuner
    from study.track import tracking

    class Interrupted:
        def fit(self):
            raise KeyboardInterrupt

    ended = []
    monkeypatch.setattr(tracking, "check_tracking", lambda uri, **kwargs: None)
    monkeypatch.setattr(tracking, "reopen_run", lambda uri, run_id: ended.append(("reopened", run_id)))
    monkeypatch.setattr(tracking, "end_open_trial_runs", lambda uri, parent: ended.append(("trials", parent)))
    monkeypatch.setattr(tracking, "end_run", lambda uri, run_id, status: ended.append((status, run_id)))
    monkeypatch.setattr(study.run.ray_session, "RaySession", lambda address, num_cpus: contextlib.nullcontext(None))
    monkeypatch.setattr(runner, "max_concurrent_trials", lambda *args, **kwargs: 1)
    monkeypatch.setattr(runner, "check_study_storage", lambda *args, **kwargs: None)   # no Ray: nothing to check
    monkeypatch.setattr(runner, "prepare_study_assets",
                        lambda space, paths, say, data=None: {"keys": {}, "stats": {}, "training_set_path": "unused"})
    monkeypatch.setattr(runner, "_start_parent_run", lambda *args, **kwargs: ("0", "parent-1"))
    monkeypatch.setattr(study.run.tuner, "new_tuner", lambda ctx, max_concurrent: Interrupted())
    monkeypatch.setattr(study.run.tuner, "can_restore", lambda ctx: True)
    monkeypatch.setattr(study.run.tuner, "restore_tuner", lambda ctx: Interrupted())
    said: list[str] = []
    uri = "http://user:secret@127.0.0.1:5000"
    opts = runner.StudyOptions(root=str(tmp_path / "studies"), tracking_uri=uri, say=said.append)

    outcome = runner.run_study(grid_space(tmp_path), opts)
    assert outcome.interrupted
    assert ended == [("trials", "parent-1"), ("KILLED", "parent-1")]
    state_file = tmp_path / "studies" / "g" / "study.json"
    state = json.loads(state_file.read_text())
    assert state["status"] == "interrupted" and state["tracking_uri"] == uri        # resume needs the real one
    assert oct(state_file.stat().st_mode & 0o777) == oct(0o600)

    ended.clear()
    outcome = runner.resume_study("g", runner.StudyOptions(root=str(tmp_path / "studies"), say=said.append))
    assert outcome.interrupted
    assert ended == [("reopened", "parent-1"), ("trials", "parent-1"), ("trials", "parent-1"), ("KILLED", "parent-1")]
    assert json.loads(state_file.read_text())["status"] == "interrupted"
    shown = [line for line in said if "MLflow" in line]   # the start-up and resume lines
    assert len(shown) == 2 and all("http://user:***@127.0.0.1:5000" in line for line in shown), said
    assert not any("secret" in line for line in said)
