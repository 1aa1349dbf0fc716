"""Sensitivity tables: a metric by two config fields, each cell tested against the best cell.

The tables follow the WKL paper (Tables 3/5/6: Dev MRR@10 by γ1 × α) and the score-distribution
paper (sampler × K, per loss). A cell is the mean of the metric over the finished trials of that
configuration (seeds, and any searched parameter not on the table's axes).

Significance (†): every cell is compared with the best cell of its table (highest mean for
`mode="max"`, lowest for "min") by a two-sided paired t-test (`scipy.stats.ttest_rel`) over
queries. A cell's per-query values are the per-query values of the metric averaged over the cell's
trials; the two cells are matched by qid (queries present in both). † marks p < 0.05 with a mean
worse than the best (below it for "max", above it for "min"). There is no multiple-testing
correction: in a table of many cells, a few marks (or missing marks) are expected by chance alone.
Metrics without per-query values (e.g. the BEIR average) get no marks.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from study.report.best import best_position, check_mode
from study.report.runs import PerQuery, ReportError
from study.report.text import SHORT_AXIS, better, corner, fmt_label, markdown_table, metric_label, ordered
from study.tags import PER_QUERY_ARTIFACT

SIGNIFICANCE = 0.05
DAGGER = "†"


@dataclass(frozen=True)
class SensitivityTable:
    """A metric by two config fields: cell means over trials, and each cell's paired test against the best.

    `mean`, `std`, `count`, `p_value`, `n_queries`, `worse` are DataFrames indexed by the `rows` values
    with the `cols` values as columns; `worse` marks p < `significance` in the wrong direction.
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

    @property
    def tested(self) -> bool:
        return bool(self.p_value.notna().to_numpy().any())

    def cell_text(self, row: Any, col: Any, digits: int = 4, counts: bool | None = None) -> str:
        value = self.mean.loc[row, col]
        if pd.isna(value):
            return "—"
        text = f"{value:.{digits}f}" + (DAGGER if self.worse.loc[row, col] else "")
        n = int(self.count.loc[row, col])
        if counts or (counts is None and n != 1):
            text += f" (n={n})"
        return text

    def formatted(self, digits: int = 4) -> pd.DataFrame:
        """The table as text: mean, † when significantly worse than the best, (n=…) when a cell pools trials."""
        return pd.DataFrame([[self.cell_text(r, c, digits) for c in self.mean.columns] for r in self.mean.index],
                            index=self.mean.index, columns=self.mean.columns)

    def long(self) -> pd.DataFrame:
        """One row per configuration: the CSV form, with numbers rather than marks."""
        records = []
        for r in self.mean.index:
            for c in self.mean.columns:
                if pd.isna(self.mean.loc[r, c]):
                    continue
                records.append({
                    self.rows: r, self.cols: c, "n_trials": int(self.count.loc[r, c]),
                    f"{self.metric}_mean": self.mean.loc[r, c], f"{self.metric}_std": self.std.loc[r, c],
                    "p_value_vs_best": self.p_value.loc[r, c], "n_queries_tested": self.n_queries.loc[r, c],
                    "significantly_worse": bool(self.worse.loc[r, c]), "best": (r, c) == self.best,
                })
        return pd.DataFrame.from_records(records)

    def to_markdown(self, digits: int = 4) -> str:
        """The formatted table in Markdown, the best cell in bold."""
        text = self.formatted(digits)
        rows = [[fmt_label(r)] + [f"**{text.loc[r, c]}**" if (r, c) == self.best else text.loc[r, c]
                                  for c in text.columns] for r in text.index]
        return markdown_table([corner(self.rows, self.cols)] + [fmt_label(c) for c in text.columns], rows)

    def legend(self) -> str:
        best = f"{SHORT_AXIS.get(self.rows, self.rows)}={fmt_label(self.best[0])}, " \
               f"{SHORT_AXIS.get(self.cols, self.cols)}={fmt_label(self.best[1])}"
        text = (f"Cells: mean {metric_label(self.metric)} over finished trials ({better(self.mode)} is better), "
                f"(n=…) where a cell pools more than one trial; best ({best}) in bold.")
        if self.tested:
            text += (f" {DAGGER}: significantly worse than the best (two-sided paired t-test over queries, "
                     f"p < {self.significance:g}, no multiple-testing correction).")
        return text


def _cell_per_query(run_ids: Sequence[str], per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
                    metric: str) -> pd.Series | None:
    """Per-query values of a configuration: the mean over its trials (seeds) for each qid."""
    series = [pd.Series(dict(per_query[r][metric]), dtype=float) for r in run_ids
              if r in per_query and metric in per_query[r]]
    if not series:
        return None
    return pd.concat(series, axis=1).mean(axis=1)


