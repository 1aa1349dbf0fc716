"""`kd-study report --document`: a results document over several studies, from a real MLflow store."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from study.document import budget_checkpoints, search_progress, time_split, write_document
from study.report import ReportError
from test_report import KL_ONLY, STUDY, make_study_store


def test_search_progress_is_the_running_best_in_start_order():
    df = pd.DataFrame({"trial_id": list("abcde"), "start_time": [5, 1, 2, 3, 4], "m": [0.9, 0.2, 0.5, 0.4, 0.6]})
    progress = search_progress(df, "m")
    assert progress["value"].tolist() == [0.2, 0.5, 0.4, 0.6, 0.9]
    assert progress["best_so_far"].tolist() == [0.2, 0.5, 0.5, 0.6, 0.9]
    marks = budget_checkpoints(progress, budget=6)
    assert marks[:2] == [(2, 0.5), (4, 0.6)] and marks[2][0] == 6 and math.isnan(marks[2][1])
    assert search_progress(df, "m", mode="min")["best_so_far"].tolist() == [0.2, 0.2, 0.2, 0.2, 0.2]


def test_time_split_reports_the_overhead_share_of_the_wall_time():
    # The third trial was resumed after a 20-minute interruption: medians keep it from moving the split.
    df = pd.DataFrame({"time/train_s": [60.0, 80.0, 70.0], "time/eval_s": [20.0, 20.0, 20.0],
                       "time/overhead_s": [20.0, 0.0, 1210.0], "time/trial_wall_s": [100.0, 100.0, 1300.0]})
    split = time_split(df)
    assert math.isnan(split["worker setup"])  # not logged: shown as missing, not as 0
    assert (split["train"], split["eval"], split["overhead"], split["wall"]) == (70.0, 20.0, 20.0, 100.0)
    assert split["overhead_share"] == pytest.approx(0.2)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc")
    store = make_study_store(root / "store", tmp_path_factory.getbasetemp())
    (root / "discussion.md").write_text("## Discussion\n\nStratified helps here.\n")
    (root / "bench.md").write_text("system | queries/s\n-|-\nours | 10\n")
    spec = {"title": "Results", "output": "out/results.md", "regenerate": ["kd-study run x.yaml"],
            "studies": [STUDY, KL_ONLY], "metrics": ["dev_mrr_at_10", "beir/scifact/ndcg_at_10"],
            "search_comparisons": [{"grid": STUDY, "search": KL_ONLY}],
            "performance": ["bench.md", "missing.md"], "reference": ["bench.md"], "discussion": "discussion.md"}
    (root / "results.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return root, store


def test_document_has_every_section_and_its_figures(document, monkeypatch):
    root, store = document
    monkeypatch.chdir(root)
    path = write_document("results.yaml", store.uri)
    text = path.read_text()
    assert path == root / "out" / "results.md"
    assert text.startswith("# Results\n") and "```bash\nkd-study run x.yaml\n```" in text
    assert "Stratified helps here." in text
    for heading in (f"## Study `{STUDY}`", f"## Study `{KL_ONLY}`", f"## Grid vs search: `{STUDY}` vs `{KL_ONLY}`",
                    "## Where the time goes", "## Performance (bench/)", "### `bench.md`", "## Reference points"):
        assert heading in text
    assert "ours | 10" in text and "_missing.md is missing: run the benchmark._" in text
    # Both metrics tabulated (γ1 × α for the WKL study, sampler × K per loss); heatmaps beside the document.
    assert "Dev MRR@10 by γ1 × α (WKL)" in text and "BEIR scifact nDCG@10 by γ1 × α (WKL)" in text
    figures = sorted(p.name for p in (root / "out" / "results").glob("*.png"))
    assert f"search_{STUDY}_vs_{KL_ONLY}.png" in figures and len(figures) >= 5
    for name in figures:
        assert f"(results/{name})" in text
    # The grid's best (8 finished trials) is reached by the grid itself; the 2-trial search is not.
    assert "not reached" in text


def test_document_spec_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("title: x\nstudies: []\noutput: o.md\n")
    with pytest.raises(ReportError, match=r"bad.yaml: studies: .*at least 1"):
        write_document("bad.yaml", "sqlite:///nowhere.db")
    (tmp_path / "broken.yaml").write_text("title: [x\n")
    with pytest.raises(ReportError, match="broken.yaml: cannot read the document spec"):
        write_document("broken.yaml", "sqlite:///nowhere.db")
