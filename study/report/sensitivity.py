"""Sensitivity tables: a metric by two config fields, each cell with a 95% CI and corrected contrasts.

The tables follow the WKL paper (Tables 3/5/6: Dev MRR@10 by γ1 × α) and the score-distribution
paper (sampler × K, per loss). A cell is the mean of the metric over the finished runs of that
configuration (its seed replicates, and any searched parameter not on the table's axes).

A cell's values are a queries × seeds matrix: per-query values (PER_QUERY_ARTIFACT) of its runs,
one column per replicate index (runs of one replicate are averaged; a one-seed study has one
column). From it (`study.report.stats`, where the formulas are):
- the 95% CI of the cell's mean: percentile bootstrap over queries and seeds;
- two families of contrasts declared before the study runs, each corrected across the table
  (Holm by default, Benjamini–Hochberg on request): every cell against the table's best cell
  (highest mean for `mode="max"`, lowest for "min"), and every cell against the baseline the space
  names (`study.baseline`), at the same values of any axis the baseline leaves open. The test is
  `stats.paired_contrast` on the queries and seed replicates both cells have: over queries and
  seeds (SE from both variance components, Satterthwaite df); one seed: `scipy.stats.ttest_rel`.
- † marks a corrected p < `significance` with a mean worse than the best; the cells without †
  that were tested are tied with the best (≈). ▲/▼ mark a cell significantly better/worse than its
  baseline (corrected).
- power: the minimum detectable difference at 80% power and the corrected level of the family
  with the best (Bonferroni α/m; median over the table's contrasts with the best) beside the spread of the cell means; a spread below it means the study cannot
  separate its cells.
Metrics without per-query values (e.g. the BEIR average) get means only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import study.report.stats as stats
from study.report.best import best_position, check_mode
from study.report.cells import baseline_partners, cell_values, paired_values
from study.report.runs import PerQuery, ReportError
from study.report.text import SHORT_AXIS, better, corner, fmt_label, markdown_table, metric_label, ordered
from study.track.tags import PER_QUERY_ARTIFACT

SIGNIFICANCE = stats.ALPHA
CORRECTION = "holm"
DAGGER = "†"
TIED = "≈"
BETTER_THAN_BASELINE, WORSE_THAN_BASELINE = "▲", "▼"
BASELINE_LABEL = "(baseline)"
TEST_NAME = ("two-sided paired t-test over queries and seeds (SE from the query and seed variance components, "
             "Satterthwaite df; one seed: over queries, conditional on that seed)")
CANNOT_SEPARATE = "this study cannot separate its cells"


@dataclass(frozen=True)
class Power:
    """A table's power: the minimum detectable difference (MDE) at `power` beside the spread of its cell means."""

    mde: float
    spread: float
    sd_query: float
    sd_seed: float
    n_queries: int
    n_seeds: int
    alpha: float = stats.ALPHA
    power: float = stats.POWER
    family_size: int = 1

    @property
    def separable(self) -> bool:
        return not (math.isfinite(self.mde) and self.spread < self.mde)

    def text(self, metric: str) -> str:
        seeds = f", seed-to-seed SD of a difference {self.sd_seed:.4f}" if self.n_seeds > 1 else ""
        text = (f"Power: minimum detectable difference {self.mde:.4f} at {self.power:.0%} power "
                f"(α = {self.alpha:g} two-sided, corrected for the family's {self.family_size} test(s); per-query SD of differences "
                f"{self.sd_query:.4f}{seeds}; {self.n_queries} queries × {self.n_seeds} seed(s)); "
                f"spread of the cell means {self.spread:.4f}.")
        if not self.separable:
            text += f" Warning: the spread is below the MDE: {CANNOT_SEPARATE} on {metric_label(metric)}."
        return text


