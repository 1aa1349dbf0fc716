"""The space's declared contrasts (`study.contrasts`), tested on one metric: one row per pair of points.

Each declared contrast pairs points (study/space/contrasts.py); each pair is tested with
`stats.paired_contrast` on the queries and seed replicates both points have: the difference of the
two points' means, its SE and df over queries and seeds (one seed: over queries, conditional on
that seed; `generalises`), a 95% CI and a two-sided p. Within each family of m tested pairs (for
this metric):
- `p_adjusted`: Holm (default) or BH across the family; `result` "better" / "worse" (the `of` point
  significantly better / worse than its `vs` point, corrected, in the metric's mode) or "n.s.",
  "untested" without per-query values;
- `ci_low_corrected`/`ci_high_corrected`: the (1 − α/m) CI (Bonferroni, simultaneous for the family);
  `mde`: the minimum detectable difference at 80% power at the same level α/m, from the same SE/df;
- `margin` (declared with the contrast): TOST at α/m, `tost_p` and `equivalent` (|difference| <
  margin shown: the (1 − 2α/m) CI lies inside ±margin);
- `decision`: what a finding reads — "better"/"worse" when the corrected CI excludes 0,
  "equivalent" when TOST says so, else "inconclusive" (Bonferroni never rejects where Holm does not,
  so a "better" decision always has a "better" result; Holm may call a pair whose corrected CI still
  holds 0);
- `control` ("positive" / "aa", study/space/schema.py `ContrastSpec`) with `control_status` pass / fail:
  a positive control passes when its decision is significant (in its `expect` direction when
  declared), an A/A control when it is not. A control is a family of its own unless it names one.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from study.space.contrasts import DEFAULT_FAMILY, contrast_name, describe, pair_points, same_value
import study.report.stats as stats
from study.report.best import check_mode
from study.report.runs import PerQuery
from study.report.cells import cell_values, paired_values
from study.report.sensitivity import CORRECTION, SIGNIFICANCE
from study.report.text import is_missing, markdown_table, plain

COLUMNS = ["family", "contrast", "of", "vs", "at", "of_point", "vs_point", "mean_of", "mean_vs", "difference",
           "ci_low", "ci_high", "p_value", "p_adjusted", "n_queries", "n_seeds", "mde", "sd_seed", "result",
           "se", "df", "generalises", "family_size", "ci_low_corrected", "ci_high_corrected", "margin", "tost_p",
           "equivalent", "decision", "control", "expect", "control_status"]
RESULTS = ("better", "worse", "n.s.", "untested")
DECISIONS = ("better", "worse", "equivalent", "inconclusive", "untested")
UNABLE_TO_DECIDE = "unable to decide"   # a study whose positive control missed or whose A/A control hit


def _points(trials: pd.DataFrame, metric: str) -> list[tuple[Any, pd.DataFrame]]:
    """(point id, its finished runs with the metric), in first-run order."""
    data = trials.dropna(subset=[metric])
    key = data["point"] if "point" in data.columns else data["trial_id"]
    return list(data.groupby(key, sort=False))


def declared_contrasts(trials: pd.DataFrame, per_query: PerQuery | None, metric: str,
                       contrasts: Sequence[Mapping[str, Any]], *, params: Sequence[str] = (), mode: str = "max",
                       correction: str = CORRECTION, significance: float = SIGNIFICANCE) -> tuple[pd.DataFrame, list[str]]:
    """(one row per tested pair, notes): the declared contrasts of a study on `metric` (columns: COLUMNS).

    `params` are the fields that tell the study's points apart (`varying_params`). `vs` names the
    baseline point by the contrast's `vs` fields, `of` the compared point by those and every other
    field of `params` (not held by `within`) that differs from its baseline or between the
    contrast's compared points (γ1, α of a WKL cell), `at` by the `within` values; `of_point`/`vs_point` hold all of them, for a
    finding to select rows by.
    """
    check_mode(mode)
    points = _points(trials, metric)
    declared = {f for c in contrasts for f in [*(c.get("of") or {}), *c["vs"], *(c.get("within") or [])]}
    missing = sorted(f for f in declared if f not in trials.columns)
    if missing:
        return pd.DataFrame(columns=COLUMNS), [f"declared contrasts: trials have no column(s) {', '.join(missing)}"]
    fields = list(dict.fromkeys([*(p for p in params if p in trials.columns), *sorted(declared)]))
    values = [{f: plain(runs[f].iloc[0]) for f in fields} for _, runs in points]
    rows, notes, cells = [], [], {}
    for spec in contrasts:
        name = contrast_name(spec)
        family = spec.get("family") or (f"control: {name}" if spec.get("control") else DEFAULT_FAMILY)
        pairs, problems = pair_points(values, spec)
        notes += [f"contrast {name}: {p}" for p in problems]
        within = list(spec.get("within") or [])
        # a field that tells this contrast's `of` points apart names each of them (γ1 and α of WKL cells)
        apart = {k for k in fields if len({repr(values[i][k]) for i, _ in pairs}) > 1}
        for i, j in pairs:
            of_runs, vs_runs = points[i][1], points[j][1]
            for index, runs in ((i, of_runs), (j, vs_runs)):
                if index not in cells:
                    cells[index] = cell_values(runs, per_query or {}, metric)
            row = {"family": family, "contrast": name,
                   "of": describe({k: values[i][k] for k in [*spec["vs"], *fields] if k in spec["vs"] or (
                       k not in within and (k in apart or not same_value(values[i][k], values[j][k])))}),
                   "vs": describe({k: values[j][k] for k in spec["vs"]}),
                   "at": describe({f: values[i][f] for f in within}),
                   "of_point": values[i], "vs_point": values[j],
                   "mean_of": float(of_runs[metric].mean()), "mean_vs": float(vs_runs[metric].mean()),
                   "margin": _number(spec.get("margin")), "control": spec.get("control"), "expect": spec.get("expect")}
            row.update(_test(cells[i], cells[j], row))
            rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table, notes
    for family, index in table.groupby("family", sort=False).groups.items():
        table.loc[index, "p_adjusted"] = stats.adjust_p_values(table.loc[index, "p_value"].to_numpy(float), correction)
        table.loc[index, "family_size"] = int(table.loc[index, "p_value"].notna().sum())
    table["result"] = [_result(d, p, mode, significance) for d, p in zip(table["difference"], table["p_adjusted"])]
    corrected = pd.DataFrame([_corrected(row, significance) for row in table.to_dict("records")], index=table.index)
    for column in corrected.columns:
        table[column] = corrected[column]
    table["decision"] = [_decision(r, mode) for r in table.to_dict("records")]
    table["control_status"] = [control_status(r) for r in table.to_dict("records")]
    table.attrs.update(metric=metric, mode=mode, correction=correction, significance=significance)
    return table, notes


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _corrected(row: Mapping[str, Any], significance: float) -> dict[str, Any]:
    """The family-corrected CI, MDE and TOST of one row: all at α/m from the row's SE and df."""
    m, se, df, d = row["family_size"], row["se"], row["df"], row["difference"]
    if is_missing(row["p_value"]) or not m:
        return dict(ci_low_corrected=math.nan, ci_high_corrected=math.nan, mde=math.nan, tost_p=math.nan,
                    equivalent=False)
    level = significance / m
    low, high = stats.interval(d, se, df, level)
    tost = stats.equivalence_p(d, se, df, row["margin"]) if not is_missing(row["margin"]) else math.nan
    return dict(ci_low_corrected=low, ci_high_corrected=high, tost_p=tost,
                mde=stats.minimum_detectable_difference(se, df, significance, family_size=int(m)),
                equivalent=bool(not is_missing(tost) and tost < level))


