"""Replicates: every configuration point of a study runs with `study.replicates` seeds.

A point is the searched values of a trial without its seed; its replicates are Tune trials whose
config carries REPLICATE_KEY = r (0..N-1) and train with `seed = base seed + r` (training seed and
sampling seed: `trainables.train.epoch_plan` draws query order and candidates from the trial's seed, so
every configuration of one replicate sees the same query order and the comparisons stay paired;
replicate 0 is the base seed, so a one-seed study trains exactly as before).

`point_id` names a point (the MLflow tag POINT_TAG of its seed runs), `point_mean` is what the
searcher tells Optuna (the mean over seeds, one value per point), `bootstrap_interval` the 95%
interval a point run shows. Light to import: numpy only, loaded inside the functions.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

REPLICATE_KEY = "replicate"     # in a Tune trial's config: the replicate index (not a TrialConfig field)


def searched_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """A Tune trial config without its replicate index: the point's searched values."""
    return {k: v for k, v in config.items() if k != REPLICATE_KEY}


def replicate_of(config: Mapping[str, Any]) -> int:
    """The replicate index of a Tune trial config (0 in a one-seed study)."""
    return int(config.get(REPLICATE_KEY, 0))


def replicate_seed(base_seed: int, replicate: int) -> int:
    """Replicate r trains with the base seed + r: replicate 0 is the one-seed study's trial."""
    return base_seed + replicate


def base_seed_of(trained_seed: int, replicate: int) -> int:
    """The point's own seed (a searched `seed`, e.g. an A/A control's block) from the seed replicate r trained
    with, as a run logs it: `replicate_seed` undone."""
    return int(trained_seed) - int(replicate)


def point_id(config: Mapping[str, Any]) -> str:
    """A stable id of a configuration point: a hash of its searched values (numbers compared by value).

    The same for every replicate of the point and across driver restarts; 2 and 2.0 are one point
    (Optuna hands back a stepped float as 2.0, a points_to_evaluate entry may say 2).
    """
    def canonical(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        return float(value)

    values = sorted((k, canonical(v)) for k, v in searched_values(config).items())
    return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:12]


def point_mean(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The mean over seeds of each numeric key every result has (what Optuna is told for the point)."""
    out: dict[str, float] = {}
    for key in keys:
        values = [r.get(key) for r in results]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = float(sum(values) / len(values))
    return out


def bootstrap_interval(per_seed: Sequence[Mapping[str, float]], *, resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float, int] | None:
    """Mean and bootstrap interval of a metric over queries and seeds; (mean, low, high, n queries).

    `per_seed[s] = {qid: value}`; queries every seed scored, resampled with the seeds as in
    `study.report.stats.bootstrap_ci` (the interval holds both the query sampling and the
    seed-to-seed variance). None without a query common to all seeds.
    """
    import numpy as np

    from study.report.stats import bootstrap_ci

    qids = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    if not qids:
        return None
    table = np.array([[p[q] for p in per_seed] for q in qids], dtype=float)   # [queries, seeds]
    low, high = bootstrap_ci(table, confidence=level, n_resamples=resamples, seed=seed)
    return float(table.mean()), low, high, len(qids)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