def paired_test(values: pd.Series, best: pd.Series) -> tuple[float, float, int]:
    """(p-value, mean difference values - best, number of matched queries) of a two-sided paired t-test."""
    from scipy.stats import ttest_rel

    joined = pd.concat([values.rename("a"), best.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    if n < 2:
        return math.nan, math.nan, n
    diff = joined["a"].to_numpy() - joined["b"].to_numpy()
    mean_diff = float(diff.mean())
    # The t statistic is undefined for constant differences: equal everywhere is no evidence,
    # a constant non-zero shift on every query is as strong as evidence gets.
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return (1.0 if abs(mean_diff) <= 1e-12 else 0.0), mean_diff, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_rel(joined["a"], joined["b"]).pvalue)
    return p_value, mean_diff, n


def _best_cell(mean: pd.DataFrame, mode: str) -> tuple[Any, Any]:
    """The cell with the best finite mean (the first in table order on a tie)."""
    stacked = mean.stack()
    position = best_position(stacked, mode)   # the one best rule: finite values only, first on a tie
    if position is None:
        raise ReportError("no cell has a finite mean")
    return tuple(stacked.index[position])


def sensitivity_table(df: pd.DataFrame, rows: str, cols: str, metric: str, per_query: PerQuery | None = None, *,
                      significance: float = SIGNIFICANCE, mode: str = "max",
                      title: str | None = None) -> SensitivityTable:
    """`metric` by `rows` × `cols` (e.g. `loss.gamma1` × `loss.alpha`): cell means over trials, † marks.

    `per_query` is `{run_id: {metric_key: {qid: value}}}` (see `load_per_query`); without it, or
    without the metric in it, cells are not tested (the table's notes say so). The caller filters
    `df` (e.g. to WKL runs); the module docstring describes the test.
    """
    check_mode(mode)
    missing = [c for c in (rows, cols, metric) if c not in df.columns]
    if missing:
        raise ReportError(f"trials have no column(s) {', '.join(missing)}")
    data = df.dropna(subset=[rows, cols, metric])
    if data.empty:
        raise ReportError(f"no trial has {rows}, {cols} and {metric}")
    row_values, col_values = ordered(data[rows]), ordered(data[cols])
    grouped = data.groupby([rows, cols], sort=False)[metric]

    def grid(stat: pd.Series) -> pd.DataFrame:
        table = stat.unstack(cols) if len(stat) else pd.DataFrame()
        return table.reindex(index=row_values, columns=col_values)

    mean, std, count = grid(grouped.mean()), grid(grouped.std()), grid(grouped.count()).fillna(0).astype(int)
    for frame in (mean, std, count):
        frame.index.name, frame.columns.name = rows, cols
    best = _best_cell(mean, mode)

    p_value = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    n_queries = pd.DataFrame(0, index=mean.index, columns=mean.columns)
    worse = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    notes = []
    cell_runs = {key: list(group["run_id"]) for key, group in data.groupby([rows, cols], sort=False)}
    best_values = _cell_per_query(cell_runs[best], per_query or {}, metric)
    if per_query is None:
        notes.append("no per-query values given: no significance test")
    elif best_values is None:
        notes.append(f"no per-query values of {metric} ({PER_QUERY_ARTIFACT}) for the best configuration: "
                     "no significance test")
    else:
        untested = []
        for key, run_ids in cell_runs.items():
            if key == best:
                continue
            values = _cell_per_query(run_ids, per_query, metric)
            if values is None:
                untested.append(key)
                continue
            p, mean_diff, n = paired_test(values, best_values)
            p_value.loc[key], n_queries.loc[key] = p, n
            wrong_way = mean_diff < 0 if mode == "max" else mean_diff > 0
            worse.loc[key] = bool(not math.isnan(p) and p < significance and wrong_way)
            if math.isnan(p):
                untested.append(key)
        if untested:
            cells = ", ".join(f"({fmt_label(r)}, {fmt_label(c)})" for r, c in untested)
            notes.append(f"not tested (no per-query values or < 2 shared queries): {cells}")
    if title is None:
        title = f"{metric_label(metric)} by {SHORT_AXIS.get(rows, rows)} × {SHORT_AXIS.get(cols, cols)}"
    return SensitivityTable(title, metric, rows, cols, mean, std, count, p_value, n_queries, worse,
                            best, mode, significance, tuple(notes))
