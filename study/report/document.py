"""A results document over several studies: `kd-study report --document docs/results.yaml`.

The spec (YAML) names the studies, the metrics to tabulate, which studies to compare as searches
(e.g. a grid and a TPE search of the same space), the benchmark tables to include and a
hand-written discussion file. Everything else is read from the MLflow store and the study folders,
so re-running the command on the same store rewrites the same document.

    title: SciFact evidence studies
    output: docs/results.md              # figures go to docs/results/ (beside it)
    regenerate: ["kd-study run ...", ...] # shown at the top, verbatim
    studies: [scifact_sampling, scifact_wkl, scifact_wkl_tpe]
    metrics: [dev_mrr_at_10_subset500, ...]   # tables per study and metric (first = selection metric)
    search_comparisons: [{grid: scifact_wkl, search: scifact_wkl_tpe}]
    reference: [bench/results/reference_scifact.md]   # untrained student and teacher on the same sets
    performance: [bench/results/train.md, bench/results/eval.md]   # or a glob: bench/results/*.md
    discussion: docs/results_discussion.md
    findings: docs/findings.yaml         # finding | paper | kd-study | verdict (study/report/findings.py)
    confirmations: [scifact_sampling]    # include `kd-study confirm`'s tables (kd-studies/NAME/confirm/)

Per study and metric it also writes the space's declared contrasts (`study.contrasts`, corrected
per family) and, in one table, the minimum detectable difference (MDE) per study and metric.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from study.paths import StudyPaths
from study.report.best import mode_for
from study.report.build import build_report
from study.report.contrasts import contrasts_legend, contrasts_markdown, declared_contrasts, median_mde
from study.report.document_parts import (DocumentStudy, SearchComparison, best_value, comparison_section,
                                         confirmations_section, included, power_section, read_assets,
                                         selection_metric, timing_section)
from study.report.figures import plot_findings, plot_heatmap, plot_importances
from study.report.findings import (controls_table, finding_pairs, findings_legend, findings_table, load_findings,
                                   studies_named)
from study.report.points import varying_params
from study.report.runs import ReportError, load_per_query, load_study_runs, read_yaml_model
from study.report.sensitivity import SIGNIFICANCE
from study.report.text import frame_to_markdown, is_missing, markdown_table, metric_label, slug
from study.track.tracking import redact


class DocumentSpec(BaseModel):
    """What `kd-study report --document` writes; paths are relative to the spec file's folder's parent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    title: str
    output: str
    regenerate: list[str] = Field(default_factory=list)
    studies: list[str] = Field(min_length=1)
    metrics: list[str] = Field(default_factory=list)
    search_comparisons: list[SearchComparison] = Field(default_factory=list)
    reference: list[str] = Field(default_factory=list)
    performance: list[str] = Field(default_factory=list)
    discussion: str | None = None
    findings: str | None = None
    confirmations: list[str] = Field(default_factory=list)
    # `sensitivity`: each study's tables over two params (sampler × K, γ1 × α), pooling the other varying params;
    # `points`: one row per configuration point, for studies built of named points (arms, controls, references)
    # whose other params differ from point to point, so a two-param table would pool unlike runs (and no
    # parameter importances: fANOVA apportions a search space, not a list of points)
    study_tables: Literal["sensitivity", "points"] = "sensitivity"

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DocumentSpec":
        return read_yaml_model(path, cls, "the document spec")


# ---- the document ------------------------------------------------------------------------------------
@dataclass
class _Measured:
    """What the study sections computed and the summary sections read: contrasts per (study, metric), MDE rows."""

    contrasts: dict[tuple[str, str], pd.DataFrame | None]
    power: list[dict[str, Any]]


