"""How a report names and prints things: metric and axis labels, numbers, table order, Markdown tables."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from study.report.best import BEIR_NDCG_AT_10_AVG
from trainables.registry import labels

# Table order: the registry's (samplers, then losses: the papers' built-ins first, then installed plugins');
# anything else follows alphabetically.
KNOWN_ORDER = tuple(labels())
AXIS_LABELS = {
    "loss.gamma1": "γ1 (loss.gamma1)",
    "loss.alpha": "α (loss.alpha)",
    "sampler.name": "sampler",
    "sampler.k": "K (sampler.k)",
    "loss.name": "loss",
}
SHORT_AXIS = {"loss.gamma1": "γ1", "loss.alpha": "α", "sampler.name": "sampler", "sampler.k": "K",
              "loss.name": "loss"}
MEASURE_LABELS = {"mrr_at_10": "MRR@10", "ndcg_at_10": "nDCG@10", "recall_at_1000": "R@1000"}


def metric_label(key: str) -> str:
    """Readable name of a metric key: `dev_mrr_at_10` → `Dev MRR@10`, `beir/x/ndcg_at_10` → `BEIR x nDCG@10`."""
    suffix = ""
    subset = re.fullmatch(r"(.*)_subset(\d+)", key)
    if subset:
        key, suffix = subset.group(1), f" (judged + {subset.group(2)} distractors)"
    if key == BEIR_NDCG_AT_10_AVG:
        return "BEIR nDCG@10 (avg)" + suffix
    if key.startswith("beir/") and key.count("/") == 2:
        _, dataset, measure = key.split("/")
        return f"BEIR {dataset} {MEASURE_LABELS.get(measure, measure)}" + suffix
    for measure, label in MEASURE_LABELS.items():
        if key.endswith("_" + measure):
            prefix = key[: -len(measure) - 1]
            return f"{'Dev' if prefix == 'dev' else prefix} {label}" + suffix
    return key + suffix


def better(mode: str) -> str:
    """The direction `mode` prefers, in words: "higher" or "lower"."""
    return "higher" if mode == "max" else "lower"


def axis_label(name: str) -> str:
    return AXIS_LABELS.get(name, name)


def corner(rows: str, cols: str) -> str:
    """The top-left cell of a rows × cols table: `γ1 \\ α`."""
    return f"{SHORT_AXIS.get(rows, rows)} \\ {SHORT_AXIS.get(cols, cols)}"


def fmt_label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def fmt_number(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to `digits` (significant ones from 1000 up), "—" for a missing one."""
    if isinstance(value, (float, np.floating)):
        return "—" if pd.isna(value) else f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return fmt_label(value)


def ordered(values: Iterable[Any]) -> list[Any]:
    """Distinct values in table order: numbers ascending, names in the papers' order, then alphabetically."""
    values = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    rank = {name: i for i, name in enumerate(KNOWN_ORDER)}
    return sorted(values, key=lambda v: (rank.get(str(v), len(rank)), str(v)))


def slug(value: Any) -> str:
    """A file-name-safe form of a value (metric keys, loss names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def frame_to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table (pandas' own needs `tabulate`, which the project does not install)."""
    return markdown_table([str(c) for c in frame.columns],
                          ([fmt_number(v, digits) for v in row] for row in frame.itertuples(index=False)))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for YAML)."""
    return value.item() if isinstance(value, np.generic) else value


def key_params(trial: pd.Series) -> str:
    """` (loss.name=wkl, loss.gamma1=5, ...)`: the fields that tell a trial apart, or "" when it has none."""
    keys = [k for k in ("loss.name", "loss.gamma1", "loss.alpha", "sampler.name", "sampler.k", "seed")
            if k in trial.index and not is_missing(trial[k])]
    return (" (" + ", ".join(f"{k}={fmt_label(trial[k])}" for k in keys) + ")") if keys else ""


def seeds_note(report) -> str:
    """` (mean over 2 seed runs of point p1)` when the best is a point with replicates, else ""."""
    best, trials = report.best, report.study.trials
    if "point" not in best.index or "point" not in trials.columns:
        return ""
    n = int((trials["point"] == best["point"]).sum())
    return f" (mean over {n} seed runs of point `{best['point']}`)" if n > 1 else ""
