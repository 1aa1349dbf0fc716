"""Learning curves of a study's trials: the selection metric by step, per configuration group, with references.

Every trial evaluates its dev (selection) set at `eval.at_fractions` of its budget; the MLflow
callback logs each report at its step, so a trial's curve is the metric history of
`outputs.curve_metric_key` (the final evaluation is its last point). The study's parent run holds
the reference points (`outputs.reference_key`: the untrained student, the teacher) on the same set.

A trial is flagged when its student ends below its own best earlier point by more than
`CURVE_NOISE`, or below the untrained student: either way more training made it worse.
`CURVE_NOISE` = 0.01 RR@10: on a 100-query selection set one query whose first relevant passage
moves from rank 1 to rank 2 moves RR@10 by 0.005, so 0.01 is two such moves; smaller dips are
read as noise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.report.text import frame_to_markdown, metric_label
from trainables.outputs import BEST_SUFFIX, CURVE_MEASURE, REFERENCE_ROLES, reference_key

CURVE_NOISE = 0.01
GROUP_PARAMS = ("loss.name", "sampler.name", "sampler.k")   # a configuration group: the papers' axes
FLAG_BELOW_BEST = "ends below its best"
FLAG_BELOW_UNTRAINED = "ends below untrained"
_CURVE_KEY = re.compile(rf"dev_{CURVE_MEASURE}(_subset\d+)?")


@dataclass
class LearningCurves:
    """Trials' curves of `metric` (long frame `points`: run_id, trial_id, group, step, value), the
    references {role: value}, and `table`: one row per trial with its points, final, best and flags."""

    metric: str
    points: pd.DataFrame
    references: dict[str, float]
    table: pd.DataFrame
    noise: float = CURVE_NOISE
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> pd.DataFrame:
        return self.table[self.table["flags"] != ""]


def curve_metric(metric_names, study_metric: str | None = None) -> str | None:
    """The curve's metric key among a study's metrics: the study metric when it is the dev RR@10 (or its
    `_best`), else the first dev RR@10 key; None when the trials report none."""
    names = list(metric_names)
    if study_metric is not None:
        plain = study_metric.removesuffix(BEST_SUFFIX)
        if _CURVE_KEY.fullmatch(plain):
            return plain
    return next((name for name in names if _CURVE_KEY.fullmatch(name)), None)


def load_curve_points(tracking_uri: str, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The metric history of every trial run: run_id, step, value (a step logged twice, by a resumed
    trial, keeps its last value)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = []
    for run_id in trials["run_id"]:
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
        latest = {m.step: m.value for m in history}
        rows += [{"run_id": run_id, "step": step, "value": value} for step, value in latest.items()]
    return pd.DataFrame(rows, columns=["run_id", "step", "value"])


def load_references(tracking_uri: str, parent_run_id: str, metric: str) -> dict[str, float]:
    """{role: value} of the reference points the study logged on its parent run for `metric`."""
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(tracking_uri=tracking_uri).get_run(parent_run_id).data.metrics
    return {role: logged[reference_key(role, metric)] for role in REFERENCE_ROLES
            if reference_key(role, metric) in logged}


def group_label(row: pd.Series) -> str:
    """`kl / stratified / K=8`: the trial's configuration group (the params it has of GROUP_PARAMS)."""
    parts = []
    for param in GROUP_PARAMS:
        if param in row.index and not pd.isna(row[param]):
            value = row[param]
            if param == "sampler.k":
                parts.append(f"K={int(value)}")
            else:
                parts.append(str(value))
    return " / ".join(parts) or "all trials"


