"""Trial runs' MLflow dataset inputs: the training set and each evaluation set, with content digests."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from study.track import tracking
from study.track.dataset_inputs import EVALUATION, TRAINING, dataset_records, ref_key
from study.space.schema import load_space
from study.track.trial_runs import NestedTrialRunsCallback
from trainables.preflight import preflight

ASSET_KEYS = {"data": "d" * 64, "pools": "p" * 16, "teacher": "t" * 16, "training_set": "0123456789abcdef"}


def write_space(tmp_path: Path, data: Path) -> Path:
    import yaml

    scifact = f"beir:{data / 'scifact_ci'}"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"train": {"id": scifact, "split": "train"}, "pool_depth": 10}, "sampler": {"k": 4},
                 "eval": {"dev": {"id": scifact, "split": "test"}, "beir": [{"id": scifact, "name": "scifact"}],
                          "dl": [{"id": f"beir:{data / 'dl19_sample'}", "name": "dl19"}]},
                 "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "runs")},
        "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}},
        "study": {"name": "d", "algorithm": "grid"}}))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, sample_data):
    """A space on the shipped samples, its records from the real preflight, a parent run in a sqlite store."""
    tmp = tmp_path_factory.mktemp("datasets")
    space = load_space(write_space(tmp, sample_data))
    checked = preflight(space.base)
    records = dataset_records(space.base, {ref_key(s.ref): s.fingerprint for s in checked.sets}, ASSET_KEYS,
                              {"n_train_queries": 189})
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    experiment_id, parent = tracking.start_parent_run(uri, "d", "d", space_params={}, tags={}, artifacts=[])
    return space, records, uri, experiment_id, parent, checked


class FakeTrial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.last_result = trial_id, config, {}


def trial_inputs(study, callback: NestedTrialRunsCallback, trial_id: str):
    from mlflow.tracking import MlflowClient

    callback.setup()
    callback.log_trial_start(FakeTrial(trial_id, {"loss.name": "kl"}))
    run = MlflowClient(study[2]).get_run(callback.run_id_of(trial_id))
    return run.inputs.dataset_inputs


def new_callback(study, **extra) -> NestedTrialRunsCallback:
    space, records, uri, experiment_id, parent, _ = study
    return NestedTrialRunsCallback(uri, experiment_id=experiment_id, parent_run_id=parent, study_name="d",
                                   space=space, **extra)


def test_a_trial_run_names_its_training_and_evaluation_sets_with_content_digests(study):
    checked = study[5]
    inputs = trial_inputs(study, new_callback(study, datasets=study[1]), "t1")
    seen = {(i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"])
            for i in inputs}
    fingerprint = {s.role: s.fingerprint for s in checked.sets}
    assert len(set(fingerprint.values())) == 3   # scifact train, scifact test (dev and BEIR), dl19
    assert seen == {
        ("scifact_ci", ASSET_KEYS["training_set"], TRAINING),          # the TrainingSet's content key
        ("dev:scifact_ci", fingerprint["eval.dev"][:16], EVALUATION),
        ("beir:scifact", fingerprint["eval.beir[0]"][:16], EVALUATION),   # the same files: the same digest
        ("dl:dl19", fingerprint["eval.dl[0]"][:16], EVALUATION),
    }
    assert fingerprint["eval.dev"] == fingerprint["eval.beir[0]"]
    training = next(i.dataset for i in inputs if i.dataset.name == "scifact_ci")
    assert '"split": "train"' in training.source and ASSET_KEYS["teacher"] in training.source
    assert '"training_queries": 189' in training.profile


def test_digests_follow_content_not_paths(study, sample_data, tmp_path):
    """A copy of the evaluation data elsewhere has the same digest; one changed judgment changes it."""
    copy = tmp_path / "data"
    shutil.copytree(sample_data, copy)
    qrels = copy / "dl19_sample" / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    qid, doc, grade = lines[0].split("\t") if "\t" in lines[0] else lines[0].split()
    space = load_space(write_space(tmp_path, copy))
    moved = {r["name"]: r["digest"] for r in dataset_records(
        space.base, {ref_key(s.ref): s.fingerprint for s in preflight(space.base).sets}, ASSET_KEYS, {})}
    assert moved == {r["name"]: r["digest"] for r in study[1]}
    qrels.write_text("\n".join([f"{qid}\t{doc}\t{3 - int(grade) or 1}", *lines[1:]]) + "\n")
    changed = {r["name"]: r["digest"] for r in dataset_records(
        space.base, {ref_key(s.ref): s.fingerprint for s in preflight(space.base).sets}, ASSET_KEYS, {})}
    assert changed["dl:dl19"] != moved["dl:dl19"] and changed["dev:scifact_ci"] == moved["dev:scifact_ci"]


def test_the_datasets_survive_the_tuner_pickle_and_older_pickles_still_log(study):
    """Tune pickles the callback into tune/ (resume restores it); a study pickled before has no datasets."""
    restored = pickle.loads(pickle.dumps(new_callback(study, datasets=study[1])))
    assert len(trial_inputs(study, restored, "t2")) == 4
    older = new_callback(study)
    del older.datasets
    older = pickle.loads(pickle.dumps(older))
    assert trial_inputs(study, older, "t3") == []


def test_a_subset_evaluation_names_and_digests_the_trials_own_sub_corpus(study, sample_data):
    """With eval.subset_distractors a trial evaluates on a seeded sub-corpus: its digest is that subset's."""
    from study.track.dataset_inputs import trial_records
    from trainables.data import load_data, subset

    space, records = study[0], study[1]
    cfg = space.base.with_overrides({"eval.subset_distractors": 50, "seed": 3})
    chosen = {r["name"]: r for r in trial_records(records, cfg)}
    assert set(chosen) == {"scifact_ci", "dev:scifact_ci_subset50", "beir:scifact_subset50", "dl:dl19_subset50"}
    evaluated = subset(load_data(cfg.eval.dev), 50, 3)          # what the trial's evaluation reads
    assert chosen["dev:scifact_ci_subset50"]["digest"] == evaluated.fingerprint[:16]
    other_seed = {r["name"]: r["digest"] for r in trial_records(records, cfg.with_overrides({"seed": 4}))}
    assert other_seed["dev:scifact_ci_subset50"] != chosen["dev:scifact_ci_subset50"]["digest"]
    assert other_seed["scifact_ci"] == chosen["scifact_ci"]["digest"]     # the training set does not follow it
