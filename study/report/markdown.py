"""The written report: `report.md` in sections, each with the files it links to (CSV, Markdown, PNG)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pandas as pd

from study.report.build import StudyReport
from study.report.contrasts import UNABLE_TO_DECIDE, contrasts_legend, contrasts_markdown, controls_verdict
from study.report.curves import curves_section
from study.report.figures import plot_heatmap, plot_importances
from study.report.points import tied_points
from study.report.sensitivity import (BASELINE_LABEL, BETTER_THAN_BASELINE, CANNOT_SEPARATE, DAGGER, SIGNIFICANCE,
                                      TEST_NAME, TIED, WORSE_THAN_BASELINE, SensitivityTable)
from study.report.stats import CORRECTIONS, N_RESAMPLES, POWER
from study.report.text import better, fmt_label, frame_to_markdown, is_missing, key_params, metric_label, plain, seeds_note
from study.report.trial_tables import with_mean_row
from study.track.tags import PER_QUERY_ARTIFACT, STUDY_BASELINE_PARAM, TRIAL_CONFIG_ARTIFACT
from study.track.tracking import redact
from trainables.outputs import TIME_PREFIX

REPORT_FILE = "report.md"
# A file beside the report: a table (written as CSV), a text, or a figure drawn to the path it is given.
FileContent = Union[pd.DataFrame, str, Callable[[Path], Path]]


@dataclass
class Section:
    """Lines of `report.md` and the files they link to, by file name."""

    lines: list[str]
    files: dict[str, FileContent] = field(default_factory=dict)


def report_sections(report: StudyReport) -> list[Section]:
    """The report's sections, in reading order."""
    sections = [overview(report)]
    if report.curves is not None:
        sections.append(Section(*curves_section(report.curves)))
    if report.tables:
        sections.append(reading_guide(report))
    sections += [sensitivity_section(key, table) for key, table in report.tables.items()]
    if report.contrasts is not None:
        sections.append(contrasts_section(report))
    if report.points is not None:
        sections.append(tied_section(report))
    if report.importances is not None or report.importance_notes:  # importances were asked for
        sections.append(importances_section(report))
    sections += [sampler_section(report), times_section(report), excluded_section(report),
                 best_config_section(report)]
    return sections


def report_markdown(sections: list[Section]) -> str:
    return "\n".join(line for section in sections for line in section.lines)


def write_file(path: Path, content: FileContent) -> Path:
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        content(path)
    return path


def overview(report: StudyReport) -> Section:
    study, metric, best = report.study, report.metric, report.best
    excluded = len(study.excluded)
    lines = [f"# kd-study report: {study.name}", "",
             f"- tracking store: `{redact(study.tracking_uri)}`; parent run `{study.parent_run_id}`",
             f"- trials: {len(study.trials)} finished"
             + (f", {excluded} excluded (not FINISHED, see below)" if excluded else ""),
             f"- metric: {metric_label(metric)} (`{metric}`), {better(report.mode)} is better",
             f"- best trial: `{best['trial_id']}` (run `{best['run_id']}`): {metric} = {best[metric]:.4f}"
             + seeds_note(report) + key_params(best),
             "- all trials: [trials.csv](trials.csv)", ""]
    if report.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in report.notes] + [""]
    return Section(lines, {"trials.csv": study.trials.drop(columns=["start_time", "end_time"])})


def reading_guide(report: StudyReport) -> Section:
    worse = better("min" if report.mode == "max" else "max")
    correction = CORRECTIONS[report.correction]
    baseline = report.study.baseline
    named = (f"the baseline the space names (`{STUDY_BASELINE_PARAM}`: "
             + ", ".join(f"{k}={v}" for k, v in baseline.items()) + ")") if baseline else \
        f"a baseline, when the space names one (`{STUDY_BASELINE_PARAM}`; this study names none)"
    return Section(["## How to read the sensitivity tables", "",
                    "A cell is the mean of the metric over the finished runs of that configuration (its seed "
                    "replicates, and any searched parameter not on the table's axes); the best cell is bold. "
                    "± is half the width of the cell's 95% confidence interval: a percentile bootstrap "
                    f"({N_RESAMPLES} resamples, seeded) that resamples queries and seeds independently from the "
                    f"per-query values (`{PER_QUERY_ARTIFACT}`), one column per seed replicate.", "",
                    "Two families of comparisons are fixed before the study runs: every cell against the table's "
                    f"best cell, and every cell against {named} at the same value of any axis the baseline leaves "
                    f"open. Test: {TEST_NAME}, on the queries (and seed replicates) both cells have; with one seed "
                    "this is `scipy.stats.ttest_rel` over queries. Correction: "
                    f"{correction} across each family of each table. {DAGGER}: corrected p < {SIGNIFICANCE:g} with a "
                    f"{worse} mean than the best; {TIED}: tied with the best (tested, not significantly different "
                    f"after correction); {BETTER_THAN_BASELINE}/{WORSE_THAN_BASELINE}: significantly better/worse "
                    f"than the baseline cell (marked {BASELINE_LABEL}). The best cell is chosen on the same queries, so its "
                    "mean is optimistic: a confirmation on fresh queries or the full corpus settles it.", "",
                    f"Power: each table gives the minimum detectable difference (MDE) at {POWER:.0%} power, "
                    "(t_{1−α/(2m)} + t_{0.8}) × the standard error of a paired difference over queries and seeds, at the "
                    "corrected level of the family with the best (m tests), beside the spread of its "
                    f"cell means. A spread below the MDE means {CANNOT_SEPARATE}: its ordering is not evidence.",
                    ""])


