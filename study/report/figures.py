"""The report's figures (matplotlib, no pyplot: no global figure state, the Agg canvas on save)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from study.report.sensitivity import CANNOT_SEPARATE, DAGGER, TIED, SensitivityTable
from study.report.stats import CORRECTIONS
from study.report.text import axis_label, fmt_label, metric_label


# Cells are coloured by what the test says, not by their means: a colour scale over the cells'
# min–max would paint differences no test supports (0.1028 vs 0.1097) as opposite ends.
CELL_COLOURS = {"best": "#1a9850", "tied": "#a6d96a", "worse": "#f4a582", "untested": "#e0e0e0", "empty": "#f7f7f7"}
CELL_LEGEND = {"best": "best", "tied": "tied with best", "worse": "worse than best (corrected)",
               "untested": "not tested"}


def cell_category(table: SensitivityTable, row, col) -> str:
    """best / tied / worse / untested / empty: the heatmap's colour for one cell."""
    if pd.isna(table.mean.loc[row, col]):
        return "empty"
    if (row, col) == table.best:
        return "best"
    if table.worse.loc[row, col]:
        return "worse"
    if table.tied is not None and table.tested and table.tied.loc[row, col]:
        return "tied"
    return "untested"


def plot_heatmap(table: SensitivityTable, path: str | Path) -> Path:
    """PNG of a sensitivity table: mean ± CI per cell, coloured by its corrected contrast with the best (boxed)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    nrows, ncols = table.mean.shape
    fig = Figure(figsize=(max(5.6, 2.6 + 1.75 * ncols), max(3.4, 2.1 + 0.7 * nrows)), dpi=130,
                 layout="constrained")
    ax = fig.subplots()
    names = list(CELL_COLOURS)
    categories = [[cell_category(table, r, c) for c in table.mean.columns] for r in table.mean.index]
    codes = np.array([[names.index(k) for k in row] for row in categories])
    ax.imshow(codes, cmap=ListedColormap(list(CELL_COLOURS.values())), vmin=-0.5, vmax=len(names) - 0.5,
              aspect="auto")
    for i, r in enumerate(table.mean.index):
        for j, c in enumerate(table.mean.columns):
            if categories[i][j] == "empty":
                ax.text(j, i, "—", ha="center", va="center", color="#555555", fontsize=11)
                continue
            value, half = table.mean.loc[r, c], table.half_width(r, c)
            text = f"{value:.4f}" + ("" if np.isnan(half) else f"\n± {half:.4f}") + table.marks(r, c)
            is_best = (r, c) == table.best
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if is_best else "black", fontweight="bold" if is_best else "normal")
            if is_best:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#08306b", linewidth=2.5))
    ax.set_xticks(range(ncols), [fmt_label(c) for c in table.mean.columns])
    ax.set_yticks(range(nrows), [fmt_label(r) for r in table.mean.index])
    ax.set_xlabel(axis_label(table.cols))
    ax.set_ylabel(axis_label(table.rows))
    ax.set_title(table.title, fontsize=11)
    shown = [k for k in CELL_LEGEND if any(k in row for row in categories)]
    ax.legend(handles=[Patch(color=CELL_COLOURS[k], label=CELL_LEGEND[k]) for k in shown], fontsize=7.5,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    # Short caption lines: a one-column table makes a narrow figure.
    caption = "cell: mean ± half its 95% CI\n(n = runs pooled, 1 unless shown)"
    if table.tested:
        caption += (f"\ncolour: paired t-test vs best, {CORRECTIONS[table.correction]}-corrected p < "
                    f"{table.significance:g}\n{DAGGER} worse, {TIED} tied; {table.design()}")
        if table.power is not None:
            caption += f"\nMDE (80% power) {table.power.mde:.4f}, spread {table.power.spread:.4f}"
            if not table.power.separable:
                caption += f":\n{CANNOT_SEPARATE}"
    else:
        caption += "\nno per-query values: no CI and no test (grey)"
    # supxlabel, unlike fig.text, gets room from the constrained layout.
    fig.supxlabel(caption, fontsize=7.5, color="#444444")
    path = Path(path)
    fig.savefig(path)
    return path


def plot_importances(importances: pd.DataFrame, path: str | Path, study: str) -> Path:
    """Horizontal bar PNG of Optuna parameter importances (largest on top)."""
    from matplotlib.figure import Figure

    data = importances.sort_values("importance")
    fig = Figure(figsize=(6.4, max(2.6, 1.3 + 0.42 * len(data))), dpi=130, layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(data["param"], data["importance"], color="#3b75af")
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=9, fontfamily="sans-serif")
    ax.set_xlim(0, max(1.0, float(data["importance"].max()) * 1.15))
    ax.set_xlabel("importance (Optuna, sums to 1)")
    ax.set_title(f"Parameter importances — study {study}", fontsize=11)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_search_progress(curves: dict[str, pd.DataFrame], grid_best: float, metric: str, path: Path,
                         mode: str = "max") -> Path:
    """Best-so-far step curves of searches (`search_progress` frames) against the grid's best."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=130, layout="constrained")
    ax = fig.subplots()
    for label, progress in curves.items():
        ax.step(progress["trial"], progress["best_so_far"], where="post", label=f"{label}: best so far")
        ax.plot(progress["trial"], progress["value"], ".", alpha=0.35)
    ax.axhline(grid_best, color="#d62728", linestyle="--", linewidth=1, label="grid best")
    budget = max(len(p) for p in curves.values())
    for fraction in (1 / 3, 2 / 3):
        ax.axvline(budget * fraction, color="#999999", linewidth=0.8)
    ax.set_xlabel("trials run")
    ax.set_ylabel(metric_label(metric))
    # The curves climb towards the best when higher is better, fall towards it when lower is.
    ax.legend(fontsize=8, loc="lower right" if mode == "max" else "upper right")
    ax.set_title("Search progress: best so far (dots: each trial)", fontsize=11)
    fig.savefig(path)
    return path


