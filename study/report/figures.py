"""The report's figures (matplotlib, no pyplot: no global figure state, the Agg canvas on save)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from study.report.sensitivity import DAGGER, SensitivityTable
from study.report.text import axis_label, fmt_label, metric_label


def plot_heatmap(table: SensitivityTable, path: str | Path) -> Path:
    """PNG heatmap of a sensitivity table: annotated means, † marks, the best cell boxed."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    nrows, ncols = table.mean.shape
    fig = Figure(figsize=(max(5.0, 2.4 + 1.35 * ncols), max(3.2, 1.9 + 0.62 * nrows)), dpi=130,
                 layout="constrained")
    ax = fig.subplots()
    values = np.ma.masked_invalid(table.mean.to_numpy(dtype=float))
    cmap = _colormap()
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.9)
    colorbar.set_label(metric_label(table.metric))
    low, high = image.norm.vmin, image.norm.vmax
    for i, r in enumerate(table.mean.index):
        for j, c in enumerate(table.mean.columns):
            value = table.mean.loc[r, c]
            if pd.isna(value):
                ax.text(j, i, "—", ha="center", va="center", color="#555555", fontsize=11)
                continue
            shade = cmap(0.5 if high == low else (value - low) / (high - low))
            luminance = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2]
            is_best = (r, c) == table.best
            ax.text(j, i, table.cell_text(r, c), ha="center", va="center", fontsize=10,
                    color="black" if luminance > 0.5 else "white", fontweight="bold" if is_best else "normal")
            if is_best:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2.5))
    ax.set_xticks(range(ncols), [fmt_label(c) for c in table.mean.columns])
    ax.set_yticks(range(nrows), [fmt_label(r) for r in table.mean.index])
    ax.set_xlabel(axis_label(table.cols))
    ax.set_ylabel(axis_label(table.rows))
    ax.set_title(table.title, fontsize=11)
    caption = "cell: mean over trials (n = trials pooled, 1 unless shown); red box: best"
    if table.tested:
        caption += (f"\n{DAGGER}: worse than best, two-sided paired t-test over queries,"
                    f"\np < {table.significance:g}, no multiple-testing correction")
    else:
        caption += "\nno per-query values: no significance test"
    # supxlabel, unlike fig.text, gets room from the constrained layout.
    fig.supxlabel(caption, fontsize=7.5, color="#444444")
    path = Path(path)
    fig.savefig(path)
    return path


def _colormap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#e6e6e6")


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