@dataclass(frozen=True)
class SensitivityTable:
    """A metric by two config fields: cell means over runs, CIs, and corrected contrasts with the best and baseline.

    Every frame is indexed by the `rows` values with the `cols` values as columns: `mean`, `std`
    (over runs), `count` (runs), `ci_low`/`ci_high` (95% bootstrap CI of the mean), `n_seeds`
    (replicates); vs the best cell: `p_value` (raw), `p_adjusted` (corrected across the table),
    `n_queries`, `worse` (corrected p < `significance`, wrong direction), `tied` (tested and not
    significantly different, or the best itself); vs the baseline: `baseline_diff`,
    `baseline_p_adjusted`, `vs_baseline` ("better", "worse", "baseline" or "").
    """

    title: str
    metric: str
    rows: str
    cols: str
    mean: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    p_value: pd.DataFrame
    n_queries: pd.DataFrame
    worse: pd.DataFrame
    best: tuple[Any, Any]
    mode: str = "max"
    significance: float = SIGNIFICANCE
    notes: tuple[str, ...] = ()
    ci_low: pd.DataFrame | None = None
    ci_high: pd.DataFrame | None = None
    n_seeds: pd.DataFrame | None = None
    p_adjusted: pd.DataFrame | None = None
    tied: pd.DataFrame | None = None
    baseline: dict[str, Any] = field(default_factory=dict)
    baseline_diff: pd.DataFrame | None = None
    baseline_p_adjusted: pd.DataFrame | None = None
    vs_baseline: pd.DataFrame | None = None
    correction: str = CORRECTION
    power: Power | None = None

    @property
    def tested(self) -> bool:
        return bool(self.p_value.notna().to_numpy().any())

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and bool(self.ci_low.notna().to_numpy().any())

    @property
    def has_baseline(self) -> bool:
        return self.vs_baseline is not None and bool((self.vs_baseline == "baseline").to_numpy().any())

    def tied_cells(self) -> list[tuple[Any, Any]]:
        """The cells tied with the best (the best first), when the table was tested."""
        if self.tied is None or not self.tested:
            return []
        cells = [(r, c) for r in self.mean.index for c in self.mean.columns if self.tied.loc[r, c]]
        return sorted(cells, key=lambda cell: cell != self.best)

    def half_width(self, row: Any, col: Any) -> float:
        if self.ci_low is None or pd.isna(self.ci_low.loc[row, col]):
            return math.nan
        return (self.ci_high.loc[row, col] - self.ci_low.loc[row, col]) / 2.0

    def marks(self, row: Any, col: Any) -> str:
        """† (worse than the best), ≈ (tied with it), ▲/▼ (better/worse than the baseline)."""
        text = DAGGER if self.worse.loc[row, col] else ""
        if self.tied is not None and self.tested and self.tied.loc[row, col] and (row, col) != self.best:
            text += TIED
        if self.vs_baseline is not None:
            text += {"better": BETTER_THAN_BASELINE, "worse": WORSE_THAN_BASELINE}.get(self.vs_baseline.loc[row, col], "")
        return text

    def cell_text(self, row: Any, col: Any, digits: int = 4, counts: bool | None = None) -> str:
        value = self.mean.loc[row, col]
        if pd.isna(value):
            return "—"
        text = f"{value:.{digits}f}"
        half = self.half_width(row, col)
        if not math.isnan(half):
            text += f" ± {half:.{digits}f}"
        text += self.marks(row, col)
        n = int(self.count.loc[row, col])
        if counts or (counts is None and n != 1):
            text += f" (n={n})"
        if self.vs_baseline is not None and self.vs_baseline.loc[row, col] == "baseline":
            text += f" {BASELINE_LABEL}"
        return text

    def formatted(self, digits: int = 4) -> pd.DataFrame:
        """The table as text: mean ± CI half-width, marks, (n=…) when a cell pools runs."""
        return pd.DataFrame([[self.cell_text(r, c, digits) for c in self.mean.columns] for r in self.mean.index],
                            index=self.mean.index, columns=self.mean.columns)

    def long(self) -> pd.DataFrame:
        """One row per configuration: the CSV form, with numbers rather than marks."""
        records = []
        for r in self.mean.index:
            for c in self.mean.columns:
                if pd.isna(self.mean.loc[r, c]):
                    continue
                record = {
                    self.rows: r, self.cols: c, "n_trials": int(self.count.loc[r, c]),
                    f"{self.metric}_mean": self.mean.loc[r, c], f"{self.metric}_std": self.std.loc[r, c],
                    "ci_low": _at(self.ci_low, r, c), "ci_high": _at(self.ci_high, r, c),
                    "n_seeds": _at(self.n_seeds, r, c),
                    "p_value_vs_best": self.p_value.loc[r, c], "p_adjusted_vs_best": _at(self.p_adjusted, r, c),
                    "n_queries_tested": self.n_queries.loc[r, c],
                    "significantly_worse": bool(self.worse.loc[r, c]),
                    "tied_with_best": bool(_at(self.tied, r, c, False)) and self.tested,
                    "best": (r, c) == self.best,
                }
                if self.vs_baseline is not None:
                    record.update(diff_vs_baseline=_at(self.baseline_diff, r, c),
                                  p_adjusted_vs_baseline=_at(self.baseline_p_adjusted, r, c),
                                  vs_baseline=self.vs_baseline.loc[r, c])
                records.append(record)
        return pd.DataFrame.from_records(records)

    def to_markdown(self, digits: int = 4) -> str:
        """The formatted table in Markdown, the best cell in bold."""
        text = self.formatted(digits)
        rows = [[fmt_label(r)] + [f"**{text.loc[r, c]}**" if (r, c) == self.best else text.loc[r, c]
                                  for c in text.columns] for r in text.index]
        return markdown_table([corner(self.rows, self.cols)] + [fmt_label(c) for c in text.columns], rows)

    def cell_name(self, cell: tuple[Any, Any]) -> str:
        return (f"{SHORT_AXIS.get(self.rows, self.rows)}={fmt_label(cell[0])}, "
                f"{SHORT_AXIS.get(self.cols, self.cols)}={fmt_label(cell[1])}")

    def design(self) -> str:
        """`n = 100 queries × 2 seeds`: what the tests of this table rest on."""
        tested = self.n_queries.to_numpy()[self.p_value.notna().to_numpy()]
        seeds = self.n_seeds.to_numpy()[self.mean.notna().to_numpy()] if self.n_seeds is not None else np.array([1])
        queries = f"{int(tested.min())}" if tested.min() == tested.max() else f"{int(tested.min())}–{int(tested.max())}"
        s_min, s_max = int(np.nanmin(seeds)), int(np.nanmax(seeds))
        n_seeds = f"{s_min}" if s_min == s_max else f"{s_min}–{s_max}"
        return f"n = {queries} queries × {n_seeds} seed(s)"

    def legend(self) -> str:
        text = (f"Cells: mean {metric_label(self.metric)} over finished runs ({better(self.mode)} is better)"
                + (" ± half the width of its 95% bootstrap CI (queries × seeds resampled; bounds in the CSV)"
                   if self.has_ci else "")
                + f", (n=…) where a cell pools more than one run; best ({self.cell_name(self.best)}) in bold.")
        if self.tested:
            correction = stats.CORRECTIONS[self.correction]
            text += (f" Test: {TEST_NAME}, {self.design()}; {correction} correction across each family "
                     f"of this table. {DAGGER}: significantly worse than the best (corrected p < {self.significance:g});"
                     f" {TIED}: tied with the best (not significantly different after correction).")
            if self.vs_baseline is not None:
                text += (f" {BETTER_THAN_BASELINE}/{WORSE_THAN_BASELINE}: significantly better/worse than the "
                         f"baseline cell, marked {BASELINE_LABEL}, at the same {self._open_axes()} (corrected).")
            tied = self.tied_cells()
            text += f" Tied with the best: {'; '.join(self.cell_name(c) for c in tied)}."
        if self.power is not None:
            text += " " + self.power.text(self.metric)
        return text

    def _open_axes(self) -> str:
        open_axes = [SHORT_AXIS.get(a, a) for a in (self.rows, self.cols) if a not in self.baseline]
        return " and ".join(open_axes) if open_axes else "table"


