"""Findings: a paper's claim, kd-study's numbers for it and a verdict computed from a study's declared contrasts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from study.report import ReportError
from study.report.contrasts import declared_contrasts
from study.report.figures import plot_findings
from study.report.findings import (INCONCLUSIVE, NOT_MEASURED, NOT_REPRODUCED, REPRODUCED, Finding, controls_table,
                                   finding_pairs, findings_table, load_findings, pair_verdict, studies_named, verdict)
from test_contrasts import STRATIFIED_VS_RANDOM, STRATIFIED_VS_TOPK, crafted_study


@pytest.fixture(scope="module")
def contrasts():
    trials, per_query = crafted_study()
    table, _ = declared_contrasts(trials, per_query, "dev", [STRATIFIED_VS_RANDOM, STRATIFIED_VS_TOPK],
                                  params=["loss.name", "sampler.name"])
    return table


def finding(**fields) -> Finding:
    return Finding(**{"claim": "c", "paper": "p", "study": "s", "metric": "dev", "contrast": "stratified_vs_random",
                      **fields})


def test_each_pair_is_judged_against_the_papers_direction():
    assert pair_verdict("better", "better") == REPRODUCED
    assert pair_verdict("worse", "better") == "contradicted"
    assert pair_verdict("equivalent", "better") == "equivalent"
    assert pair_verdict("inconclusive", "better") == INCONCLUSIVE and pair_verdict("untested", "worse") == INCONCLUSIVE


def test_verdicts_follow_the_crafted_study(contrasts):
    """KL: stratified beats random on every query (reproduced), ties topk (inconclusive); MarginMSE: all tied."""
    of = lambda f: contrasts[(contrasts["contrast"] == f.contrast)  # noqa: E731
                             & contrasts["of_point"].map(lambda p: all(p[k] == v for k, v in f.where.items()))]
    kl_random = finding(where={"loss.name": "kl"})
    assert verdict(kl_random, of(kl_random)) == REPRODUCED
    assert verdict(finding(where={"loss.name": "kl"}, expect="worse"), of(kl_random)) == NOT_REPRODUCED
    kl_topk = finding(contrast="stratified_vs_topk", where={"loss.name": "kl"})
    assert verdict(kl_topk, of(kl_topk)) == INCONCLUSIVE
    both = finding()   # both losses: one pair reproduced, one inconclusive
    assert verdict(both, of(both)) == f"{INCONCLUSIVE} (1 of 2 pairs in the paper's direction, corrected)"


def test_the_table_cites_each_pairs_difference_and_the_corrected_ci_its_verdict_reads(contrasts):
    findings = [finding(claim="Stratified beats random (KL)", paper="stratified > random, DL19 nDCG@10",
                        where={"loss.name": "kl"}),
                finding(claim="Stratified beats top-K", contrast="stratified_vs_topk"),
                finding(claim="Not run", study="other")]
    text, frame = findings_table(findings, lambda study, metric: contrasts if study == "s" else None)
    assert text.splitlines()[0] == "| finding | paper | kd-study: Δ [corrected CI] | TOST vs margin | verdict |"
    assert frame["verdict"].tolist()[0] == REPRODUCED and frame["verdict"].tolist()[2] == NOT_MEASURED
    row = contrasts.set_index(["contrast", "at"]).loc[("stratified_vs_random", "loss.name=kl, sampler.k=8")]
    cited = frame.loc[0, "kd-study"]
    # every number the row cites is the contrasts table's own, and the CI is the family-corrected one (4 pairs)
    assert f"Δ {row['difference']:+.4f} [{row['ci_low_corrected']:+.4f}, {row['ci_high_corrected']:+.4f}]" in cited
    assert "(98.75% CI, 4 tests)" in cited and "loss.name=kl, sampler.k=8" in cited
    assert row["ci_low_corrected"] < row["ci_low"]
    assert frame.loc[1, "pairs"] == 2 and frame.loc[1, "kd-study"].count("Δ") == 2
    assert frame.loc[0, "TOST vs margin"] == "no margin declared"


def test_the_forest_plot_reads_each_pair_in_the_papers_direction(contrasts, tmp_path):
    kl = finding(claim="Stratified beats random (KL)", where={"loss.name": "kl"})
    pairs = finding_pairs([kl, kl.model_copy(update={"expect": "worse"}), finding(claim="Not run", study="other")],
                          lambda study, metric: contrasts if study == "s" else None)
    row = contrasts.set_index(["contrast", "at"]).loc[("stratified_vs_random", "loss.name=kl, sampler.k=8")]
    assert len(pairs) == 2 and pairs["verdict"].tolist() == [REPRODUCED, NOT_REPRODUCED]
    # the same pair, once as the paper expects it (better) and once flipped (worse): Δ and its CI change sign
    assert pairs.loc[0, ["toward", "low", "high"]].tolist() == pytest.approx(
        [row["difference"], row["ci_low_corrected"], row["ci_high_corrected"]])
    assert pairs.loc[1, ["toward", "low", "high"]].tolist() == pytest.approx(
        [-row["difference"], -row["ci_high_corrected"], -row["ci_low_corrected"]])
    path = plot_findings(pairs, tmp_path / "forest.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_uncorrected_ci_that_excludes_0_is_not_a_verdict():
    """The v2 bug: a 95% CI [+0.0005, +0.0120] printed beside "inconclusive". Here the verdict reads only the
    corrected CI, so a pair significant at 95% but not at 1 − α/m is inconclusive and prints a CI holding 0."""
    rows = pd.DataFrame([{"contrast": "c", "of": "a", "vs": "b", "at": "", "of_point": {}, "difference": 0.006,
                          "ci_low": 0.0005, "ci_high": 0.012, "ci_low_corrected": -0.0012,
                          "ci_high_corrected": 0.0132, "family_size": 5, "margin": np.nan, "tost_p": np.nan,
                          "equivalent": False, "decision": "inconclusive", "control_status": None}])
    text, frame = findings_table([finding(contrast="c")], lambda study, metric: rows)
    assert frame.loc[0, "verdict"] == INCONCLUSIVE
    assert "[-0.0012, +0.0132] (99.00% CI, 5 tests)" in frame.loc[0, "kd-study"] and "+0.0005" not in text


def test_equivalence_within_the_margin_is_not_reproduced_and_failed_controls_cannot_decide():
    trials, per_query = crafted_study()
    specs = [{**STRATIFIED_VS_RANDOM, "margin": 0.05}, {**STRATIFIED_VS_TOPK, "margin": 0.05}]
    table, _ = declared_contrasts(trials, per_query, "dev", specs, params=["loss.name", "sampler.name"])
    margin_mse = finding(where={"loss.name": "margin_mse"})   # every sampler the same up to noise
    text, frame = findings_table([margin_mse], lambda study, metric: table)
    assert frame.loc[0, "verdict"] == NOT_REPRODUCED
    assert "equivalent within ±0.0500" in frame.loc[0, "TOST vs margin"]
    # an A/A control that comes out significant (here: a pair with a true 0.10 shift) makes the study unable to decide
    aa = {"name": "aa", "of": {"sampler.name": "stratified"}, "vs": {"sampler.name": "random"},
          "within": ["loss.name", "sampler.k"], "control": "aa"}
    with_control, _ = declared_contrasts(trials, per_query, "dev", [*specs, aa], params=["loss.name", "sampler.name"])
    assert set(with_control.loc[with_control["control"] == "aa", "family"]) == {"control: aa"}
    _, frame = findings_table([margin_mse], lambda study, metric: with_control)
    assert frame.loc[0, "verdict"].startswith("unable to decide")
    controls, unable = controls_table({"s": ["dev"]}, lambda study, metric: with_control)
    assert "A/A (must not be significant)" in controls and "| fail |" in controls and "| pass |" in controls
    assert len(unable) == 1 and "unable to decide" in unable[0]


def test_controls_are_listed_on_every_reported_metric_after_the_ones_the_findings_read():
    # a positive control that fails on an out-of-domain metric no finding reads must still reach the findings' controls
    findings = [finding(study="a", metric="test"), finding(study="a", metric="dev"), finding(study="b", metric="dev")]
    assert studies_named(findings, ["dev", "test", "dl19"]) == {"a": ["test", "dev", "dl19"], "b": ["dev", "test", "dl19"]}
    assert studies_named(findings) == {"a": ["test", "dev"], "b": ["dev"]}


def test_a_findings_file_is_validated_at_the_edge(tmp_path):
    good = tmp_path / "findings.yaml"
    good.write_text(yaml.safe_dump({"findings": [{"claim": "x", "paper": "y", "study": "s", "metric": "dev",
                                                  "contrast": "c", "expect": "worse"}]}))
    assert load_findings(good)[0].expect == "worse"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"findings": [{"claim": "x", "paper": "y", "study": "s", "metric": "dev",
                                                 "contrast": "c", "expect": "higher"}]}))
    with pytest.raises(ReportError, match=r"bad.yaml: findings.0.expect: "):
        load_findings(bad)
    with pytest.raises(ReportError, match=r"missing.yaml: cannot read the findings"):
        load_findings(tmp_path / "missing.yaml")


# ---- the shipped files agree with each other ------------------------------------------------------------
@pytest.mark.parametrize("document, trials", [("results_v2.yaml", [18, 12]), ("results_v3.yaml", [42, 36])])
def test_every_shipped_finding_reads_a_contrast_its_studys_space_declares(document, trials):
    from pathlib import Path

    from study.space.contrasts import contrast_name
    from study.report.document import DocumentSpec
    from study.space.schema import load_space

    repo = Path(__file__).resolve().parent.parent
    spec = DocumentSpec.from_yaml(repo / "docs" / document)
    spaces = {name: load_space(repo / "search_spaces" / f"{name}.yaml") for name in spec.studies}
    for finding in load_findings(repo / spec.findings):
        space = spaces[finding.study]
        assert finding.contrast in [contrast_name(c.model_dump()) for c in space.study.contrasts], finding.claim
        assert finding.metric in space.final_metric_keys(), finding.claim
        assert set(finding.where) <= set(space.param_names), finding.claim
    assert [s.num_trials for s in spaces.values()] == trials


def test_the_v3_studies_declare_margins_controls_and_the_no_distillation_reference_before_they_run():
    """Issue 26: each paper claim's contrast carries a margin (WKL: ≤ half the paper's +0.016 MRR@10), every study a
    positive and an A/A control and the `labels` point, ≥ 6 seeds, full corpus, no in-batch term in the compared arms."""
    from pathlib import Path

    from study.report.document import DocumentSpec
    from study.space.contrasts import pair_points
    from study.space.schema import load_space

    repo = Path(__file__).resolve().parent.parent
    spec = DocumentSpec.from_yaml(repo / "docs" / "results_v3.yaml")
    spaces = {name: load_space(repo / "search_spaces" / f"{name}.yaml") for name in spec.studies}
    claims = {(f.study, f.contrast) for f in load_findings(repo / spec.findings) if f.contrast != "distilled_vs_labels"}
    assert {study for study, _ in claims} == set(spaces)
    for name, space in spaces.items():
        contrasts = {c.name: c for c in space.study.contrasts}
        assert {c.control for c in contrasts.values()} >= {"positive", "aa"}, name
        assert space.study.replicates >= 6 and space.base.eval.subset_distractors is None, name
        points = space.grid_points()
        configs = [space.trial_config(p) for p in points]
        assert sum(c.loss.name == "labels" for c in configs) == 1, name
        full = [{p.name: point.get(p.name, space.static_value(p.name)) for p in space.params} for point in points]
        for study, contrast in claims:
            if study != name:
                continue
            spec_ = contrasts[contrast]
            assert spec_.margin is not None and spec_.control is None, contrast
            pairs, problems = pair_points(full, spec_.model_dump())
            assert pairs and not problems, contrast
            for i, j in pairs:
                assert configs[i].loss.in_batch_weight == 0 and configs[j].loss.in_batch_weight == 0, contrast
                assert configs[i].seed == configs[j].seed, contrast   # paired seeds: the same 0..5 in both arms
    assert spaces["scifact_wkl_v3"].study.contrasts[0].margin <= 0.016 / 2
