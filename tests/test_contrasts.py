"""Declared contrasts (`study.contrasts`): the pairing, its validation in the space, and the report's tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from study.space.contrasts import contrast_name, pair_points
from study.report.contrasts import contrasts_markdown, declared_contrasts, median_mde
from study.report.runs import study_contrasts
from study.report.stats import adjust_p_values
from study.space.schema import load_space
from study.track.tracking import _param_value
from trainables.config import ConfigError

STRATIFIED_VS_RANDOM = {"name": "stratified_vs_random", "of": {"sampler.name": "stratified"},
                        "vs": {"sampler.name": "random"}, "within": ["loss.name", "sampler.k"]}
STRATIFIED_VS_TOPK = {"name": "stratified_vs_topk", "of": {"sampler.name": "stratified"},
                      "vs": {"sampler.name": "topk"}, "within": ["loss.name", "sampler.k"]}


def _grid(samplers=("topk", "random", "stratified"), ks=(8, 16), losses=("kl", "margin_mse")) -> list[dict]:
    return [{"sampler.name": s, "sampler.k": k, "loss.name": loss} for s in samplers for k in ks for loss in losses]


# ---- pairing ----------------------------------------------------------------------------------------
def test_each_of_point_meets_the_vs_point_at_its_within_values():
    points = _grid()
    pairs, problems = pair_points(points, STRATIFIED_VS_RANDOM)
    assert problems == [] and len(pairs) == 4
    for i, j in pairs:
        assert points[i]["sampler.name"] == "stratified" and points[j]["sampler.name"] == "random"
        assert (points[i]["sampler.k"], points[i]["loss.name"]) == (points[j]["sampler.k"], points[j]["loss.name"])
    # 8 == 8.0: a logged float param pairs with the space file's int
    floats = [{**p, "sampler.k": float(p["sampler.k"])} if p["sampler.name"] == "random" else p for p in points]
    assert len(pair_points(floats, STRATIFIED_VS_RANDOM)[0]) == 4


def test_a_missing_within_field_makes_the_partner_ambiguous():
    pairs, problems = pair_points(_grid(), {**STRATIFIED_VS_RANDOM, "within": ["loss.name"]})
    assert pairs == [] and len(problems) == 4 and "has 2 `vs` points" in problems[0] and "within" in problems[0]


def test_without_of_every_other_point_meets_the_one_baseline():
    points = [{"loss.name": "kl", "loss.gamma1": 0.0}, {"loss.name": "margin_mse", "loss.gamma1": 0.0},
              {"loss.name": "wkl", "loss.gamma1": 1.0}, {"loss.name": "wkl", "loss.gamma1": 5.0}]
    pairs, problems = pair_points(points, {"vs": {"loss.name": "kl"}})
    assert problems == [] and pairs == [(1, 0), (2, 0), (3, 0)]
    assert contrast_name({"vs": {"loss.name": "kl"}}) == "every other point vs loss.name=kl"


# ---- the space --------------------------------------------------------------------------------------
def _space(tmp_path: Path, contrasts: list, algorithm: str = "grid") -> Path:
    path = tmp_path / "s.yaml"
    study = {"name": "s", "algorithm": algorithm, "contrasts": contrasts}
    space = {"base": {"data": {"pool_depth": 20}, "sampler": {"k": 4}}, "study": study}
    grid = {"sampler.name": ["topk", "random", "stratified"], "sampler.k": [4, 8], "loss.name": ["kl", "margin_mse"]}
    if algorithm == "grid":
        study["grid"] = grid
    else:
        space["search"] = {k: {"type": "categorical", "choices": v} for k, v in grid.items()}
        study["num_samples"] = 4
    path.write_text(yaml.safe_dump(space))
    return path


def test_declared_contrasts_load_with_the_space(tmp_path):
    space = load_space(_space(tmp_path, [STRATIFIED_VS_RANDOM, STRATIFIED_VS_TOPK]))
    assert [c.name for c in space.study.contrasts] == ["stratified_vs_random", "stratified_vs_topk"]
    assert space.study.contrasts[0].within == ["loss.name", "sampler.k"]
    # logged on the parent run as JSON (runner._space_params) and read back by the report
    logged = _param_value(space.study.model_dump(mode="json")["contrasts"])
    assert [c["name"] for c in study_contrasts({"study.contrasts": logged})] == ["stratified_vs_random",
                                                                                 "stratified_vs_topk"]
    assert study_contrasts({"study.contrasts": "[]"}) == () and study_contrasts({}) == ()


@pytest.mark.parametrize("contrast, message", [
    ({"vs": {"sampler.nme": "random"}}, r"study.contrasts.0.vs.sampler.nme: not a searched parameter"),
    ({"of": {"sampler.name": "bogus"}, "vs": {"sampler.name": "random"}},
     r"study.contrasts.0.of.sampler.name: 'bogus' is outside its search"),
    ({"vs": {"sampler.name": "random"}, "within": ["optim.lr"]}, r"study.contrasts.0.within: 'optim.lr' is not a searched"),
    ({"vs": {"sampler.name": "random"}, "within": ["sampler.name"]}, r"study.contrasts.0.within: sampler.name is fixed by `vs`"),
    ({"of": {"sampler.name": "stratified"}, "vs": {"sampler.name": "random"}, "within": ["loss.name"]},
     r"study.contrasts.0: point \(sampler.name=stratified, loss.name=kl, sampler.k=4\) has 2 `vs` points"),
    ({"vs": {}}, r"study.contrasts.0.vs"),
    ({"of": {"sampler.name": "random"}, "vs": {"sampler.name": "random"}}, r"study.contrasts.0: pairs no two grid points"),
])
def test_bad_contrasts_name_the_file_and_key(tmp_path, contrast, message):
    with pytest.raises(ConfigError, match=r"s\.yaml: " + message):
        load_space(_space(tmp_path, [contrast]))


@pytest.mark.parametrize("extra, message", [
    ({"margin": 0}, r"study.contrasts.0.margin: .*greater than 0"),
    ({"margin": float("inf")}, r"study.contrasts.0.margin: "),
    ({"control": "negative"}, r"study.contrasts.0.control: "),
    ({"expect": "better"}, r"study.contrasts.0.expect: only a positive control"),
    ({"control": "aa"}, r"study.contrasts.0.control: an A/A control compares one configuration with disjoint seeds"),
])
def test_bad_margins_and_controls_name_the_file_and_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=r"s\.yaml: " + message):
        load_space(_space(tmp_path, [{**STRATIFIED_VS_RANDOM, **extra}]))


def _aa_space(tmp_path: Path, of_seed: int, vs_seed: int, replicates: int = 2, seeds=(0, 100), **of) -> Path:
    """A KL/topk point run twice with disjoint seeds (`seed` searched), plus the sampler grid."""
    path = tmp_path / "s.yaml"
    aa = {"name": "aa", "of": {"seed": of_seed, **of}, "vs": {"seed": vs_seed, "sampler.name": "topk"},
          "control": "aa"}
    aa["of"].setdefault("sampler.name", "topk")
    positive = {"name": "stratified_vs_topk", "of": {"sampler.name": "stratified", "seed": 0},
                "vs": {"sampler.name": "topk", "seed": 0}, "control": "positive", "expect": "better", "margin": 0.01}
    path.write_text(yaml.safe_dump({"base": {"data": {"pool_depth": 20}, "sampler": {"k": 4}}, "study": {
        "name": "s", "algorithm": "grid", "replicates": replicates, "contrasts": [aa, positive],
        "grid": {"sampler.name": ["topk", "stratified"], "seed": list(seeds)}}}))
    return path


def test_a_positive_and_an_aa_control_load_and_seed_their_replicates_apart(tmp_path):
    space = load_space(_aa_space(tmp_path, 100, 0))
    aa, positive = space.study.contrasts
    assert (aa.control, positive.control, positive.expect, positive.margin) == ("aa", "positive", "better", 0.01)
    from study.space.replicates import REPLICATE_KEY

    seeds = {(p["seed"], r): space.trial_config({**p, REPLICATE_KEY: r}).seed
             for p in space.grid_points() for r in range(2)}
    assert {seeds[(0, 0)], seeds[(0, 1)]}.isdisjoint({seeds[(100, 0)], seeds[(100, 1)]})
    with pytest.raises(ConfigError, match=r"search.seed: with study.replicates: 2 .* seeds ≥ 2 apart"):
        load_space(_aa_space(tmp_path, 1, 0, seeds=[0, 1]))
    with pytest.raises(ConfigError, match=r"study.contrasts.0.control: an A/A control's `of` and `vs` differ only "
                                          r"in `seed`, got sampler.name"):
        load_space(_aa_space(tmp_path, 100, 0, **{"sampler.name": "stratified"}))


def test_margins_give_a_tost_and_the_decision_reads_the_corrected_ci():
    trials, per_query = crafted_study()
    specs = [{**STRATIFIED_VS_RANDOM, "margin": 0.05}, STRATIFIED_VS_TOPK]
    table, _ = declared_contrasts(trials, per_query, "dev", specs, params=["loss.name", "sampler.name"])
    rows = table.set_index(["contrast", "at"])
    kl = rows.loc[("stratified_vs_random", "loss.name=kl, sampler.k=8")]
    assert kl["decision"] == "better" and kl["family_size"] == 4 and kl["ci_low_corrected"] > 0
    tied = rows.loc[("stratified_vs_random", "loss.name=margin_mse, sampler.k=8")]
    assert tied["decision"] == "equivalent" and tied["tost_p"] < 0.05 / 4 and tied["equivalent"]
    no_margin = rows.loc[("stratified_vs_topk", "loss.name=margin_mse, sampler.k=8")]
    assert no_margin["decision"] == "inconclusive" and np.isnan(no_margin["tost_p"])
    # the MDE is stated at the family's corrected level: wider than one test's at the same SE and df
    from study.report.stats import minimum_detectable_difference

    assert kl["mde"] == pytest.approx(minimum_detectable_difference(kl["se"], kl["df"], family_size=4))
    assert kl["mde"] > minimum_detectable_difference(kl["se"], kl["df"])
    text = contrasts_markdown(table)
    assert "equivalent within ±0.0500" in text and "no margin" in text and "difference [corrected CI]" in text


def test_two_contrasts_with_one_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="name 'stratified_vs_random' is declared twice"):
        load_space(_space(tmp_path, [STRATIFIED_VS_RANDOM, {**STRATIFIED_VS_TOPK, "name": "stratified_vs_random"}]))


def test_a_search_that_is_not_a_grid_checks_keys_only(tmp_path):
    space = load_space(_space(tmp_path, [{**STRATIFIED_VS_RANDOM, "within": ["loss.name"]}], algorithm="random"))
    assert len(space.study.contrasts) == 1   # pairs are found (or noted as missing) by the report


# ---- the report's tests -------------------------------------------------------------------------------
N_QUERIES = 40
QIDS = [f"q{i}" for i in range(N_QUERIES)]
# (sampler, loss) → shift of every query over the topk point, with its per-query noise
SHIFTS = {("stratified", "kl"): (0.10, 0.02), ("random", "kl"): (0.0, 0.02), ("topk", "kl"): (0.095, 0.08),
          ("stratified", "margin_mse"): (0.0, 0.05), ("random", "margin_mse"): (0.0, 0.05),
          ("topk", "margin_mse"): (0.0, 0.05)}


def crafted_study(seeds: int = 2) -> tuple[pd.DataFrame, dict]:
    """A sampling study at K=8 with a known answer: with KL, stratified beats random by 0.10 on every query and
    ties topk (noisy, 0.005 apart); with MarginMSE every sampler is the same up to noise."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.6, N_QUERIES)
    rows, per_query = [], {}
    for (sampler, loss), (shift, noise) in SHIFTS.items():
        for seed in range(seeds):
            values = base + shift + rng.normal(0.0, noise, N_QUERIES)
            run_id = f"{sampler}-{loss}-{seed}"
            rows.append({"run_id": run_id, "trial_id": run_id, "point": f"{sampler}-{loss}", "replicate": seed,
                         "sampler.name": sampler, "sampler.k": 8, "loss.name": loss, "loss.gamma1": 0.0,
                         "dev": float(values.mean())})
            per_query[run_id] = {"dev": dict(zip(QIDS, values.tolist()))}
    return pd.DataFrame(rows), per_query


