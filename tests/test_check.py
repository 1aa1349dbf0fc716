"""`kd-study check`: each defect flagged on a crafted space, every shipped space passing, cached scores read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from study.check.dimensions import DERIVATIONS, check_space, sampler_overlaps
from study.check.evidence import Evidence, ScoreSample, evidence_for
from study.cli.verbs import main
from study.space.schema import load_space
from trainables.config import TrialConfig
from trainables.train.loss_checks import wkl_weight_ratio

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = sorted(p for p in SPACES.glob("*.yaml") if not p.name.startswith("trial_"))   # trial_*: base configs


def space_file(tmp_path: Path, sample_data: Path, *, base: dict | None = None, fixed: dict | None = None,
               search: dict | None = None, study: dict | None = None) -> Path:
    """A small space on the shipped SciFact sample (1000 docs, 189 train queries): loads in a second."""
    raw = {
        "base": {"data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "train"}, "pool_depth": 20},
                 "sampler": {"name": "stratified", "k": 4},
                 "loss": {"name": "wkl", "gamma1": 2.0, "alpha": 1.0, "beta_refresh_steps": 2},
                 "optim": {"batch_size": 8, "max_steps": 10},
                 "eval": {"dev": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}, "beir": []},
                 "cache_dir": str(tmp_path / "cache"), **(base or {})},
        "fixed": fixed or {},
        "search": search if search is not None else {"optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-4}},
        "study": {"name": "check-test", "seed": 0, **(study or {})},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def check(path: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["check", str(path), "--scores", "none", "--sample", "4", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- each defect, flagged -------------------------------------------------------------------------
def test_a_sound_space_passes(tmp_path, sample_data, capsys):
    code, out, err = check(space_file(tmp_path, sample_data), capsys)
    assert code == 0, err
    assert "0 errors" in out and "optimiser steps" in out and "β refreshes" in out


def test_kl_warmup_as_long_as_training_is_an_error(tmp_path, sample_data, capsys):
    path = space_file(tmp_path, sample_data, fixed={"loss.kl_warmup_steps": 10})
    code, out, err = check(path, capsys)
    assert code == 2
    assert "WKL never runs" in err and "loss.kl_warmup_steps=10 ≥ the 10 steps" in err


def test_a_shared_warm_up_student_is_named_not_called_missing(tmp_path, sample_data, capsys):
    path = space_file(tmp_path, sample_data, fixed={"init": {"from": "warmup", "warmup": {"steps": 30}}})
    code, out, _ = check(path, capsys)
    assert code == 0 and "refines a shared kl warm-up student (30 steps, init.warmup)" in out
    assert "no KL warm-up" not in out


def test_refresh_interval_past_the_last_step_is_an_error(tmp_path, sample_data, capsys):
    path = space_file(tmp_path, sample_data, fixed={"loss.beta_refresh_steps": 10})
    code, _, err = check(path, capsys)
    assert code == 2 and "β is never refreshed" in err


def test_steps_come_from_the_epoch_plan(tmp_path, sample_data, capsys):
    """189 training queries at batch 8 (last incomplete batch dropped) × 2 epochs = 46 steps, 23 refreshes."""
    path = space_file(tmp_path, sample_data, fixed={"optim.max_steps": None, "optim.epochs": 2})
    code, out, _ = check(path, capsys)
    assert code == 0
    assert "46 (189 q × 2 ep / 8)" in out and "22 (every 2 of 46 steps)" in out


def test_negative_gamma2_is_an_error_unless_floored(tmp_path, sample_data, capsys):
    grid = {"algorithm": "grid", "grid": {"loss.gamma1": [0.0, 1.0], "loss.alpha": [0.5, 1.0]}}
    code, _, err = check(space_file(tmp_path, sample_data, search={}, study=grid), capsys)
    assert code == 2 and "γ1 − α = -0.5 < 0" in err
    code, out, err = check(space_file(tmp_path, sample_data, search={}, study=grid,
                                      fixed={"loss.gamma2_floor": 0.0}), capsys)
    assert code == 0, err
    assert "floor 0" in out


def test_unreachable_margins_are_an_error_and_the_default_scale_reaches_them(tmp_path, sample_data, capsys):
    cross = {"teacher": {"kind": "cross_encoder", "model": "cross-encoder/ms-marco-MiniLM-L-6-v2"},
             "loss": {"name": "margin_mse", "student_scale": 1.0}}
    code, _, err = check(space_file(tmp_path, sample_data, base=cross), capsys)
    assert code == 2 and "MarginMSE cannot be matched" in err
    cross["loss"]["student_scale"] = "auto"
    code, out, err = check(space_file(tmp_path, sample_data, base=cross), capsys)
    assert code == 0, err
    assert "student reaches ≤ 40 (×20)" in out


def test_asha_without_an_intermediate_evaluation_is_an_error(tmp_path, sample_data, capsys):
    path = space_file(tmp_path, sample_data, fixed={"eval.every_steps": 10}, study={"scheduler": "asha"})
    code, _, err = check(path, capsys)
    assert code == 2 and "ASHA cannot stop any trial" in err


def test_samplers_picking_the_same_candidates_is_a_warning(tmp_path, sample_data, capsys):
    search = {"sampler.name": {"type": "categorical", "choices": ["topk", "random", "stratified"]},
              "sampler.k": {"type": "categorical", "choices": [4, 20]}}
    code, out, _ = check(space_file(tmp_path, sample_data, search=search), capsys)
    assert code == 0   # a warning prints, it does not stop
    assert "WARNING" in out and "pick 100% of the same candidates at K=20 of a 20-candidate pool" in out


def test_near_uniform_softmax_is_a_warning_read_from_the_cached_teacher_scores(tmp_path, sample_data, capsys):
    """Cosine-like scores at τ = 1 are near uniform; the check reads them from the study's cache (no model)."""
    from trainables.prepare.assets import asset_keys, training_queries
    from trainables.data import load_data
    from trainables.data.training_set import save_npz_atomic

    path = space_file(tmp_path, sample_data, base={"loss": {"name": "kl"}})
    cfg = load_space(path).base
    data = load_data(cfg.data.train)
    queries, _ = training_queries(data, cfg.data.max_train_queries)
    keys = asset_keys(cfg, data, queries)
    rng = np.random.default_rng(0)
    cosines = lambda *shape: rng.uniform(0.3, 0.7, shape).astype(np.float32)   # noqa: E731 - a retrieved pool's cosines
    cache = Path(cfg.cache_dir)
    save_npz_atomic(cache / "teacher" / f"{keys['teacher']}.npz",
                    {"positive_scores": cosines(len(queries), 1), "pool_scores": cosines(len(queries), 20)})
    save_npz_atomic(cache / "pools" / f"{keys['pools']}.npz",
                    {"student_positive_scores": cosines(len(queries), 1), "student_scores": cosines(len(queries), 20)})
    code, out, _ = main(["check", str(path), "--scores", "cache", "--sample", "2"]), capsys.readouterr().out, None
    assert code == 0
    assert "cached teacher scores (189 of 189 queries" in out
    assert "teacher's softmax at loss.teacher_temperature=1 is near uniform" in out
    # at the SciFact configs' τ = 0.05 the same scores are far from uniform
    code = main(["check", str(path), "--scores", "cache", "--sample", "2", "--set", "loss.teacher_temperature=0.05",
                 "--set", "loss.student_temperature=0.05"])
    assert code == 0 and "near uniform" not in capsys.readouterr().out
    # `kd-study run` checks the same way: static before the assets exist, then on the study's cached scores
    from study.check.scores import check_for_run

    space = load_space(path)
    before = check_for_run(space, data)
    assert before.evidence.scores is None and not before.errors
    after = check_for_run(space, data, keys)
    assert after.evidence.scores.n_queries == 189
    assert any(d.dimension == "teacher softmax entropy" and d.level == "warning" for d in after.dimensions)