VERDICT_COLOURS = {"reproduced": "#1a9850", "not reproduced": "#d73027", "inconclusive": "#7f7f7f",
                   "unable to decide": "#fdae61"}


def plot_findings(pairs: pd.DataFrame, path: str | Path) -> Path:
    """Forest plot of the findings (`findings.finding_pairs`): each pair's Δ in the paper's direction with its
    corrected CI, the declared margin shaded, coloured by the finding's verdict; right of 0 = the paper's way."""
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(pairs)
    fig = Figure(figsize=(9.0, max(2.8, 1.4 + 0.62 * n)), dpi=130, layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(pairs.itertuples()):
        y = n - 1 - i
        colour = VERDICT_COLOURS.get(r.verdict, "#7f7f7f")
        if not pd.isna(r.margin):
            ax.fill_betweenx([y - 0.35, y + 0.35], -r.margin, r.margin, color="#deebf7", zorder=0)
        if not (pd.isna(r.low) or pd.isna(r.high)):
            ax.plot([r.low, r.high], [y, y], color=colour, linewidth=2.2, zorder=2)
        ax.plot([r.toward], [y], "o", color=colour, markersize=6, zorder=3)
    ax.axvline(0.0, color="#333333", linewidth=0.9)
    labels = [textwrap.fill(f"{r.finding} [{metric_label(r.metric)}]", 58) for r in pairs.itertuples()]
    ax.set_yticks(range(n), labels[::-1], fontsize=7.5)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("Δ in the paper's direction (right of 0: as the paper found), with its family-corrected CI",
                  fontsize=8.5)
    shown = [v for v in VERDICT_COLOURS if v in set(pairs["verdict"])]
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in shown]
    if pairs["margin"].notna().any():
        handles.append(Patch(color="#deebf7", label="± declared margin (TOST)"))
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Findings: kd-study's measurement of each claim", fontsize=11)
    path = Path(path)
    fig.savefig(path)
    return path