def test_declared_contrasts_find_the_crafted_answer_with_holm_across_the_family():
    trials, per_query = crafted_study()
    params = ["loss.name", "sampler.name"]
    table, notes = declared_contrasts(trials, per_query, "dev", [STRATIFIED_VS_RANDOM, STRATIFIED_VS_TOPK],
                                      params=params)
    assert notes == [] and len(table) == 4
    row = table.set_index(["contrast", "at"]).loc[("stratified_vs_random", "loss.name=kl, sampler.k=8")]
    assert row["of"] == "sampler.name=stratified" and row["vs"] == "sampler.name=random"
    assert row["difference"] == pytest.approx(0.10, abs=0.01) and row["ci_low"] > 0.08 and row["result"] == "better"
    assert row["n_queries"] == N_QUERIES and row["n_seeds"] == 2 and 0 < row["mde"] < 0.02
    results = dict(zip(zip(table["contrast"], table["at"]), table["result"]))
    assert results[("stratified_vs_topk", "loss.name=kl, sampler.k=8")] == "n.s."
    assert results[("stratified_vs_random", "loss.name=margin_mse, sampler.k=8")] == "n.s."
    # one family (the default): Holm across all four pairs of both contrasts
    assert table["family"].unique().tolist() == ["declared"]
    assert np.allclose(table["p_adjusted"], adjust_p_values(table["p_value"].to_numpy(float), "holm"))
    assert 0 < median_mde(table) < 0.05
    assert "stratified_vs_random" in contrasts_markdown(table) and "| better |" in contrasts_markdown(table)


