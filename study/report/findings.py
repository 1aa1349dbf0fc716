"""Findings: a paper's claim beside what a study measured, and a verdict computed from the study's numbers.

A findings file (YAML) declares, before the numbers are read, which declared contrast of which
study carries each claim of a paper, and in which direction the paper found it:

    findings:
      - claim: Stratified sampling beats random sampling (in domain, KL)
        paper: "stratified > random, TREC DL19 nDCG@10, KL and MarginMSE, K ∈ {4, 8, 16}"
        study: scifact_sampling_v2
        metric: dev_mrr_at_10
        contrast: stratified_vs_random     # a `study.contrasts` name of that study's space
        where: {loss.name: kl}             # optional: only the pairs whose points hold these values
        expect: better                     # the `of` point better (or worse) than its `vs` point

Each selected pair (a row of `study.report.contrasts`) is `reproduced` when its corrected test
finds the paper's direction, `contradicted` when it finds the opposite one, else `inconclusive`
(its CI includes 0: corrected p ≥ α). A finding is reproduced when every pair is, not
reproduced when any pair contradicts it, and inconclusive otherwise; `not measured` when no
pair matches (the study, metric or contrast did not run).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from study.contrasts import matches
from study.report.runs import read_yaml_model
from study.report.text import is_missing, markdown_table, metric_label

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "not reproduced", "inconclusive", "not measured"


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    claim: str = Field(min_length=1)
    paper: str = Field(min_length=1, description="the paper's number or direction, in its words")
    study: str
    metric: str
    contrast: str = Field(description="a name from the study's `study.contrasts`")
    where: dict[str, Any] = Field(default_factory=dict)
    expect: Literal["better", "worse"] = "better"


class FindingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    findings: list[Finding] = Field(min_length=1)


def load_findings(path: str | Path) -> list[Finding]:
    """The findings of a YAML file; a bad file is a one-line ReportError naming the file and key."""
    return read_yaml_model(path, FindingsFile, "the findings").findings


def pair_verdict(result: str, expect: str) -> str:
    """One pair: `reproduced` (its result is the paper's direction), `contradicted` (the opposite), else inconclusive."""
    if result == expect:
        return REPRODUCED
    if result in ("better", "worse"):
        return "contradicted"
    return INCONCLUSIVE


def finding_rows(finding: Finding, contrasts: pd.DataFrame | None) -> pd.DataFrame:
    """The pairs of `contrasts` (a `declared_contrasts` table of the finding's study and metric) the finding reads."""
    if contrasts is None or contrasts.empty:
        return pd.DataFrame()
    chosen = contrasts[(contrasts["contrast"] == finding.contrast)
                       & contrasts["of_point"].map(lambda point: matches(point, finding.where))]
    return chosen.reset_index(drop=True)


def verdict(finding: Finding, rows: pd.DataFrame) -> str:
    """The finding's verdict over its pairs, with the count when it rests on more than one."""
    if rows.empty:
        return NOT_MEASURED
    verdicts = [pair_verdict(r, finding.expect) for r in rows["result"]]
    n, reproduced = len(verdicts), verdicts.count(REPRODUCED)
    if reproduced == n:
        word = REPRODUCED
    elif "contradicted" in verdicts:
        word = NOT_REPRODUCED
    else:
        word = INCONCLUSIVE
    return word if n == 1 else f"{word} ({reproduced} of {n} pairs in the paper's direction, corrected)"


def measured(finding: Finding, rows: pd.DataFrame, digits: int = 4) -> str:
    """kd-study's numbers for the finding: each pair's difference, 95% CI and corrected p."""
    if rows.empty:
        return f"{finding.study}: no pair of `{finding.contrast}` on {metric_label(finding.metric)}"
    label_of = rows["of"].nunique() > 1
    parts = []
    for r in rows.itertuples():
        label = "; ".join(x for x in ((r.of if label_of else ""), r.at) if x)
        ci = ("" if is_missing(r.ci_low) else f" [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]")
        p = "untested" if is_missing(r.p_adjusted) else f"corrected p {r.p_adjusted:.3g}"
        parts.append(f"{label + ': ' if label else ''}Δ {r.difference:+.{digits}f}{ci}, {p}")
    return f"{finding.study}, {metric_label(finding.metric)}: " + "; ".join(parts)


def findings_table(findings: list[Finding],
                   contrasts_of: Callable[[str, str], pd.DataFrame | None]) -> tuple[str, pd.DataFrame]:
    """(Markdown table finding | paper | kd-study | verdict, one row per finding as a frame).

    `contrasts_of(study, metric)` gives the study's declared-contrasts table on that metric.
    """
    records = []
    for finding in findings:
        rows = finding_rows(finding, contrasts_of(finding.study, finding.metric))
        records.append({"finding": finding.claim, "paper": finding.paper, "kd-study": measured(finding, rows),
                        "verdict": verdict(finding, rows), "study": finding.study, "metric": finding.metric,
                        "contrast": finding.contrast, "pairs": len(rows)})
    frame = pd.DataFrame.from_records(records)
    text = markdown_table(["finding", "paper", "kd-study", "verdict"],
                          [[_cell(r["finding"]), _cell(r["paper"]), _cell(r["kd-study"]), r["verdict"]]
                           for r in records])
    return text, frame


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_legend(significance: float) -> str:
    return (f"kd-study: each pair of the declared contrast the finding names (`at` = the values it holds), "
            f"Δ = of − vs with its 95% CI and the corrected p of the study's contrasts table. Verdict: reproduced = "
            f"every pair significant (corrected p < {significance:g}) in the paper's direction; not reproduced = a "
            "pair significant in the opposite direction; inconclusive = otherwise (a CI that includes 0); not "
            "measured = no such pair in the store.")


def studies_named(findings: list[Finding]) -> Mapping[str, list[str]]:
    """Study → the metrics its findings read (in file order)."""
    out: dict[str, list[str]] = {}
    for finding in findings:
        out.setdefault(finding.study, [])
        if finding.metric not in out[finding.study]:
            out[finding.study].append(finding.metric)
    return out
