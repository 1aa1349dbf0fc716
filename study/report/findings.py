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

Each selected pair (a row of `study.report.contrasts`) is judged on its `decision`, read from the
family-corrected CI (1 − α/m) and the TOST against the contrast's declared `margin` at α/m — the
same CI the table prints: `reproduced` when the corrected CI excludes 0 on the paper's side,
`contradicted` when it excludes 0 on the other side, `equivalent` when TOST shows |Δ| < margin,
else `inconclusive`. A finding is *reproduced* when every pair is, *not reproduced* when any pair
contradicts it or is equivalent within the margin (the paper's effect is not there), and
*inconclusive* otherwise; *not measured* when no pair matches (the study, metric or contrast did
not run). A study whose declared controls fail (`controls_verdict`) is *unable to decide*: its
findings say so instead of a verdict.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from study.space.contrasts import matches
from study.report.contrasts import UNABLE_TO_DECIDE, controls_verdict, tost_text
from study.report.runs import read_yaml_model
from study.report.sensitivity import SIGNIFICANCE
from study.report.text import is_missing, markdown_table, metric_label

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "not reproduced", "inconclusive", "not measured"
CONTRADICTED, EQUIVALENT = "contradicted", "equivalent"


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


def pair_verdict(decision: str, expect: str) -> str:
    """One pair from its decision: reproduced (the paper's direction), contradicted (the opposite),
    equivalent (within the margin), else inconclusive."""
    if decision == expect:
        return REPRODUCED
    if decision in ("better", "worse"):
        return CONTRADICTED
    if decision == EQUIVALENT:
        return EQUIVALENT
    return INCONCLUSIVE


def finding_rows(finding: Finding, contrasts: pd.DataFrame | None) -> pd.DataFrame:
    """The pairs of `contrasts` (a `declared_contrasts` table of the finding's study and metric) the finding reads."""
    if contrasts is None or contrasts.empty:
        return pd.DataFrame()
    chosen = contrasts[(contrasts["contrast"] == finding.contrast)
                       & contrasts["of_point"].map(lambda point: matches(point, finding.where))]
    return chosen.reset_index(drop=True)


def verdict(finding: Finding, rows: pd.DataFrame, able: bool = True) -> str:
    """The finding's verdict over its pairs, with the count when it rests on more than one."""
    if rows.empty:
        return NOT_MEASURED
    if not able:
        return f"{UNABLE_TO_DECIDE} (the study's controls failed)"
    verdicts = [pair_verdict(d, finding.expect) for d in rows["decision"]]
    n, reproduced = len(verdicts), verdicts.count(REPRODUCED)
    if reproduced == n:
        word = REPRODUCED
    elif CONTRADICTED in verdicts or EQUIVALENT in verdicts:
        word = NOT_REPRODUCED
    else:
        word = INCONCLUSIVE
    return word if n == 1 else f"{word} ({reproduced} of {n} pairs in the paper's direction, corrected)"


def _labels(rows: pd.DataFrame) -> list[str]:
    label_of = rows["of"].nunique() > 1
    return ["; ".join(x for x in ((r.of if label_of else ""), r.at) if x) for r in rows.itertuples()]


def measured(finding: Finding, rows: pd.DataFrame, digits: int = 4) -> str:
    """kd-study's numbers for the finding: each pair's difference and its corrected CI (the one the verdict reads)."""
    if rows.empty:
        return f"{finding.study}: no pair of `{finding.contrast}` on {metric_label(finding.metric)}"
    parts = []
    for label, r in zip(_labels(rows), rows.itertuples()):
        if is_missing(r.ci_low_corrected):
            ci = ", untested"
        else:
            level = 1 - SIGNIFICANCE / r.family_size
            ci = (f" [{r.ci_low_corrected:+.{digits}f}, {r.ci_high_corrected:+.{digits}f}] "
                  f"({level:.2%} CI, {int(r.family_size)} test{'s' if int(r.family_size) != 1 else ''})")
        parts.append(f"{label + ': ' if label else ''}Δ {r.difference:+.{digits}f}{ci}")
    return f"{finding.study}, {metric_label(finding.metric)}: " + "; ".join(parts)


def equivalence(rows: pd.DataFrame, digits: int = 4) -> str:
    """Each pair's TOST against its contrast's declared margin."""
    if rows.empty:
        return "—"
    texts = [tost_text(r.margin, r.tost_p, r.equivalent, digits) for r in rows.itertuples()]
    if len(set(texts)) == 1 and texts[0] == "no margin":
        return "no margin declared"
    return "; ".join(f"{label + ': ' if label else ''}{text}" for label, text in zip(_labels(rows), texts))


def findings_table(findings: list[Finding],
                   contrasts_of: Callable[[str, str], pd.DataFrame | None]) -> tuple[str, pd.DataFrame]:
    """(Markdown table finding | paper | kd-study | TOST vs margin | verdict, one row per finding as a frame).

    `contrasts_of(study, metric)` gives the study's declared-contrasts table on that metric; its
    control rows decide whether the study can decide at all.
    """
    records = []
    for finding in findings:
        table = contrasts_of(finding.study, finding.metric)
        rows = finding_rows(finding, table)
        able, _ = controls_verdict(table)
        records.append({"finding": finding.claim, "paper": finding.paper, "kd-study": measured(finding, rows),
                        "TOST vs margin": equivalence(rows), "verdict": verdict(finding, rows, able),
                        "study": finding.study, "metric": finding.metric, "contrast": finding.contrast,
                        "pairs": len(rows)})
    frame = pd.DataFrame.from_records(records)
    text = markdown_table(["finding", "paper", "kd-study: Δ [corrected CI]", "TOST vs margin", "verdict"],
                          [[_cell(r["finding"]), _cell(r["paper"]), _cell(r["kd-study"]), _cell(r["TOST vs margin"]),
                            r["verdict"]] for r in records])
    return text, frame


def finding_pairs(findings: list[Finding],
                  contrasts_of: Callable[[str, str], pd.DataFrame | None]) -> pd.DataFrame:
    """One row per pair a finding reads, oriented the paper's way (`toward` = Δ when the paper expects
    `better`, −Δ when `worse`; so is the corrected CI): finding, metric, verdict, toward, low, high, margin."""
    records = []
    for finding in findings:
        table = contrasts_of(finding.study, finding.metric)
        rows = finding_rows(finding, table)
        if rows.empty:
            continue
        word = verdict(finding, rows, controls_verdict(table)[0]).split(" (")[0]
        sign = 1.0 if finding.expect == "better" else -1.0
        for label, r in zip(_labels(rows), rows.itertuples()):
            low, high = sorted((sign * r.ci_low_corrected, sign * r.ci_high_corrected))
            records.append({"finding": finding.claim + (f" ({label})" if label else ""), "metric": finding.metric,
                            "verdict": word, "toward": sign * r.difference, "low": low, "high": high,
                            "margin": r.margin})
    return pd.DataFrame.from_records(records, columns=["finding", "metric", "verdict", "toward", "low", "high",
                                                       "margin"])


def controls_table(studies: Mapping[str, list[str]],
                   contrasts_of: Callable[[str, str], pd.DataFrame | None], digits: int = 4) -> tuple[str, list[str]]:
    """(Markdown table of every declared control of the studies on the metrics their findings read, one line per
    study unable to decide). Empty text when no study declares a control."""
    rows, unable = [], []
    for study, metrics in studies.items():
        for metric in metrics:
            table = contrasts_of(study, metric)
            if table is None or table.empty or not table["control_status"].notna().any():
                continue
            for r in table[table["control_status"].notna()].itertuples():
                ci = ("untested" if is_missing(r.ci_low_corrected) else
                      f"{r.difference:+.{digits}f} [{r.ci_low_corrected:+.{digits}f}, {r.ci_high_corrected:+.{digits}f}]")
                kind = "positive (must be significant)" if r.control == "positive" else "A/A (must not be significant)"
                rows.append([study, metric_label(metric), r.contrast, kind, f"{r.of} vs {r.vs}", ci, r.decision,
                             r.control_status])
            able, _ = controls_verdict(table)
            if not able:
                unable.append(f"{study} ({metric_label(metric)}): {UNABLE_TO_DECIDE} — a positive control was not "
                              "significant or an A/A control was, so this study's tests cannot tell an effect from "
                              "noise and its verdicts are not evidence.")
    if not rows:
        return "", unable
    text = markdown_table(["study", "metric", "control", "kind", "pair", "Δ [corrected CI]", "decision", "status"],
                          rows)
    return text, unable


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_legend(significance: float) -> str:
    return (f"kd-study: each pair of the declared contrast the finding names (`at` = the values it holds), "
            f"Δ = of − vs with its corrected CI: (1 − {significance:g}/m) for a family of m tested pairs, over "
            f"queries and seeds (the study's contrasts table). TOST vs margin: two one-sided tests at "
            f"{significance:g}/m against the margin declared with the contrast. Verdict: reproduced = every pair's "
            "corrected CI excludes 0 in the paper's direction; not reproduced = a pair's corrected CI excludes 0 "
            "in the opposite direction, or TOST shows it equivalent within the margin; inconclusive = neither (a "
            f"corrected CI that includes 0 and no equivalence shown); {UNABLE_TO_DECIDE} = the study's controls "
            "failed; not measured = no such pair in the store.")


def studies_named(findings: list[Finding], reported: Sequence[str] = ()) -> Mapping[str, list[str]]:
    """Study → the metrics its findings read (in file order), then the other `reported` metrics: a control
    that fails on a metric no finding reads still says the study cannot decide on that metric."""
    out: dict[str, list[str]] = {}
    for finding in findings:
        out.setdefault(finding.study, [])
        if finding.metric not in out[finding.study]:
            out[finding.study].append(finding.metric)
    for metrics in out.values():
        metrics += [metric for metric in reported if metric not in metrics]
    return out
