"""`kd-study report --document`: a results document over several studies, from a real MLflow store."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from study.report.document import write_document
from study.report.document_parts import budget_checkpoints, search_progress, time_split
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


def test_a_document_of_named_points_tabulates_each_point_not_two_param_tables(document, monkeypatch):
    root, store = document
    monkeypatch.chdir(root)
    spec = {"title": "Points", "output": "points/results.md", "studies": [STUDY], "metrics": ["dev_mrr_at_10"],
            "study_tables": "points"}
    (root / "points.yaml").write_text(yaml.safe_dump(spec))
    text = write_document("points.yaml", store.uri).read_text()
    section = text[text.index("### Points: Dev MRR@10"):]
    assert "| point | seeds | mean | 95% CI |" in section and "by γ1 × α" not in text and "by sampler × K" not in text
    rows = [line for line in section.splitlines() if line.startswith("| loss.")]
    assert len(rows) >= 2 and sum("**" in row for row in rows) == 1   # every point once, the best in bold
    assert "importances" not in text                                   # no fANOVA over named points


def test_document_spec_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("title: x\nstudies: []\noutput: o.md\n")
    with pytest.raises(ReportError, match=r"bad.yaml: studies: .*at least 1"):
        write_document("bad.yaml", "sqlite:///nowhere.db")
    (tmp_path / "broken.yaml").write_text("title: [x\n")
    with pytest.raises(ReportError, match="broken.yaml: cannot read the document spec"):
        write_document("broken.yaml", "sqlite:///nowhere.db")


def test_document_holds_declared_contrasts_findings_power_and_confirmations(tmp_path_factory, monkeypatch):
    """A study whose parent run declares a contrast, a findings file over it, a confirmation and a bench glob."""
    from study.paths import StudyPaths
    from study.track.tracking import _param_value, client

    root = tmp_path_factory.mktemp("evidence")
    store = make_study_store(root / "store", tmp_path_factory.getbasetemp())
    contrast = {"name": "stratified_vs_topk", "of": {"sampler.name": "stratified"}, "vs": {"sampler.name": "topk"},
                "within": ["loss.name", "sampler.k"]}
    client(store.uri).log_param(store.parent_id, "study.contrasts", _param_value([contrast]))
    finding = {"claim": "Stratified beats top-K", "paper": "stratified > top-K (DL19 nDCG@10)", "study": STUDY,
               "contrast": "stratified_vs_topk", "expect": "better"}
    (root / "findings.yaml").write_text(yaml.safe_dump({"findings": [
        {**finding, "metric": "dev_mrr_at_10"}, {**finding, "metric": "dev_ndcg_at_10"},   # the 2nd: not tabulated
        {**finding, "metric": "dev_mrr_at_10", "contrast": "never_declared"}]}, allow_unicode=True))
    (root / "bench").mkdir()
    for name in ("train.md", "eval.md"):
        (root / "bench" / name).write_text(f"table of {name}\n")
    studies = root / "studies"
    confirm = StudyPaths.of(STUDY, studies).dir / "confirm"
    confirm.mkdir(parents=True)
    (confirm / "wkl-sweep-confirm.md").write_text("# Confirmation of wkl-sweep (wkl-sweep-confirm)\n\n| a |\n")
    pd.DataFrame({"point": ["a", "b", "c"], "sweep_mean": [0.5, 0.4, 0.3], "confirm_mean": [0.6, 0.55, 0.58],
                  "tied_with_best": [True, False, True]}).to_csv(confirm / "wkl-sweep-confirm.csv", index=False)
    spec = {"title": "Evidence", "output": "out/results.md", "studies": [STUDY, KL_ONLY],
            "metrics": ["dev_mrr_at_10"], "performance": ["bench/*.md"], "findings": "findings.yaml",
            "confirmations": [STUDY, KL_ONLY]}
    (root / "results.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(root)
    text = write_document("results.yaml", store.uri, root=str(studies)).read_text()

    # the declared contrast (stratified K=4 vs topk K=4, KL: t6 vs t5) in the study's section
    assert "### Declared contrasts: Dev MRR@10" in text and "| declared | stratified_vs_topk |" in text
    findings = text[text.index("## Findings"):text.index("## Power")]
    assert "| finding | paper | kd-study: Δ [corrected CI] | TOST vs margin | verdict |" in findings
    assert "### Controls" in findings and "No study declares a control" in findings
    assert "(results/findings_forest.png)" in findings and (root / "out" / "results" / "findings_forest.png").exists()
    lines = [line for line in findings.splitlines() if line.startswith("| Stratified beats top-K")]
    assert len(lines) == 3 and "Dev MRR@10: loss.name=kl, sampler.k=4: Δ +" in lines[0]
    assert "Dev nDCG@10: loss.name=kl, sampler.k=4: Δ +" in lines[1]
    assert lines[0].endswith("| reproduced |") and lines[2].endswith("| not measured |")
    # t6 is 0.03 above t5 on every query (± 0.02 noise): significant, as the study's own table says
    assert "| reproduced |" in lines[1]
    power = text[text.index("## Power"):]
    assert f"| {STUDY} | Dev MRR@10 | declared contrasts |" in power and f"| {KL_ONLY} | Dev MRR@10 |" in power
    confirmation = text[text.index("## Confirmation"):]
    assert "### Confirmation of wkl-sweep (wkl-sweep-confirm)" in confirmation
    assert f"| {STUDY} | wkl-sweep-confirm | 3 | 0.33 |" in confirmation   # τ of (a, b, c): one discordant pair
    assert f"_No confirmation of `{KL_ONLY}` yet" in confirmation
    assert "### `bench/eval.md`" in text and "table of train.md" in text


def test_a_finding_on_a_study_the_document_does_not_hold_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"findings": [
        {"claim": "x", "paper": "y", "study": "elsewhere", "metric": "m", "contrast": "c"}]}))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"title": "t", "output": "o.md", "studies": ["s"],
                                                     "findings": "f.yaml"}))
    with pytest.raises(ReportError, match=r"f.yaml: findings.0.study: 'elsewhere' is not one of the document's"):
        write_document("r.yaml", "sqlite:///nowhere.db")
