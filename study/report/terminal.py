"""The report in a terminal: a computed `StudyReport`'s tables drawn with rich."""
from __future__ import annotations

import numpy as np
import pandas as pd

from study.report.build import StudyReport
from study.report.contrasts import UNABLE_TO_DECIDE, controls_verdict
from study.report.points import tied_points
from study.report.sensitivity import SensitivityTable
from study.report.text import better, corner, fmt_label, key_params, metric_label, seeds_note
from study.report.trial_tables import with_mean_row


def render_report(report: StudyReport, console=None) -> None:
    """Print a computed report's tables with rich."""
    from rich.console import Console

    console = console or Console()
    study, metric, best = report.study, report.metric, report.best
    console.rule(f"kd-study report: {study.name}")
    console.print(f"{len(study.trials)} finished trials, {len(study.excluded)} excluded · metric "
                  f"{metric_label(metric)} ({metric}, {better(report.mode)} is better) · "
                  f"best trial {best['trial_id']} = {best[metric]:.4f}" + seeds_note(report) + key_params(best),
                  highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for table in report.tables.values():
        _print_sensitivity(table, console)
    if report.contrasts is not None and not report.contrasts.empty:
        shown = report.contrasts[["contrast", "of", "vs", "at", "difference", "ci_low_corrected", "ci_high_corrected",
                                  "p_adjusted", "mde", "tost_p", "result", "decision", "control_status"]]
        console.print(_rich_table(shown, f"Declared contrasts ({metric_label(metric)}; CI at α/m and corrected p: "
                                         f"{report.correction} within each family)"))
        able, lines = controls_verdict(report.contrasts)
        if lines and not able:
            console.print(f"[red]{UNABLE_TO_DECIDE}[/]: " + "; ".join(lines), highlight=False)
    if report.points is not None:
        tied = tied_points(report.points)
        shown = tied[report.point_params + ["n_seeds", "mean", "ci_low", "ci_high", "p_adjusted_vs_best"]]
        console.print(_rich_table(shown, f"Configurations tied with the best ({len(tied)} of {len(report.points)})"))
    if report.importances is not None:
        console.print(_rich_table(report.importances, "Parameter importances (Optuna)"))
    for note in report.importance_notes:
        console.print(f"[yellow]importances:[/] {note}", highlight=False)
    if report.sampler_diagnostics is not None:
        console.print(_rich_table(report.sampler_diagnostics, "Sampled teacher scores per sampler"))
    if report.trial_times is not None:
        console.print(_rich_table(with_mean_row(report.trial_times), "Trial times (s)", digits=1))
    if len(study.excluded):
        console.print(_rich_table(study.excluded, "Excluded runs (not FINISHED)"))


def _print_sensitivity(table: SensitivityTable, console) -> None:
    """The grid with the best cell bold green, tied cells green and † cells red; title and legend outside it."""
    from rich.table import Table

    # Title and legend outside the grid: a narrow grid would wrap them line by line.
    console.print()
    console.print(f"[bold]{table.title}[/]", highlight=False)
    grid = Table()
    grid.add_column(corner(table.rows, table.cols), style="bold")
    for c in table.mean.columns:
        grid.add_column(fmt_label(c), justify="right")
    for r in table.mean.index:
        cells = []
        for c in table.mean.columns:
            text = table.cell_text(r, c)
            tied = table.tied is not None and table.tested and table.tied.loc[r, c]
            style = "bold green" if (r, c) == table.best else "red" if table.worse.loc[r, c] else \
                "green" if tied else ""
            cells.append(f"[{style}]{text}[/]" if style else text)
        grid.add_row(fmt_label(r), *cells)
    console.print(grid)
    console.print(table.legend(), style="dim", highlight=False)
    for note in table.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _rich_table(frame: pd.DataFrame, title: str, digits: int = 4):
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[("—" if pd.isna(v) else f"{v:.{digits}f}") if isinstance(v, (float, np.floating))
                        else fmt_label(v) for v in row])
    return table