def _at(frame: pd.DataFrame | None, row: Any, col: Any, default: Any = math.nan) -> Any:
    return default if frame is None else frame.loc[row, col]


def _best_cell(mean: pd.DataFrame, mode: str) -> tuple[Any, Any]:
    """The cell with the best finite mean (the first in table order on a tie)."""
    stacked = mean.stack()
    position = best_position(stacked, mode)   # the one best rule: finite values only, first on a tie
    if position is None:
        raise ReportError("no cell has a finite mean")
    return tuple(stacked.index[position])


def sensitivity_table(df: pd.DataFrame, rows: str, cols: str, metric: str, per_query: PerQuery | None = None, *,
                      significance: float = SIGNIFICANCE, mode: str = "max", title: str | None = None,
                      correction: str = CORRECTION, baseline: Mapping[str, Any] | None = None,
                      n_resamples: int = stats.N_RESAMPLES) -> SensitivityTable:
    """`metric` by `rows` × `cols` (e.g. `loss.gamma1` × `loss.alpha`): cell means, CIs, corrected marks, power.

    `per_query` is `{run_id: {metric_key: {qid: value}}}` (see `load_per_query`); without it, or
    without the metric in it, cells get means only (the table's notes say so). `baseline` is the
    space's `study.baseline`; `correction` "holm" or "bh". The caller filters `df` (e.g. to WKL
    runs); the module docstring describes the statistics.
    """
    check_mode(mode)
    if correction not in stats.CORRECTIONS:
        raise ReportError(f"correction must be one of {', '.join(stats.CORRECTIONS)}, got {correction!r}")
    missing = [c for c in (rows, cols, metric) if c not in df.columns]
    if missing:
        raise ReportError(f"trials have no column(s) {', '.join(missing)}")
    data = df.dropna(subset=[rows, cols, metric])
    if data.empty:
        raise ReportError(f"no trial has {rows}, {cols} and {metric}")
    row_values, col_values = ordered(data[rows]), ordered(data[cols])
    grouped = data.groupby([rows, cols], sort=False)[metric]

    def grid(stat: pd.Series | None = None, fill: Any = math.nan, dtype: Any = None) -> pd.DataFrame:
        if stat is None:
            table = pd.DataFrame(fill, index=row_values, columns=col_values, dtype=dtype)
        else:
            table = (stat.unstack(cols) if len(stat) else pd.DataFrame()).reindex(index=row_values, columns=col_values)
        table.index.name, table.columns.name = rows, cols
        return table

    mean, std, count = grid(grouped.mean()), grid(grouped.std()), grid(grouped.count()).fillna(0).astype(int)
    best = _best_cell(mean, mode)
    frames = {name: grid() for name in ("p_value", "p_adjusted", "ci_low", "ci_high", "baseline_diff",
                                        "baseline_p", "baseline_p_adjusted")}
    n_queries, n_seeds = grid(fill=0, dtype=int), grid(fill=0, dtype=int)
    worse, tied = grid(fill=False, dtype=bool), grid(fill=False, dtype=bool)
    vs_baseline = grid(fill="", dtype=object)
    notes: list[str] = []
    cell_runs = {key: group for key, group in data.groupby([rows, cols], sort=False)}
    values = {key: cell_values(runs, per_query or {}, metric) for key, runs in cell_runs.items()}
    for key, v in values.items():
        n_seeds.loc[key] = v.shape[1] if v is not None else int(cell_runs[key].get("replicate", pd.Series([0])).nunique())
        if v is not None:
            frames["ci_low"].loc[key], frames["ci_high"].loc[key] = stats.bootstrap_ci(v.to_numpy(),
                                                                                       n_resamples=n_resamples)

    power = None
    if per_query is None:
        notes.append("no per-query values given: no CI and no significance test")
    elif values[best] is None:
        notes.append(f"no per-query values of {metric} ({PER_QUERY_ARTIFACT}) for the best configuration: "
                     "no significance test")
    else:
        untested, contrasts = [], []
        for key, v in values.items():
            if key == best:
                continue
            contrast = stats.paired_contrast(*paired_values(v, values[best])) if v is not None else None
            if contrast is None or math.isnan(contrast.p_value):
                untested.append(key)
                continue
            contrasts.append(contrast)
            frames["p_value"].loc[key], n_queries.loc[key] = contrast.p_value, contrast.n_queries
            wrong_way = contrast.difference < 0 if mode == "max" else contrast.difference > 0
            worse.loc[key] = wrong_way   # kept only where the corrected p is small, below
        frames["p_adjusted"] = _adjusted(frames["p_value"], correction)
        worse &= frames["p_adjusted"].fillna(1.0) < significance
        is_best = grid(fill=False, dtype=bool)
        is_best.loc[best] = True
        tied = pd.DataFrame(stats.tied_with_best(frames["p_adjusted"], is_best, significance),
                            index=mean.index, columns=mean.columns)
        if untested:
            cells = ", ".join(f"({fmt_label(r)}, {fmt_label(c)})" for r, c in untested)
            notes.append(f"not tested (no per-query values or < 2 shared queries): {cells}")
        if contrasts:
            power = _power(contrasts, mean, significance)

    partners, note = baseline_partners(data, rows, cols, list(cell_runs), baseline or {})
    if note:
        notes.append(note)
    if partners and per_query is not None:
        for key, partner in partners.items():
            if key == partner:
                vs_baseline.loc[key] = "baseline"
                continue
            if values[key] is None or values[partner] is None:
                continue
            contrast = stats.paired_contrast(*paired_values(values[key], values[partner]))
            frames["baseline_diff"].loc[key], frames["baseline_p"].loc[key] = contrast.difference, contrast.p_value
        frames["baseline_p_adjusted"] = _adjusted(frames["baseline_p"], correction)
        for key in partners:
            p = frames["baseline_p_adjusted"].loc[key]
            if not pd.isna(p) and p < significance:
                ahead = frames["baseline_diff"].loc[key] > 0 if mode == "max" else frames["baseline_diff"].loc[key] < 0
                vs_baseline.loc[key] = "better" if ahead else "worse"
    if title is None:
        title = f"{metric_label(metric)} by {SHORT_AXIS.get(rows, rows)} × {SHORT_AXIS.get(cols, cols)}"
    return SensitivityTable(
        title, metric, rows, cols, mean, std, count, frames["p_value"], n_queries, worse, best, mode, significance,
        tuple(notes), ci_low=frames["ci_low"], ci_high=frames["ci_high"], n_seeds=n_seeds,
        p_adjusted=frames["p_adjusted"], tied=tied, baseline=dict(baseline or {}),
        baseline_diff=frames["baseline_diff"] if partners else None,
        baseline_p_adjusted=frames["baseline_p_adjusted"] if partners else None,
        vs_baseline=vs_baseline if partners else None, correction=correction, power=power)


def _adjusted(p_value: pd.DataFrame, correction: str) -> pd.DataFrame:
    """A table's p-values corrected across the table (one family)."""
    flat = stats.adjust_p_values(p_value.to_numpy(dtype=float).ravel(), correction)
    return pd.DataFrame(flat.reshape(p_value.shape), index=p_value.index, columns=p_value.columns)


def _power(contrasts: Sequence[stats.Contrast], mean: pd.DataFrame, alpha: float) -> Power:
    """The table's MDE: the median over its contrasts with the best (each from its own SE and df)."""
    family = len(contrasts)
    mde = float(np.median([stats.minimum_detectable_difference(c.se, c.df, alpha, family_size=family)
                           for c in contrasts]))
    finite = mean.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    return Power(mde=mde, spread=float(finite.max() - finite.min()),
                 sd_query=float(np.median([c.sd_query for c in contrasts])),
                 sd_seed=float(np.nanmedian([c.sd_seed for c in contrasts])) if any(
                     c.n_seeds > 1 for c in contrasts) else math.nan,
                 n_queries=int(np.median([c.n_queries for c in contrasts])),
                 n_seeds=int(max(c.n_seeds for c in contrasts)), alpha=alpha, family_size=family)