def test_families_are_corrected_apart_and_mode_min_flips_the_direction():
    trials, per_query = crafted_study()
    specs = [{**STRATIFIED_VS_RANDOM, "family": "a"}, {**STRATIFIED_VS_TOPK, "family": "b"}]
    table, _ = declared_contrasts(trials, per_query, "dev", specs)
    for family, rows in table.groupby("family"):
        assert np.allclose(rows["p_adjusted"], adjust_p_values(rows["p_value"].to_numpy(float), "holm"))
    flipped, _ = declared_contrasts(trials, per_query, "dev", [STRATIFIED_VS_RANDOM], mode="min")
    assert flipped.set_index("at").loc["loss.name=kl, sampler.k=8", "result"] == "worse"


def test_the_of_point_is_named_by_what_differs_from_its_baseline():
    trials, per_query = crafted_study(seeds=1)
    wkl = trials[trials["sampler.name"] == "random"].assign(**{"sampler.name": "topk"})
    wkl = wkl.assign(point=wkl["point"] + "-wkl", run_id=wkl["run_id"] + "-wkl", **{"loss.name": "wkl", "loss.gamma1": 5.0})
    per_query.update({r + "-wkl": per_query[r] for r in trials["run_id"]})
    frame = pd.concat([trials[trials["sampler.name"] == "topk"], wkl.iloc[:1]], ignore_index=True)
    table, notes = declared_contrasts(frame, per_query, "dev", [{"vs": {"loss.name": "kl"}}],
                                      params=["loss.name", "loss.gamma1"])
    assert set(table["of"]) == {"loss.name=margin_mse, loss.gamma1=0", "loss.name=wkl, loss.gamma1=5"}
    assert set(table["vs"]) == {"loss.name=kl"} and notes == []