def contrasts_section(report: StudyReport) -> Section:
    """The space's declared contrasts on the report's metric (all rows also in contrasts.csv)."""
    table = report.contrasts
    lines = [f"## Declared contrasts: {metric_label(report.metric)}", ""]
    if table.empty:
        return Section(lines + ["No pair of finished points matches a declared contrast.", ""])
    body = contrasts_markdown(table) + "\n\n" + contrasts_legend(table)
    able, controls = controls_verdict(table)
    if controls:
        verdict = ("the controls pass: the study can decide" if able else
                   f"**{UNABLE_TO_DECIDE}**: a control failed, so no decision of this study is evidence")
        body += "\n\nControls: " + "; ".join(controls) + f". {verdict[0].upper() + verdict[1:]}."
    return Section(lines + [body, "", "Files: [contrasts.csv](contrasts.csv)", ""], {"contrasts.csv": table})


def tied_section(report: StudyReport) -> Section:
    """Every configuration tied with the best (the best first), with its CI; all points in points.csv."""
    points, params = report.points, report.point_params
    tied = tied_points(points)
    lines = ["## Configurations tied with the best", ""]
    if not points.attrs.get("tested"):
        lines += [f"No per-query values of {report.metric}: no test, so only the best configuration is listed.", ""]
    else:
        lines += [f"{len(tied)} of {len(points)} configurations are not significantly different from the best on "
                  f"{metric_label(report.metric)} ({TEST_NAME}, {CORRECTIONS[report.correction]} correction across "
                  f"the {len(points)} configurations, corrected p ≥ {SIGNIFICANCE:g}). `kd-study export NAME --tied "
                  "DIR` writes their configs.", ""]
    shown = tied[params + ["n_seeds", "mean", "ci_low", "ci_high", "diff_vs_best", "p_adjusted_vs_best"]]
    shown = shown.astype({p: object for p in params}).assign(**{p: shown[p].map(fmt_label) for p in params})
    shown = shown.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high",
                                  "p_adjusted_vs_best": "corrected p vs best"})
    return Section(lines + [frame_to_markdown(shown), "", "All configurations: [points.csv](points.csv)", ""],
                   {"points.csv": points})


def sensitivity_section(key: str, table: SensitivityTable) -> Section:
    stem = f"sensitivity_{key}"
    body = table.to_markdown() + "\n\n" + table.legend() + "".join(f"\n- {n}" for n in table.notes)
    lines = [f"## {table.title}", "", f"![{table.title}]({stem}.png)", "", body, "",
             f"Files: [{stem}.csv]({stem}.csv), [{stem}.md]({stem}.md)", ""]
    return Section(lines, {f"{stem}.csv": table.long(), f"{stem}.md": f"# {table.title}\n\n{body}\n",
                           f"{stem}.png": lambda path: plot_heatmap(table, path)})


def importances_section(report: StudyReport) -> Section:
    name, importances = report.study.name, report.importances
    section = Section(["## Parameter importances (Optuna)", ""])
    if importances is not None:
        table = frame_to_markdown(importances)
        section.files = {"importances.csv": importances,
                         "importances.md": f"# Parameter importances: {name}\n\n{table}\n",
                         "importances.png": lambda path: plot_importances(importances, path, name)}
        section.lines += ["![importances](importances.png)", "", table, "",
                          f"Over {importances.attrs.get('n_trials', '?')} completed Optuna trials.", ""]
    section.lines += [f"- {n}" for n in report.importance_notes] + ([""] if report.importance_notes else [])
    return section


def sampler_section(report: StudyReport) -> Section:
    diagnostics = report.sampler_diagnostics
    if diagnostics is None:
        return Section(["## Sampled teacher scores per sampler", "", "No sampled-score diagnostics were logged.", ""])
    table = frame_to_markdown(diagnostics)
    return Section(["## Sampled teacher scores per sampler", "",
                    "Mean over trials of the per-query variance and entropy of the K sampled teacher scores.", "",
                    table, ""],
                   {"sampler_diagnostics.csv": diagnostics,
                    "sampler_diagnostics.md": f"# Sampled teacher-score diagnostics: {report.study.name}\n\n{table}\n"})


def times_section(report: StudyReport) -> Section:
    times = report.trial_times
    if times is None:
        return Section(["## Trial times (seconds)", "", f"No `{TIME_PREFIX}*` metrics were logged.", ""])
    table = frame_to_markdown(with_mean_row(times), digits=1)
    return Section(["## Trial times (seconds)", "", table, ""],
                   {"trial_times.csv": times, "trial_times.md": f"# Trial times: {report.study.name}\n\n{table}\n"})


def excluded_section(report: StudyReport) -> Section:
    excluded = report.study.excluded
    return Section(["## Excluded runs (not FINISHED)", "", frame_to_markdown(excluded), ""] if len(excluded) else [])


def best_config_section(report: StudyReport) -> Section:
    best, metric = report.best, report.metric
    lines = ["## Best trial config", "",
             f"Trial `{best['trial_id']}`, run `{best['run_id']}`, {metric} = {best[metric]:.4f}. "
             "`kd-study export` writes it as a file that `kd-study train` re-runs.", ""]
    if report.best_config_yaml is not None:
        return Section(lines + ["```yaml", report.best_config_yaml.rstrip(), "```", ""])
    params = {p: plain(best[p]) for p in report.study.param_names if p in best.index and not is_missing(best[p])}
    return Section(lines + [f"No {TRIAL_CONFIG_ARTIFACT} artifact; its logged params:", "", "```yaml",
                            "\n".join(f"{k}: {v}" for k, v in params.items()), "```", ""])