# ---- the derivations on synthetic scores ------------------------------------------------------------
def synthetic_scores(queries: int = 64, depth: int = 20, spread: float = 0.4, seed: int = 0) -> ScoreSample:
    rng = np.random.default_rng(seed)
    pool = np.sort(rng.uniform(0.5 - spread / 2, 0.5 + spread / 2, (queries, depth)), axis=1)[:, ::-1]
    positive = pool[:, :1] + 0.1
    return ScoreSample(positive, pool.copy(), positive + rng.normal(0, 0.05, positive.shape),
                       pool + rng.normal(0, 0.05, pool.shape), source="synthetic")


def derive(dimension: str, cfg: TrialConfig, evidence: Evidence):
    derivation = next(d for d in DERIVATIONS if d.dimension == dimension)
    return derivation.derive(cfg, evidence)


def test_flat_wkl_weights_are_a_warning():
    evidence = Evidence(n_queries=100, scores=synthetic_scores())
    flat = TrialConfig.from_dict({"loss": {"name": "wkl", "gamma1": 0.01, "alpha": 0.0}, "data": {"pool_depth": 20}})
    sharp = flat.with_overrides({"loss.gamma1": 5.0, "loss.alpha": 1.0})
    assert derive("WKL weight spread", flat, evidence).level == "warning"
    assert derive("WKL weight spread", sharp, evidence).level == "ok"
    assert wkl_weight_ratio(*_lists(sharp, evidence)[1:], sharp) > 10