def test_without_per_query_values_rows_are_means_only_and_untested():
    trials, _ = crafted_study(seeds=1)
    table, _ = declared_contrasts(trials, None, "dev", [STRATIFIED_VS_RANDOM])
    assert set(table["result"]) == {"untested"} and table["difference"].notna().all()
    missing, notes = declared_contrasts(trials.drop(columns=["sampler.k"]), None, "dev", [STRATIFIED_VS_RANDOM])
    assert missing.empty and "no column(s) sampler.k" in notes[0]


# ---- through the store: the parent run's param → the written report ------------------------------------
def test_the_report_tests_the_contrasts_the_parent_run_declares(tmp_path_factory):
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from study.report import build_report, report_study
    from test_report import _log_trial, _migrated_db, _replicated_specs

    root = tmp_path_factory.mktemp("declared")
    db = root / "mlflow.db"
    db.write_bytes(_migrated_db(tmp_path_factory.getbasetemp()).read_bytes())
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("kd-study", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="declared", tags={"kd_study.name": "declared",
                                                                         "kd_study.kind": "study"})
    contrast = {"name": "stratified_vs_topk", "of": {"sampler.name": "stratified"}, "vs": {"sampler.name": "topk"},
                "within": ["sampler.k"]}
    client.log_batch(parent.info.run_id, params=[Param("study.metric", "dev_mrr_at_10"), Param("study.mode", "max"),
                                                 Param("study.contrasts", _param_value([contrast]))])
    for spec in _replicated_specs():
        _log_trial(client, experiment_id, parent.info.run_id, spec, root / "logged")
    client.set_terminated(parent.info.run_id)

    report = build_report("declared", uri)
    assert report.study.contrasts == (contrast,)
    (row,) = report.contrasts.itertuples()   # stratified K=8 vs topk K=8; topk K=4 has no stratified partner
    assert (row.at, row.n_seeds, row.n_queries) == ("sampler.k=8", 2, 30) and row.difference > 0
    text = report_study("declared", uri, root / "report", log_to_parent=False).read_text()
    assert "## Declared contrasts: Dev MRR@10" in text and "stratified_vs_topk" in text
    assert (root / "report" / "contrasts.csv").is_file()
    from rich.console import Console

    from study.report import render_report

    console = Console(record=True, width=200)
    render_report(report, console)
    assert "Declared contrasts (Dev MRR@10; CI at α/m and corrected p: holm within each family)" in console.export_text()