def _decision(row: Mapping[str, Any], mode: str) -> str:
    """better / worse (corrected CI excludes 0, in the metric's mode), equivalent (TOST), inconclusive, untested."""
    low, high = row["ci_low_corrected"], row["ci_high_corrected"]
    if is_missing(low):
        return "untested"
    if low > 0 or high < 0:
        ahead = low > 0 if mode == "max" else high < 0
        return "better" if ahead else "worse"
    return "equivalent" if row["equivalent"] else "inconclusive"


def control_status(row: Mapping[str, Any]) -> str | None:
    """A control row: "pass" / "fail" / "untested"; None for a contrast that is not a control."""
    kind, decision = row.get("control"), row.get("decision")
    if not isinstance(kind, str) or not kind:
        return None
    if decision == "untested":
        return "untested"
    significant = decision in ("better", "worse")
    if kind == "aa":
        return "fail" if significant else "pass"
    expect = row.get("expect")
    wanted = significant and (not isinstance(expect, str) or decision == expect)
    return "pass" if wanted else "fail"


def controls_verdict(table: pd.DataFrame | None) -> tuple[bool, list[str]]:
    """(able to decide, one line per control): False when a positive control missed or an A/A control hit."""
    if table is None or table.empty or "control_status" not in table.columns:
        return True, []
    lines, able = [], True
    for r in table[table["control_status"].notna()].itertuples():
        what = "positive control (must be significant)" if r.control == "positive" else "A/A control (must not be)"
        lines.append(f"{r.contrast} ({r.of} vs {r.vs}{'; ' + r.at if r.at else ''}): {what}: {r.decision}, "
                     f"{r.control_status}")
        able &= r.control_status != "fail"
    return able, lines