def write_document(spec_path: str | Path, tracking_uri: str, root: str | None = None) -> Path:
    """Build the document the spec describes and return its path (figures in `<output stem>/`)."""
    spec_path = Path(spec_path)
    spec = DocumentSpec.from_yaml(spec_path)
    base = Path.cwd()
    output = (base / spec.output).resolve()
    findings = load_findings(base / spec.findings) if spec.findings else []
    for i, finding in enumerate(findings):
        if finding.study not in spec.studies:
            raise ReportError(f"{spec.findings}: findings.{i}.study: {finding.study!r} is not one of the document's "
                              f"studies ({', '.join(spec.studies)})")
    figures = output.with_suffix("")
    figures.mkdir(parents=True, exist_ok=True)
    rel = figures.name

    studies = []
    for name in spec.studies:
        paths = StudyPaths.of(name, root)
        state = paths.read_state() if paths.exists() else {}
        studies.append(DocumentStudy(name, load_study_runs(name, tracking_uri), state, read_assets(name, root)))

    header = (f"Generated by `kd-study report --document {spec_path.as_posix()}` on {_dt.date.today().isoformat()} "
              f"from the MLflow store `{redact(tracking_uri)}`; do not edit by hand")
    header += f" (the discussion is written in `{spec.discussion}`)." if spec.discussion else "."
    md = [f"# {spec.title}", "", header, ""]
    if spec.regenerate:
        md += ["## Regenerate", "", "```bash", *spec.regenerate, "```", ""]

    measured = _Measured({}, [])
    sections = [_study_section(study, spec, tracking_uri, figures, rel, measured) for study in studies]

    md += _contents(studies, spec)
    if findings:
        by_name = {s.name: s for s in studies}

        def contrasts_of(study: str, metric: str) -> pd.DataFrame | None:
            return _contrasts_of(by_name[study], metric, tracking_uri, measured)

        text, _ = findings_table(findings, contrasts_of)
        md += ["## Findings: the papers' claims and what kd-study measured", "", text, "",
               findings_legend(SIGNIFICANCE), ""]
        pairs = finding_pairs(findings, contrasts_of)
        if not pairs.empty:
            stem = f"{Path(spec.findings).stem}_forest"
            plot_findings(pairs, figures / f"{stem}.png")
            md += [f"![findings: each claim's difference in the paper's direction]({rel}/{stem}.png)", ""]
        controls, unable = controls_table(studies_named(findings, spec.metrics), contrasts_of)
        md += ["### Controls", "", controls or "_No study declares a control (`control: positive|aa` in "
               "`study.contrasts`): nothing shows that its tests can find an effect and reject noise._", ""]
        md += [f"**{line}**" for line in unable] + ([""] if unable else [])
    if measured.power:
        md += power_section(measured.power)
    if spec.reference:
        md += ["## Reference points", ""] + included(base, spec.reference)
    if spec.discussion:
        text = (base / spec.discussion).read_text().strip()
        md += [text, ""]

    for comparison in spec.search_comparisons:
        md += comparison_section(comparison, {s.name: s for s in studies}, spec.metrics, figures, rel)

    for section in sections:
        md += section
    if spec.confirmations:
        md += confirmations_section(spec.confirmations, root)

    md += timing_section(studies)
    if spec.performance:
        md += ["## Performance (bench/)", ""] + included(base, spec.performance)

    output.write_text("\n".join(md).rstrip() + "\n")
    return output


def _contrasts_of(study: DocumentStudy, metric: str, tracking_uri: str, measured: _Measured) -> pd.DataFrame | None:
    """The study's declared contrasts on `metric`: the study section's table, or computed here for another metric."""
    key = (study.name, metric)
    if key not in measured.contrasts:
        runs = study.runs
        if not runs.contrasts or metric not in runs.trials.columns:
            measured.contrasts[key] = None
        else:
            per_query = load_per_query(tracking_uri, runs.trials["run_id"], metrics=[metric])
            measured.contrasts[key], _ = declared_contrasts(
                runs.trials, per_query, metric, runs.contrasts, params=varying_params(runs.trials, runs.param_names),
                mode=mode_for(runs, metric))
    return measured.contrasts[key]


def _contents(studies: list[DocumentStudy], spec: DocumentSpec) -> list[str]:
    lines = ["## Studies", "", "| study | trials finished | not finished (running, failed, killed) | selection metric | best |",
             "|---|---|---|---|---|"]
    for study in studies:
        df = study.runs.trials
        metric = selection_metric(study, spec.metrics, df)
        best = best_value(study.runs, metric)
        lines.append(f"| {study.name} | {len(df)} | {len(study.runs.excluded)} | {metric_label(metric)} | {best:.4f} |")
    return lines + [""]