def _lists(cfg, evidence):
    from trainables.train.loss_checks import loss_lists as _loss_lists

    return _loss_lists(cfg, evidence)


def test_the_loss_lists_use_the_spaces_top_n_not_twenty():
    """teacher_top_n with N = 5 ≠ 20: the check draws a trial's candidates as its epoch plan does, from the top 5."""
    scores = synthetic_scores()
    cfg = TrialConfig.from_dict({"sampler": {"name": "teacher_top_n", "k": 3, "top_n": 5}, "data": {"pool_depth": 20}})
    teacher, _, _ = _lists(cfg, Evidence(n_queries=100, scores=scores))
    pools = scores.teacher_pool[~np.isnan(scores.teacher_positive[:, 0])]
    fifth_best = -np.sort(-np.nan_to_num(pools, nan=-np.inf), axis=1)[:, 4]
    assert (teacher[:, 1:] >= fifth_best[:, None]).all()          # every pick among its query's top 5
    wide = cfg.with_overrides({"sampler.top_n": 20})
    assert not (_lists(wide, Evidence(n_queries=100, scores=scores))[0][:, 1:] >= fifth_best[:, None]).all()
    overlap = sampler_overlaps(pools, ["teacher_top_n", "topk"], 3, like=cfg.sampler)
    assert overlap[("teacher_top_n", "topk")] > 3 / 5 - 0.15        # top 3 of the top 5: 60 %, not 3/20


def test_sampler_overlap_follows_k_and_pool_depth():
    pools = np.tile(np.linspace(1, 0, 100), (32, 1))
    small = sampler_overlaps(pools, ["topk", "random", "stratified"], 4)
    assert small[("random", "topk")] == pytest.approx(4 / 100, abs=0.03)   # random hits topk's 4 by chance
    full = sampler_overlaps(pools[:, :8], ["topk", "random", "stratified"], 8)
    assert all(share == 1.0 for share in full.values())


def test_sampler_overlap_without_scores_counts_random_additions_in_the_pool():
    cfg = TrialConfig.from_dict({"sampler": {"k": 8}, "data": {"pool_depth": 100, "random_additions": 50}})
    derived = derive("sampler overlap", cfg, Evidence(samplers=("topk", "random", "stratified")))
    assert "pool 150" in derived.text