def _test(a: pd.DataFrame | None, b: pd.DataFrame | None, row: Mapping[str, Any]) -> dict[str, Any]:
    """The pair's paired contrast (or means only without per-query values)."""
    nan = math.nan
    if a is None or b is None:
        return dict(difference=row["mean_of"] - row["mean_vs"], ci_low=nan, ci_high=nan, p_value=nan,
                    p_adjusted=nan, n_queries=0, n_seeds=0, mde=nan, sd_seed=nan, se=nan, df=nan, generalises="")
    contrast = stats.paired_contrast(*paired_values(a, b))
    return dict(difference=contrast.difference, ci_low=contrast.low, ci_high=contrast.high, p_value=contrast.p_value,
                p_adjusted=nan, n_queries=contrast.n_queries, n_seeds=contrast.n_seeds, mde=nan,
                sd_seed=contrast.sd_seed, se=contrast.se, df=contrast.df, generalises=contrast.generalises_over)


def _result(difference: float, p_adjusted: float, mode: str, significance: float) -> str:
    if is_missing(p_adjusted):
        return "untested"
    if p_adjusted >= significance:
        return "n.s."
    ahead = difference > 0 if mode == "max" else difference < 0
    return "better" if ahead else "worse"


def contrasts_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """The rows as a Markdown table: pair, means, difference [corrected CI], raw and corrected p, MDE, TOST, result."""
    def number(value: float, fmt: str = f".{digits}f") -> str:
        return "—" if is_missing(value) else format(value, fmt)

    rows = [[r.family, r.contrast + (f" ({r.control} control)" if isinstance(r.control, str) else ""), r.of, r.vs,
             r.at or "—", number(r.mean_of), number(r.mean_vs),
             f"{number(r.difference, f'+.{digits}f')} [{number(r.ci_low_corrected, f'+.{digits}f')}, "
             f"{number(r.ci_high_corrected, f'+.{digits}f')}]", number(r.p_value, ".3g"), number(r.p_adjusted, ".3g"),
             number(r.mde), tost_text(r.margin, r.tost_p, r.equivalent, digits),
             f"{int(r.n_queries)} × {int(r.n_seeds)}", r.result, r.decision]
            for r in table.itertuples()]
    return markdown_table(["family", "contrast", "of", "vs", "at", "mean of", "mean vs", "difference [corrected CI]",
                           "p", "corrected p", "MDE", "TOST vs margin", "queries × seeds", "result", "decision"], rows)


def tost_text(margin: float, tost_p: float, equivalent: bool, digits: int = 4) -> str:
    """`equivalent within ±0.0050 (p 0.003)`, `not shown within ±0.0050 (p 0.21)`, or `no margin`."""
    if is_missing(margin):
        return "no margin"
    if is_missing(tost_p):
        return f"±{margin:.{digits}f}, untested"
    return f"{'equivalent' if equivalent else 'not shown'} within ±{margin:.{digits}f} (p {tost_p:.3g})"


def contrasts_legend(table: pd.DataFrame) -> str:
    correction = stats.CORRECTIONS[table.attrs.get("correction", CORRECTION)]
    significance = table.attrs.get("significance", SIGNIFICANCE)
    return (f"Declared in the space before the study ran (`study.contrasts`). difference = mean of − mean vs "
            f"on the queries and seed replicates both points have; test: two-sided paired t-test over queries and "
            f"seeds (SE from the query and seed variance components, Satterthwaite df; with one seed over queries "
            f"only, conditional on that seed); corrected CI: (1 − {significance:g}/m) for a family of m pairs "
            f"(Bonferroni); corrected p: {correction} within each family, for this metric; MDE: the difference "
            f"this test detects with {stats.POWER:.0%} power at the corrected level {significance:g}/m; TOST: two "
            f"one-sided tests at {significance:g}/m against the contrast's declared margin; result: better / worse "
            f"= corrected p < {significance:g}, n.s. otherwise; decision (what a finding reads): better / worse = "
            "the corrected CI excludes 0, equivalent = TOST within the margin, inconclusive otherwise. A control "
            "contrast is its own family.")


def median_mde(table: pd.DataFrame) -> float:
    """The median MDE over a table's tested pairs (NaN when none was tested)."""
    finite = table["mde"].to_numpy(dtype=float) if len(table) else np.array([])
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan
