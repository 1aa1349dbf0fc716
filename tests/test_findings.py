"""Findings: a paper's claim, kd-study's numbers for it and a verdict computed from a study's declared contrasts."""
from __future__ import annotations

import pytest
import yaml

from study.report import ReportError
from study.report.contrasts import declared_contrasts
from study.report.findings import (INCONCLUSIVE, NOT_MEASURED, NOT_REPRODUCED, REPRODUCED, Finding, findings_table,
                                   load_findings, pair_verdict, verdict)
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
    assert pair_verdict("n.s.", "better") == INCONCLUSIVE and pair_verdict("untested", "worse") == INCONCLUSIVE


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


def test_the_table_cites_each_pairs_difference_ci_and_corrected_p(contrasts):
    findings = [finding(claim="Stratified beats random (KL)", paper="stratified > random, DL19 nDCG@10",
                        where={"loss.name": "kl"}),
                finding(claim="Stratified beats top-K", contrast="stratified_vs_topk"),
                finding(claim="Not run", study="other")]
    text, frame = findings_table(findings, lambda study, metric: contrasts if study == "s" else None)
    assert text.splitlines()[0] == "| finding | paper | kd-study | verdict |"
    assert frame["verdict"].tolist()[0] == REPRODUCED and frame["verdict"].tolist()[2] == NOT_MEASURED
    row = contrasts.set_index(["contrast", "at"]).loc[("stratified_vs_random", "loss.name=kl, sampler.k=8")]
    cited = frame.loc[0, "kd-study"]
    # every number the row cites is the contrasts table's own
    assert f"Δ {row['difference']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" in cited
    assert f"corrected p {row['p_adjusted']:.3g}" in cited and "loss.name=kl, sampler.k=8" in cited
    assert frame.loc[1, "pairs"] == 2 and frame.loc[1, "kd-study"].count("Δ") == 2


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
def test_every_shipped_finding_reads_a_contrast_its_studys_space_declares():
    from pathlib import Path

    from study.space.contrasts import contrast_name
    from study.report.document import DocumentSpec
    from study.space.schema import load_space

    repo = Path(__file__).resolve().parent.parent
    spec = DocumentSpec.from_yaml(repo / "docs" / "results.yaml")
    spaces = {name: load_space(repo / "search_spaces" / f"{name}.yaml") for name in spec.studies}
    for finding in load_findings(repo / spec.findings):
        space = spaces[finding.study]
        assert finding.contrast in [contrast_name(c.model_dump()) for c in space.study.contrasts], finding.claim
        assert finding.metric in space.final_metric_keys(), finding.claim
        assert set(finding.where) <= set(space.param_names), finding.claim
    assert [s.num_trials for s in spaces.values()] == [18, 12]