def test_margins_measured_from_scores_replace_the_prior():
    scores = synthetic_scores()
    cross = ScoreSample(scores.teacher_positive * 20, scores.teacher_pool * 20, scores.student_positive,
                        scores.student_pool, source="logit-like")
    cfg = TrialConfig.from_dict({"loss": {"name": "margin_mse", "student_scale": 1.0}, "data": {"pool_depth": 20},
                                 "teacher": {"kind": "cross_encoder", "model": "x"}})
    unscaled = derive("MarginMSE margins", cfg, Evidence(scores=cross))
    assert unscaled.level == "error" and "teacher p95" in unscaled.text
    assert derive("MarginMSE margins", cfg.with_overrides({"loss.student_scale": "auto"}),
                  Evidence(scores=cross)).level == "ok"


# ---- the shipped spaces -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_space_passes(path):
    """The derivations that need no data or model (steps from data.max_train_queries or max_steps)."""
    space = load_space(path)
    report = check_space(space, evidence_for(space, n_queries=space.base.data.max_train_queries,
                                             n_queries_source="data.max_train_queries"), n_sample=8)
    assert not report.errors, report.flag_lines()
    assert report.dimensions


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_space_says_what_it_reproduces_and_adapts(path):
    header = path.read_text().split("\nbase:")[0].lower()
    assert "reproduces" in header and "adapts" in header


@pytest.mark.slow
def test_sampled_scores_score_a_few_seeded_queries_with_the_real_teacher(tmp_path, sample_data, capsys):
    """No cache: `--scores sample` builds pools for 16 seeded queries over a sub-corpus and scores them."""
    tiny = {"student": {"model": "tiny:bert"}, "teacher": {"model": "tiny:bert"}, "loss": {"name": "kl"}}
    path = space_file(tmp_path, sample_data, base=tiny)
    from study.check.scores import gather_evidence

    evidence = gather_evidence(load_space(path), "sample", n_queries=16, n_passages=200)
    scores = evidence.scores
    assert scores is not None and scores.n_queries == 16 and scores.source.startswith("sampled: 16 queries")
    assert scores.teacher_pool.shape[1] == 20 and np.isfinite(scores.teacher_pool).all()
    assert np.isfinite(scores.student_pool).all() and np.isfinite(scores.teacher_positive[:, 0]).all()
    report = check_space(load_space(path), evidence, n_sample=2)
    entropy = next(d for d in report.dimensions if d.dimension == "teacher softmax entropy")
    assert all(derived.value is not None for _, derived in entropy.results)


# ---- auxiliary terms ----------------------------------------------------------------------------------
def test_the_in_batch_term_dominating_the_gradient_is_a_warning_on_the_v2_wkl_space():
    """scifact_wkl_v2 trains every arm with loss.in_batch_weight: 1: on a sample batch the in-batch NLL carries
    most of the gradient on the student's scores (MarginMSE at scale 1: ~1% is its own)."""
    space = load_space(SPACES / "scifact_wkl_v2.yaml")
    for scores in (None, synthetic_scores(depth=150)):   # the prior lists without scores, then a score sample
        report = check_space(space, evidence_for(space, n_queries=800, n_queries_source="test", scores=scores),
                             n_sample=4)
        aux = next(d for d in report.dimensions if d.dimension == "auxiliary gradient share")
        assert aux.level == "warning" and any("carries" in line for line in report.flag_lines())
        shares = {point["loss.name"]: derived.value for point, derived in aux.results}
        assert shares["margin_mse"] > 0.95 and shares["kl"] > 0.5


V3_SPACES = ("scifact_sampling_v3.yaml", "scifact_wkl_v3.yaml")


