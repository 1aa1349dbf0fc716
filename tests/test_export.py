"""Best-config export: a full TrialConfig YAML that `kd-study train` re-runs, logged on the parent run."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_report import STUDY, Store, make_study_store

import pandas as pd

from study.export import export_best, selection_line
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