def _study_section(study: DocumentStudy, spec: DocumentSpec, tracking_uri: str, figures: Path, rel: str,
                   measured: _Measured) -> list[str]:
    df = study.runs.trials
    md = [f"## Study `{study.name}`", ""]
    if df.empty:
        return md + ["No finished trials.", ""]
    metrics = [m for m in (spec.metrics or [selection_metric(study, spec.metrics, df)]) if m in df.columns]
    storage = study.state.get("optuna_storage")
    per_query = load_per_query(tracking_uri, df["run_id"], metrics=metrics)  # once for every metric's tables
    # named points (arms, controls, a reference) are no search space for fANOVA to apportion: no importances
    importances = spec.study_tables == "sensitivity"
    first = True
    for metric in metrics:
        report = build_report(study.name, tracking_uri, metric, storage if first and importances else None,
                              runs=study.runs, per_query=per_query)
        if first:
            best = report.best
            md += [f"{len(df)} finished trials; best by {metric_label(metric)}: `{best['trial_id']}` = "
                   f"{best[metric]:.4f}.", ""]
            md += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
        if spec.study_tables == "points" and report.points is not None:
            md += [f"### Points: {metric_label(metric)}", "",
                   _points_markdown(report.points, report.point_params, df), "", POINTS_LEGEND, ""]
        for key, table in report.tables.items() if spec.study_tables == "sensitivity" else ():
            if table.mean.shape == (1, 1):
                continue  # one configuration on both axes (e.g. the WKL study's fixed sampler and K): no table
            stem = f"{study.name}_{key}_{slug(metric)}"
            plot_heatmap(table, figures / f"{stem}.png")
            md += [f"### {table.title}", "", f"![{table.title}]({rel}/{stem}.png)", "", table.to_markdown(), "",
                   table.legend(), *[f"- {n}" for n in table.notes], ""]
        if report.contrasts is not None:
            measured.contrasts[(study.name, metric)] = report.contrasts
            if not report.contrasts.empty:
                md += [f"### Declared contrasts: {metric_label(metric)}", "", contrasts_markdown(report.contrasts), "",
                       contrasts_legend(report.contrasts), ""]
        measured.power.append(_power_row(study.name, metric, report))
        if first:
            if report.importances is not None:
                plot_importances(report.importances, figures / f"{study.name}_importances.png", study.name)
                md += ["### Parameter importances (Optuna fANOVA, selection metric)", "",
                       f"![importances]({rel}/{study.name}_importances.png)", "",
                       frame_to_markdown(report.importances), ""]
            elif report.importance_notes:
                md += ["### Parameter importances", "", *[f"- {n}" for n in report.importance_notes], ""]
            if report.sampler_diagnostics is not None:
                md += ["### Sampled teacher scores per sampler", "",
                       "Mean over trials of the per-query variance and entropy of the K sampled teacher scores.", "",
                       frame_to_markdown(report.sampler_diagnostics), ""]
        first = False
    return md


POINTS_LEGEND = ("Each configuration point of the study by the values that tell it apart (unset: the field does not "
                 "apply to that point); mean over its seeds of the per-query metric, with the 95% bootstrap CI over "
                 "queries and seeds. The tests the study was run for are its declared contrasts.")


def _points_markdown(points: pd.DataFrame, params: list[str], trials: pd.DataFrame) -> str:
    """One row per point: its values, its seeds (an A/A control differs from its arm only there), mean and 95% CI;
    the best in bold."""
    key = "point" if "point" in trials.columns else "trial_id"
    seeds = (trials.groupby(key)["seed"].agg(lambda s: f"{int(s.min())}..{int(s.max())}" if s.nunique() > 1
                                              else str(int(s.iloc[0])))
             if "seed" in trials.columns else pd.Series(dtype=str))
    rows = []
    for r in points.to_dict("records"):
        values = ", ".join(f"{p}={r[p]}" for p in params if not is_missing(r[p]) and str(r[p]) not in ("None", "nan"))
        mean = f"{r['mean']:.4f}"
        rows.append([values or str(r["point"]), f"{r['n_seeds']} ({seeds.get(r['point'], '?')})",
                     f"**{mean}**" if r["best"] else mean,
                     "—" if is_missing(r["ci_low"]) else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"])
    return markdown_table(["point", "seeds", "mean", "95% CI"], rows)


def _power_row(name: str, metric: str, report) -> dict[str, Any]:
    """One study and metric: the MDE (median and range over its contrasts), the design, the spread of point means."""
    if report.contrasts is not None and report.contrasts["mde"].notna().any():
        source, mdes = "declared contrasts", report.contrasts["mde"].dropna().astype(float)
        design = (f"{int(report.contrasts['n_queries'].median())} × {int(report.contrasts['n_seeds'].max())}")
        largest = float(report.contrasts["difference"].abs().max())
    else:
        powers = [t.power for t in report.tables.values() if t.power is not None]
        source, mdes = "tables vs best", pd.Series([p.mde for p in powers], dtype=float)
        design = f"{powers[0].n_queries} × {powers[0].n_seeds}" if powers else "—"
        largest = float("nan")
    means = report.points["mean"].astype(float) if report.points is not None else pd.Series(dtype=float)
    return {"study": name, "metric": metric_label(metric), "from": source,
            "MDE (median)": median_mde(pd.DataFrame({"mde": mdes})) if len(mdes) else float("nan"),
            "MDE min": float(mdes.min()) if len(mdes) else float("nan"),
            "MDE max": float(mdes.max()) if len(mdes) else float("nan"),
            "queries × seeds": design, "largest declared Δ (absolute)": largest,
            "spread of point means": float(means.max() - means.min()) if len(means) else float("nan")}