@pytest.mark.parametrize("name", V3_SPACES)
def test_the_v3_spaces_are_silent_and_their_positive_control_keeps_its_in_batch_term_unflagged(name):
    """No warning and no error, with the prior lists and with a score sample (709 training queries, as loaded): the
    compared arms have no in-batch term; the positive control's points (the recipe as measured, λ_IB = 1) print
    their share as ok, saying why."""
    space = load_space(SPACES / name)
    for scores in (None, synthetic_scores(depth=150)):
        report = check_space(space, evidence_for(space, n_queries=709, n_queries_source="test", scores=scores),
                             n_sample=4)
        assert not report.errors and not report.warnings, report.flag_lines()
        aux = next(d for d in report.dimensions if d.dimension == "auxiliary gradient share")
        # the control's points: λ_IB = 1, searched or (the WKL space's lr-8e-5 point) the base's
        control = [(point, derived) for point, derived in aux.results if point.get("loss.in_batch_weight", 1.0) == 1.0]
        assert len(control) == 2 and all(d.value > 0.5 and "positive control" in d.text for _, d in control)
        assert all(d.value == 0 for point, d in aux.results if point.get("loss.in_batch_weight") == 0.0)
    header = (SPACES / name).read_text().split("\nbase:")[0].lower()
    assert "auxiliary terms: none" in header and "cut to fit" in header and "time on 2 cpu cores" in header


def test_the_same_in_batch_term_in_a_compared_arm_is_still_flagged(tmp_path):
    """Declared as an ordinary contrast instead of a positive control, the v3 control's points warn."""
    raw = yaml.safe_load((SPACES / "scifact_wkl_v3.yaml").read_text())
    raw["base"] = str(SPACES / raw["base"])
    for contrast in raw["study"]["contrasts"]:
        if contrast.get("control") == "positive":
            contrast.pop("control"), contrast.pop("expect")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    space = load_space(path)
    report = check_space(space, evidence_for(space, n_queries=709, n_queries_source="test"), n_sample=4)
    assert [d.dimension for d in report.warnings] == ["auxiliary gradient share"]


def test_without_an_in_batch_term_the_share_is_zero_and_the_split_follows_the_weight():
    from study.check.gradients import auxiliary_gradient_share

    evidence = Evidence(n_queries=100, scores=synthetic_scores())
    cfg = TrialConfig.from_dict({"loss": {"name": "kl", "student_temperature": 0.05}, "data": {"pool_depth": 20}})
    assert derive("auxiliary gradient share", cfg, evidence).value == 0.0
    lists = _lists(cfg, evidence)
    small = auxiliary_gradient_share(cfg.with_overrides({"loss.in_batch_weight": 0.01}), *lists,
                                     evidence.scores.student_pool)
    large = auxiliary_gradient_share(cfg.with_overrides({"loss.in_batch_weight": 1.0}), *lists,
                                     evidence.scores.student_pool)
    assert small[1] == pytest.approx(large[1]) and large[2] == pytest.approx(100 * small[2])   # λ scales g_aux only
    assert small[0] < 0.05 < large[0]


def test_wkl_paper_follows_the_protocol_and_passes_check():
    space = load_space(SPACES / "wkl_paper.yaml")
    cfg = space.base
    assert cfg.init.start == "warmup" and cfg.init.warmup.loss.name == "margin_mse"
    assert (cfg.sampler.name, cfg.sampler.top_n, cfg.sampler.k) == ("teacher_top_n", 20, 5)
    assert cfg.loss.in_batch_weight == 0 and cfg.data.pool_source == "teacher"
    cosines = synthetic_scores()
    logits = ScoreSample(cosines.teacher_positive * 20, cosines.teacher_pool * 20, cosines.student_positive,
                         cosines.student_pool, source="a cross-encoder's logit-like scores")
    report = check_space(space, evidence_for(space, n_queries=cfg.data.max_train_queries,
                                             n_queries_source="data.max_train_queries", scores=logits), n_sample=4)
    assert not report.errors and not report.warnings, report.flag_lines()
    gamma2 = next(d for d in report.dimensions if d.dimension == "γ2 range")
    assert all(derived.value > 0 or point.get("loss.alpha", 0) == 0 and point.get("loss.gamma1", 0) == 0
               for point, derived in gamma2.results)   # γ2 > 0 in every cell (all 0 only in the KL cell)
    header = (SPACES / "wkl_paper.yaml").read_text().split("\nbase:")[0]
    assert "margin_mse" in header.lower() or "MarginMSE" in header
    assert "in_batch_weight: 0" in header
