"""Learning curves: the steps a trial evaluates at, and the report's table and flags (study/report/curves.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from study.report.curves import (CURVE_NOISE, FLAG_BELOW_BEST, FLAG_BELOW_UNTRAINED, curve_metric, curve_table,
                                 curves_section)
from trainables.config import ConfigError, EvalConfig, TrialConfig
from trainables.outputs import curve_best_key, curve_metric_key, final_metric_keys
from trainables.train.loop import Best, reports_due

METRIC = "dev_mrr_at_10_subset500"


def test_curve_steps_are_the_fractions_of_the_budget():
    cfg = EvalConfig(at_fractions=[1.0, 0.125, 0.25, 0.5, 0.75, 0.25])
    assert cfg.at_fractions == [0.125, 0.25, 0.5, 0.75, 1.0]
    assert cfg.curve_steps(88) == [11, 22, 44, 66, 88]      # ¼, ½, 1, 1½, 2 epochs of 44 steps
    assert cfg.curve_steps(3) == [1, 2, 3]                   # never step 0, never past the end
    assert EvalConfig(dev=None).curve_steps(88) == []        # no selection set, no curve
    with pytest.raises(ConfigError, match=r"eval\.at_fractions"):
        TrialConfig.from_dict({"eval": {"at_fractions": [0.0, 0.5]}})


def test_curve_points_evaluate_the_selection_set_only():
    cfg = TrialConfig.from_dict({"eval": {"at_fractions": [0.5, 1.0], "every_steps": 4},
                                 "optim": {"log_every_steps": 100}})
    curve = frozenset(cfg.eval.curve_steps(10))
    due = {step: reports_due(step, cfg, 10, 5, curve)[1] for step in range(1, 11)}
    # every_steps evaluates every set (pruning reads it); the curve point at step 5 only the dev set;
    # the final evaluation (step 10) follows the loop.
    assert due == {1: None, 2: None, 3: None, 4: "all", 5: "selection", 6: None, 7: None, 8: "all", 9: None,
                   10: None}


def test_best_point_keeps_the_earliest_maximum_and_is_a_rankable_metric():
    best = Best()
    for step, value in [(2, 0.40), (4, 0.55), (6, 0.55), (8, 0.50)]:
        best.update({METRIC: value}, METRIC, step)
    assert best.report(METRIC) == {curve_best_key(METRIC): 0.55, "best_step": 4}
    assert Best().report(METRIC) == {} and best.report(None) == {}
    eval_cfg = EvalConfig(subset_distractors=500)
    assert curve_metric_key(eval_cfg) == METRIC.replace("_subset500", "") + "_subset500"
    assert curve_best_key(curve_metric_key(eval_cfg)) in final_metric_keys(eval_cfg)


def _crafted():
    trials = pd.DataFrame({"run_id": ["r1", "r2", "r3"], "trial_id": ["t1", "t2", "t3"],
                           "loss.name": ["kl", "kl", "margin_mse"], "sampler.name": ["stratified"] * 3,
                           "sampler.k": [8, 8, 16]})
    curves = {"r1": [0.45, 0.50, 0.52, 0.55],     # learns: no flag
              "r2": [0.50, 0.56, 0.53, 0.54],     # ends 0.02 below its best point
              "r3": [0.385, 0.39, 0.383, 0.385]}  # never learns: ends below the untrained student (0.40)
    points = pd.DataFrame([{"run_id": r, "step": s, "value": v} for r, values in curves.items()
                           for s, v in zip([11, 22, 44, 88], values)])
    return curve_table(trials, points, {"untrained": 0.40, "teacher": 0.79}, METRIC)


def test_report_flags_trials_that_end_below_their_best_or_the_untrained_student():
    curves = _crafted()
    table = curves.table.set_index("trial_id")
    assert table.loc["t1", "flags"] == ""
    assert table.loc["t2", "flags"] == FLAG_BELOW_BEST
    assert table.loc["t2", "best earlier"] == 0.56 and table.loc["t2", "best earlier step"] == 22
    assert table.loc["t3", "flags"] == FLAG_BELOW_UNTRAINED    # within the noise of its best point
    assert table.loc["t3", "largest drop"] == pytest.approx(0.007)
    assert list(table.columns[2:6]) == ["step 11", "step 22", "step 44", "step 88"]
    assert set(table["group"]) == {"kl / stratified / K=8", "margin_mse / stratified / K=16"}
    assert list(curves.flagged["trial_id"]) == ["t2", "t3"]


def test_a_dip_within_the_noise_margin_is_not_flagged():
    trials = pd.DataFrame({"run_id": ["r"], "trial_id": ["t"]})
    points = pd.DataFrame({"run_id": ["r"] * 3, "step": [1, 2, 3], "value": [0.5, 0.6, 0.6 - CURVE_NOISE / 2]})
    curves = curve_table(trials, points, {"untrained": 0.4}, METRIC)
    assert curves.table.loc[0, "flags"] == "" and curves.table.loc[0, "group"] == "all trials"


def test_curves_section_writes_a_figure_and_a_table(tmp_path):
    lines, files = curves_section(_crafted())
    text = "\n".join(lines)
    assert "![learning curves](learning_curves.png)" in text and "2 of 3 trials flagged" in text
    assert files["learning_curves.png"](tmp_path / "c.png").stat().st_size > 1000
    assert list(files["learning_curves.csv"]["trial_id"]) == ["t1", "t2", "t3"]


def test_curve_metric_prefers_the_study_metric():
    names = ["beir_ndcg_at_10_avg", "dev_mrr_at_10", "dev_mrr_at_10_best", "dev_ndcg_at_10"]
    assert curve_metric(names) == "dev_mrr_at_10"
    assert curve_metric(names, "dev_mrr_at_10_best") == "dev_mrr_at_10"
    assert curve_metric(["beir_ndcg_at_10_avg"]) is None


def test_learning_curves_read_metric_histories_and_references_from_the_store(tmp_path_factory):
    """Through a real MLflow store: each trial's curve is its metric history by step; references from the parent."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from test_report import KL_ONLY, make_study_store

    from study.report.curves import learning_curves
    from study.report.runs import load_study_runs

    store = make_study_store(tmp_path_factory.mktemp("store"), tmp_path_factory.getbasetemp())
    client = MlflowClient(store.uri)
    study = load_study_runs(KL_ONLY, store.uri)
    first, second = study.trials["run_id"]
    for run_id, values in ((first, [0.30, 0.45, 0.50]), (second, [0.45, 0.40, 0.20])):
        client.log_batch(run_id, metrics=[Metric("dev_mrr_at_10", v, 1000 + s, s) for s, v in zip([5, 10, 20], values)])
    client.log_metric(store.kl_only_parent_id, "reference/untrained/dev_mrr_at_10", 0.25, step=0)

    curves = learning_curves(load_study_runs(KL_ONLY, store.uri))
    assert curves.metric == "dev_mrr_at_10" and curves.references == {"untrained": 0.25}
    table = curves.table.set_index("run_id")
    assert [c for c in table.columns if c.startswith("step ")] == ["step 0", "step 5", "step 10", "step 20"]
    assert table.loc[first, "final"] == 0.50 and table.loc[first, "flags"] == ""
    assert table.loc[second, "final"] == 0.20
    assert table.loc[second, "flags"] == f"{FLAG_BELOW_BEST}, {FLAG_BELOW_UNTRAINED}"
