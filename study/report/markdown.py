"""The written report: `report.md` in sections, each with the files it links to (CSV, Markdown, PNG)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pandas as pd

from study.report.build import StudyReport
from study.report.curves import curves_section
from study.report.figures import plot_heatmap, plot_importances
from study.report.sensitivity import DAGGER, SIGNIFICANCE, SensitivityTable
from study.report.text import better, frame_to_markdown, is_missing, key_params, metric_label, plain
from study.report.trial_tables import with_mean_row
from study.tags import PER_QUERY_ARTIFACT, TRIAL_CONFIG_ARTIFACT
from study.tracking import redact
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
             + key_params(best),
             "- all trials: [trials.csv](trials.csv)", ""]
    if report.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in report.notes] + [""]
    return Section(lines, {"trials.csv": study.trials.drop(columns=["start_time", "end_time"])})


def reading_guide(report: StudyReport) -> Section:
    worse = better("min" if report.mode == "max" else "max")
    return Section(["## How to read the sensitivity tables", "",
                    "A cell is the mean of the metric over the finished trials of that configuration (seeds, and "
                    "any searched parameter not on the table's axes); the best cell is bold. Each other cell is "
                    "compared with the best cell by a two-sided paired t-test (`scipy.stats.ttest_rel`) over "
                    f"queries: per-query values (`{PER_QUERY_ARTIFACT}`) averaged over the cell's trials, matched by "
                    f"qid. {DAGGER} marks p < {SIGNIFICANCE:g} with a {worse} mean. No multiple-testing correction "
                    "is applied, so with many cells a few marks are expected by chance.", ""])


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
