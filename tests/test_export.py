"""Best-config export: a full TrialConfig YAML that `kd-study train` re-runs, logged on the parent run."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_report import STUDY, Store, make_study_store

import pandas as pd

from study.report.export import export_best, selection_line
from study.report import ReportError
from trainables.config import TrialConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return make_study_store(tmp_path_factory.mktemp("store"), tmp_path_factory.getbasetemp())


def test_export_writes_the_best_trials_full_config(store, tmp_path):
    path = export_best(STUDY, store.uri, out_path=tmp_path / "nested" / "best.yaml")
    best = max((t for t in store.dev if t != "t8"), key=store.dev.get)  # t8 scored highest but was killed
    assert best == "t0"
    exported = TrialConfig.from_yaml(path)
    assert exported == store.configs[best]
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"study: {STUDY}" in line for line in header)
    assert any(store.run_ids[best] in line for line in header)
    assert any(f"dev_mrr_at_10 = {store.dev[best]:.6g}" in line for line in header)
    assert any(line.startswith("# exported: 20") for line in header)
    assert "# selected on: the final student (dev_mrr_at_10 at the end of training)" in header


def test_export_says_when_the_best_curve_point_was_selected():
    trial = pd.Series({"dev_mrr_at_10_best": 0.6, "best_step": 22, "step": 88})
    line = selection_line("dev_mrr_at_10_best", trial)
    assert "best point of the learning curve (dev_mrr_at_10_best at step 22 of 88)" in line
    assert "at step" not in selection_line("dev_mrr_at_10_best", pd.Series({"best_step": float("nan")}))


def test_export_min_mode_and_other_metric(store, tmp_path):
    path = export_best(STUDY, store.uri, metric="beir_ndcg_at_10_avg", out_path=tmp_path / "b.yaml", mode="min")
    lowest = min((t for t in store.dev if t != "t8"), key=lambda t: 0.6 - store.dev[t] / 4)
    assert TrialConfig.from_yaml(path) == store.configs[lowest]


def test_export_logs_best_config_on_the_parent_run(store, tmp_path):
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    path = export_best(STUDY, store.uri, "dev_mrr_at_10", tmp_path / "whatever-name.yaml")
    names = [f.path for f in MlflowClient(store.uri).list_artifacts(store.parent_id)]
    assert "best_config.yaml" in names
    local = download_artifacts(run_id=store.parent_id, artifact_path="best_config.yaml",
                               dst_path=str(tmp_path / "dl"), tracking_uri=store.uri)
    assert Path(local).read_text() == path.read_text()
    assert yaml.safe_load(Path(local).read_text())["loss"]["gamma1"] == 5.0


def test_unknown_metric_and_study_are_one_line_errors(store, tmp_path):
    with pytest.raises(ReportError, match=r"unknown metric 'dev_map'.*available metrics: .*beir_ndcg_at_10_avg"
                       ) as error:
        export_best(STUDY, store.uri, metric="dev_map", out_path=tmp_path / "x.yaml")
    assert "\n" not in str(error.value) and not (tmp_path / "x.yaml").exists()
    with pytest.raises(ReportError, match=r"no study named 'missing'") as error:
        export_best("missing", store.uri, out_path=tmp_path / "x.yaml")
    assert "\n" not in str(error.value)
    with pytest.raises(ReportError, match="mode must be 'max' or 'min'"):
        export_best(STUDY, store.uri, out_path=tmp_path / "x.yaml", mode="best")


def test_export_tied_writes_every_configuration_tied_with_the_best(tmp_path, tmp_path_factory):
    import pandas as pd
    from test_report import REPLICATED, make_replicated_store

    from study.report.export import export_tied

    replicated = make_replicated_store(tmp_path_factory.mktemp("replicated"), tmp_path_factory.getbasetemp())
    table_path = export_tied(REPLICATED, replicated.uri, tmp_path / "tied")
    table = pd.read_csv(table_path)
    assert list(table["point"]) == ["p-strat8", "p-topk8"] and list(table["best"]) == [True, False]
    assert (table["ci_low"] < table["mean"]).all() and (table["mean"] < table["ci_high"]).all()
    assert table["p_adjusted_vs_best"].iloc[1] >= 0.05 and (table["n_seeds"] == 2).all()
    best = tmp_path / "tied" / table["file"].iloc[0]
    assert TrialConfig.from_yaml(best) == replicated.configs["p-strat8-s0"]
    header = [line for line in best.read_text().splitlines() if line.startswith("#")]
    assert any("95% CI [" in line and "mean over 2 seed run(s)" in line for line in header)
    # mode honoured: lowest first; p-topk4 is lower than everything else on every query.
    low = pd.read_csv(export_tied(REPLICATED, replicated.uri, tmp_path / "low", mode="min"))
    assert list(low["point"]) == ["p-topk4"]


def test_cli_export_tied_and_report_correction(tmp_path, tmp_path_factory, capsys):
    from test_report import REPLICATED, make_replicated_store

    from study.cli.verbs import main

    replicated = make_replicated_store(tmp_path_factory.mktemp("replicated-cli"), tmp_path_factory.getbasetemp())
    args = ["--tracking-uri", replicated.uri, "--root", str(tmp_path / "studies")]
    assert main([*args, "export", REPLICATED, "-o", str(tmp_path / "best.yaml"), "--tied", str(tmp_path / "tied"),
                 "--correction", "bh"]) == 0
    assert "tied set:" in capsys.readouterr().out and (tmp_path / "tied" / "tied.csv").exists()
    assert TrialConfig.from_yaml(tmp_path / "best.yaml") == replicated.configs["p-strat8-s0"]   # the best point
    assert main([*args, "report", REPLICATED, "-o", str(tmp_path / "report"), "--correction", "bh"]) == 0
    assert "Benjamini–Hochberg correction" in (tmp_path / "report" / "report.md").read_text()
# ---- the best trial's model -------------------------------------------------------------------------
# A long text is cut at the passage max length, and harder at the query max length.
TEXTS = ["what is a bi-encoder", "Aspirin reduces the risk of heart attack.",
         "A randomized trial of low-dose aspirin for primary prevention of cardiovascular events in adults " * 3, "x"]


def saved_student(folder: Path, cache_dir: Path, pooling: str, similarity: str) -> Path:
    """A tiny student as a final checkpoint saves it, its weights moved off the seeded initialisation (as if trained)."""
    import torch

    from trainables.config import StudentConfig
    from trainables.models.student import BiEncoder

    student = BiEncoder.from_config(StudentConfig(model="tiny:bert", num_layers=None, pooling=pooling,
                                                  similarity=similarity, query_max_length=8, passage_max_length=24),
                                    cache_dir)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for param in student.parameters():
            param.add_(0.05 * torch.randn_like(param))
    student.save(folder)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kd-cache")


@pytest.mark.slow
@pytest.mark.parametrize("pooling,similarity", [("cls", "dot"), ("mean", "cosine")])
def test_exported_model_encodes_as_kd_study_does(pooling, similarity, cache_dir, tmp_path):
    """SentenceTransformer(DIR) gives kd-study's query and passage embeddings; AutoModel and AutoTokenizer load DIR."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from trainables.models.st_export import write_sentence_transformer
    from trainables.models.student import BiEncoder

    student_dir = saved_student(tmp_path / "student", cache_dir, pooling, similarity)
    folder = write_sentence_transformer(student_dir, tmp_path / "model", {"study": "s", "dev_mrr_at_10": "0.5"})
    ours = BiEncoder.load(student_dir)

    model = SentenceTransformer(str(folder), device="cpu")
    assert model.similarity_fn_name == similarity
    assert model.max_seq_length == ours.passage_max_length
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"] + (["Normalize"] if similarity == "cosine"
                                                                              else [])
    np.testing.assert_allclose(model.encode(TEXTS), ours.encode(TEXTS, is_query=False), atol=1e-5, rtol=0)
    model.max_seq_length = ours.query_max_length   # as the folder's README says for queries
    np.testing.assert_allclose(model.encode(TEXTS), ours.encode(TEXTS, is_query=True), atol=1e-5, rtol=0)
    assert not np.allclose(ours.encode(TEXTS[2:3], is_query=True), ours.encode(TEXTS[2:3], is_query=False))

    # Plain transformers: the same weights and tokenizer; pooling as the README table says.
    encoder, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(TEXTS[:2], padding=True, truncation=True, max_length=ours.passage_max_length,
                      return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    if similarity == "cosine":
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    np.testing.assert_allclose(pooled.numpy(), ours.encode(TEXTS[:2], is_query=False), atol=1e-5, rtol=0)
    assert f"| pooling | {pooling} |" in (folder / "README.md").read_text()
    assert BiEncoder.load(folder).settings() == ours.settings()     # still a kd-study student too


def test_model_folder_is_never_written_over_other_files(tmp_path):
    from trainables.models.st_export import check_model_folder

    check_model_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_model_folder(tmp_path / "empty")
    (tmp_path / "mine" / "notes.txt").parent.mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an exported model"):
        check_model_folder(tmp_path / "mine")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        check_model_folder(tmp_path / "file")


def test_a_best_trial_without_a_student_is_a_one_line_error(store, tmp_path):
    from study.report.export import export_best_model

    with pytest.raises(ReportError, match=r"student of best trial run .* is in neither a checkpoint .* --log-models"
                       ) as error:
        export_best_model(STUDY, store.uri, tmp_path / "model")
    assert "\n" not in str(error.value) and not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def model_store(tmp_path_factory, cache_dir) -> Store:
    """The synthetic study, its best trial (t0) with a logged student (as `--log-models` logs it)."""
    from mlflow.tracking import MlflowClient

    store = make_study_store(tmp_path_factory.mktemp("model-store"), tmp_path_factory.getbasetemp())
    student = saved_student(tmp_path_factory.mktemp("t0") / "student", cache_dir, "cls", "dot")
    MlflowClient(store.uri).log_artifacts(store.run_ids["t0"], str(student), artifact_path="student")
    return store


@pytest.mark.slow
def test_export_model_and_register_it_from_the_command_line(model_store, cache_dir, tmp_path, capsys):
    """`kd-study export NAME --model DIR --register M`: the best trial's logged student, a registry version."""
    import numpy as np
    from mlflow.tracking import MlflowClient
    from sentence_transformers import SentenceTransformer

    from study.cli.verbs import main
    from trainables.models.student import BiEncoder

    client = MlflowClient(model_store.uri)
    trial_run = client.get_run(model_store.run_ids["t0"])
    argv = ["--tracking-uri", model_store.uri, "--root", str(tmp_path / "studies"), "export", STUDY,
            "-o", str(tmp_path / "best.yaml"), "--model", str(tmp_path / "model"), "--register", "kd-student"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"best model:  {tmp_path / 'model'}" in out and "registered:  models:/kd-student/1" in out

    expected = saved_student(tmp_path / "expected", cache_dir, "cls", "dot")   # what t0 logged
    model = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS), BiEncoder.load(expected).encode(TEXTS, is_query=False),
                               atol=1e-5, rtol=0)

    [version] = client.search_model_versions("name = 'kd-student'")
    assert version.run_id == trial_run.info.run_id                  # the registry links to the trial's run
    assert float(version.tags["dev_mrr_at_10"]) == pytest.approx(model_store.dev["t0"], rel=1e-5)
    assert version.tags["kd_study.trial_id"] == "t0" and version.tags["kd_study.name"] == STUDY
    assert "dev_mrr_at_10" in version.description and STUDY in version.description
    again = client.get_run(trial_run.info.run_id).info                 # the trial run is left as it was
    assert (again.status, again.end_time) == (trial_run.info.status, trial_run.info.end_time)

    import mlflow.sentence_transformers

    mlflow.set_tracking_uri(model_store.uri)
    try:
        loaded = mlflow.sentence_transformers.load_model("models:/kd-student/1")
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(loaded.encode(TEXTS), model.encode(TEXTS), atol=1e-5, rtol=0)

    # A second export registers a second version (the folder, an earlier export, is replaced).
    assert main(argv) == 0
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'kd-student'")) == [1, 2]


def test_export_model_prefers_the_trials_own_checkpoint(model_store, cache_dir, tmp_path):
    """A trial's final checkpoint on this machine (CHECKPOINT_TAG) is read in place of its logged copy."""
    from mlflow.tracking import MlflowClient

    from study.report.export import export_best_model

    checkpoint = tmp_path / "final"
    saved_student(checkpoint / "student", cache_dir, "mean", "cosine")
    client = MlflowClient(model_store.uri)
    run_id = model_store.run_ids["t0"]
    client.set_tag(run_id, "kd_study.checkpoint", str(checkpoint))
    try:
        exported = export_best_model(STUDY, model_store.uri, tmp_path / "model")
    finally:
        client.delete_tag(run_id, "kd_study.checkpoint")
    assert (exported.trial_id, exported.run_id, exported.metric) == ("t0", run_id, "dev_mrr_at_10")
    assert (tmp_path / "model" / "2_Normalize").is_dir()          # the checkpoint's mean/cosine student, not t0's logged CLS one
    assert '"similarity_fn_name": "cosine"' in (tmp_path / "model" / "config_sentence_transformers.json").read_text()