def curve_table(trials: pd.DataFrame, points: pd.DataFrame, references: dict[str, float], metric: str,
                noise: float = CURVE_NOISE) -> LearningCurves:
    """Per trial: its value at each step, final value, best earlier point, largest point-to-point drop, flags."""
    groups = {row["run_id"]: group_label(row) for _, row in trials.iterrows()}
    trial_ids = dict(zip(trials["run_id"], trials["trial_id"]))
    points = points[points["run_id"].isin(groups)].sort_values(["run_id", "step"])
    points = points.assign(trial_id=points["run_id"].map(trial_ids), group=points["run_id"].map(groups))
    untrained = references.get("untrained")
    rows = []
    for run_id, curve in points.groupby("run_id", sort=False):
        values = curve["value"].to_numpy(dtype=float)
        steps = curve["step"].to_numpy()
        final = values[-1]
        earlier = values[:-1]
        best_earlier = float(earlier.max()) if len(earlier) else np.nan
        drops = -np.diff(values)
        flags = []
        if len(earlier) and final < best_earlier - noise:
            flags.append(FLAG_BELOW_BEST)
        if untrained is not None and final < untrained:
            flags.append(FLAG_BELOW_UNTRAINED)
        row = {"group": groups[run_id], "trial_id": trial_ids[run_id], "run_id": run_id}
        row.update({f"step {int(s)}": v for s, v in zip(steps, values)})
        row.update({"final": final, "best earlier": best_earlier,
                    "best earlier step": int(steps[:-1][earlier.argmax()]) if len(earlier) else None,
                    "largest drop": float(drops.max()) if len(drops) else 0.0, "flags": ", ".join(flags)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        step_columns = sorted((c for c in table.columns if c.startswith("step ")), key=lambda c: int(c[5:]))
        fixed = ["group", "trial_id", "run_id"]
        rest = [c for c in table.columns if c not in fixed and c not in step_columns]
        table = table[fixed + step_columns + rest].sort_values(["group", "trial_id"], kind="stable")
        table = table.reset_index(drop=True)
    notes = [] if untrained is not None else [f"no untrained-student reference for {metric} on the parent run"]
    return LearningCurves(metric, points.reset_index(drop=True), references, table, noise, notes)


def learning_curves(study, metric: str | None = None) -> LearningCurves | None:
    """A study's learning curves (`study`: `runs.StudyRuns`), or None when its trials log no curve metric."""
    key = curve_metric(study.metric_names, metric)
    if key is None or study.trials.empty:
        return None
    points = load_curve_points(study.tracking_uri, study.trials, key)
    references = load_references(study.tracking_uri, study.parent_run_id, key)
    return curve_table(study.trials, points, references, key)


def plot_curves(curves: LearningCurves, path: str | Path) -> Path:
    """One panel per configuration group: each trial's curve, the references as horizontal lines."""
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(curves.table["group"])) or ["all trials"]
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.6), dpi=130, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    styles = {"untrained": ("#d62728", "--"), "teacher": ("#2ca02c", ":")}
    for ax, group in zip(axes, groups):
        for trial_id, curve in curves.points[curves.points["group"] == group].groupby("trial_id", sort=False):
            ax.plot(curve["step"], curve["value"], marker="o", markersize=3, linewidth=1.2, label=str(trial_id))
        for role, value in curves.references.items():
            color, style = styles.get(role, ("#555555", "-."))
            ax.axhline(value, color=color, linestyle=style, linewidth=1, label=role)
        ax.set_title(group, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.supxlabel("training step", fontsize=9)
    fig.supylabel(metric_label(curves.metric), fontsize=9)
    fig.suptitle("Learning curves on the selection set", fontsize=11)
    path = Path(path)
    fig.savefig(path)
    return path


def curves_section(curves: LearningCurves) -> tuple[list[str], dict]:
    """The report's learning-curve section: (Markdown lines, {file name: table or figure writer})."""
    shown = curves.table.assign(run_id=curves.table["run_id"].str[:8])
    table = frame_to_markdown(shown, digits=3)
    refs = ", ".join(f"{role} {value:.3f}" for role, value in curves.references.items()) or "none logged"
    flagged = curves.flagged
    lines = ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
             f"{metric_label(curves.metric)} (`{curves.metric}`) on the selection set at each evaluated step; "
             f"the last point is the final evaluation. References (same set): {refs}. A trial is flagged when it "
             f"ends more than {curves.noise:g} below its best earlier point, or below the untrained student.", "",
             table, ""]
    if len(flagged):
        lines += [f"**{len(flagged)} of {len(curves.table)} trials flagged**: "
                  + "; ".join(f"`{t}` ({f})" for t, f in zip(flagged["trial_id"], flagged["flags"])), ""]
    lines += ["Files: [learning_curves.csv](learning_curves.csv), [learning_curves.md](learning_curves.md)", ""]
    return lines, {"learning_curves.csv": curves.table,
                   "learning_curves.md": f"# Learning curves\n\n{table}\n",
                   "learning_curves.png": lambda path: plot_curves(curves, path)}
