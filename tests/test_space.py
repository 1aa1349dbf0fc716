"""study/space/schema.py with params, grid, space_checks: parsing, define-by-run, exact grids, one-line errors."""
from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from pydantic import ValidationError

from study.space.schema import StudySettings, dump_space, load_space
from study.space.checks import settle_study
from trainables.config import ConfigError, TrialConfig

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = ("quickstart", "wkl_paper", "sampling_paper", "full")

BASE = {"data": {"pool_depth": 10}, "sampler": {"k": 4}}
WKL_SEARCH = {
    "loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
    "loss.gamma1": {"type": "float", "low": 0, "high": 6, "step": 1, "when": {"loss.name": "wkl"}},
    "loss.alpha": {"type": "float", "low": 0, "high": 1.5, "step": 0.5, "when": {"loss.name": "wkl"}},
    "sampler.name": {"type": "categorical", "choices": ["topk", "random", "stratified"]},
    "optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
}


def write_space(tmp_path: Path, *, base=None, search=None, fixed=None, study=None, extra=None,
                name: str = "space.yaml") -> Path:
    raw = {"base": BASE if base is None else base,
           "search": WKL_SEARCH if search is None else search,
           "study": {"name": "t", **(study or {})}}
    if fixed is not None:
        raw["fixed"] = fixed
    raw.update(extra or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def ask(space, **enqueued):
    """Run define_by_run on a fresh Optuna trial (with `enqueued` values fixed); return its params."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    if enqueued:
        study.enqueue_trial({k.replace("__", "."): v for k, v in enqueued.items()})
    trial = study.ask()
    assert space.define_by_run(trial) is None  # declares the space only
    return trial.params


# ---- the shipped spaces ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_validate(name):
    space = load_space(SPACES / f"{name}.yaml")
    assert space.name == name
    assert space.num_samples >= 1


def test_quickstart_covers_all_samplers_with_kl_and_wkl():
    space = load_space(SPACES / "quickstart.yaml")
    assert space.num_samples >= 6
    assert space.base.data.train.id == "quickstart"          # offline: the built-in collection
    assert space.base.resources.num_workers == 2
    covered = {(p["sampler.name"], p["loss.name"]) for p in space.initial_points()}
    assert covered >= set(itertools.product(["topk", "random", "stratified"], ["kl", "wkl"]))
    for point in space.initial_points():
        cfg = space.trial_config(point)
        assert cfg.sampler.name == point["sampler.name"] and cfg.loss.name == point["loss.name"]


def test_wkl_paper_grid_is_exactly_the_papers_grid():
    space = load_space(SPACES / "wkl_paper.yaml")
    points = [(p["loss.gamma1"], p["loss.alpha"]) for p in space.grid_points()]
    expected = list(itertools.product([0.0, 1, 2, 3, 4, 5, 6], [0.0, 0.5, 1.0, 1.5]))
    assert points == expected                                 # each once, in order
    assert space.num_samples == 28 == len(space.initial_points())
    assert all(space.trial_config(p).loss.name == "wkl" for p in space.grid_points())


def test_sampling_paper_grid_is_sampler_by_k_by_loss():
    space = load_space(SPACES / "sampling_paper.yaml")
    points = {(p["sampler.name"], p["sampler.k"], p["loss.name"]) for p in space.grid_points()}
    assert points == set(itertools.product(["topk", "random", "stratified"], [4, 8, 16], ["kl", "margin_mse"]))
    assert space.num_samples == len(space.grid_points()) == 18


def test_full_space_is_joint_tpe_with_conditional_wkl_params():
    space = load_space(SPACES / "full.yaml")
    assert space.study.algorithm == "tpe" and space.study.scheduler == "asha"
    assert {"loss.name", "loss.gamma1", "loss.alpha", "sampler.name", "sampler.k", "optim.lr"} <= set(space.param_names)
    assert ask(space, loss__name="kl").keys().isdisjoint({"loss.gamma1", "loss.alpha", "loss.nll_weight"})


@pytest.mark.parametrize("name", SHIPPED)
def test_resolved_copy_reloads_to_the_same_space(tmp_path, name):
    """`resume` reads the study folder's resolved copy, never the (editable) original."""
    space = load_space(SPACES / f"{name}.yaml", overrides={"study.name": "copy"}, pin={"seed": 3})
    copy = tmp_path / "space.resolved.yaml"
    copy.write_text(dump_space(space))
    again = load_space(copy)
    assert again.base == space.base and again.base.seed == 3 and again.name == "copy"
    assert again.param_names == space.param_names and again.initial_points() == space.initial_points()
    assert again.num_samples == space.num_samples and again.metrics == space.metrics


# ---- define-by-run and conditionals ----------------------------------------------------------------
def test_gamma1_and_alpha_are_asked_only_for_wkl(tmp_path):
    space = load_space(write_space(tmp_path))
    kl = ask(space, loss__name="kl")
    assert "loss.gamma1" not in kl and "loss.alpha" not in kl
    assert {"loss.name", "sampler.name", "optim.lr"} <= set(kl)
    wkl = ask(space, loss__name="wkl")
    assert 0 <= wkl["loss.gamma1"] <= 6 and wkl["loss.alpha"] in (0, 0.5, 1.0, 1.5)
    # A KL trial has no γ1 (its block is KL's settings model); a WKL trial gets the drawn one.
    assert not hasattr(space.trial_config(kl).loss, "gamma1")
    assert space.trial_config(wkl).loss.gamma1 == wkl["loss.gamma1"]


def test_conditions_may_list_several_values_and_chain(tmp_path):
    search = {
        "loss.name": {"type": "categorical", "choices": ["kl", "kl_nll", "wkl"]},
        "loss.teacher_temperature": {"type": "float", "low": 0.5, "high": 2, "when": {"loss.name": ["kl", "wkl"]}},
        # declared before the field it depends on: ordered after it
        "loss.alpha": {"type": "float", "low": 0, "high": 1, "when": {"loss.gamma1": 2.0}},
        "loss.gamma1": {"type": "categorical", "choices": [1.0, 2.0], "when": {"loss.name": "wkl"}},
    }
    space = load_space(write_space(tmp_path, search=search))
    assert space.param_names.index("loss.alpha") > space.param_names.index("loss.gamma1")
    assert "loss.teacher_temperature" not in ask(space, loss__name="kl_nll")
    assert "loss.alpha" not in ask(space, **{"loss__name": "wkl", "loss__gamma1": 1.0})
    assert "loss.alpha" in ask(space, **{"loss__name": "wkl", "loss__gamma1": 2.0})


def test_fixed_values_reach_every_trial(tmp_path):
    space = load_space(write_space(tmp_path, fixed={"optim.epochs": 3, "loss.kl_warmup_steps": 5}))
    cfg = space.trial_config(ask(space, loss__name="wkl"))
    assert cfg.optim.epochs == 3 and cfg.loss.kl_warmup_steps == 5


def test_base_may_be_a_trial_yaml_next_to_the_space(tmp_path):
    TrialConfig.from_dict({"data": {"pool_depth": 12}, "optim": {"lr": 1e-4}}).to_yaml(tmp_path / "trial.yaml")
    space = load_space(write_space(tmp_path, base="trial.yaml"))
    assert space.base.data.pool_depth == 12 and space.base.optim.lr == 1e-4


def test_grid_honours_conditions_without_duplicates(tmp_path):
    search = {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
              "loss.gamma1": {"type": "int", "low": 1, "high": 3, "when": {"loss.name": "wkl"}},
              "sampler.k": {"type": "categorical", "choices": [2, 4]}}
    space = load_space(write_space(tmp_path, search=search, study={"algorithm": "grid"}))
    points = space.grid_points()
    assert len(points) == 2 * (1 + 3) == space.num_samples
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    assert {"loss.name": "kl", "sampler.k": 2} in points


def test_a_field_is_searched_by_its_alias_and_a_conditional_seed_counts_from_the_base_seed(tmp_path):
    """`init.from` (InitConfig.start's YAML name) is searchable, as the v3 WKL space's arms vs its control need;
    an A/A seed searched only at one point leaves the others at the base seed, which the replicate rule reads."""
    search = {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
              "init.from": {"type": "categorical", "choices": ["pretrained", "warmup"], "when": {"loss.name": "kl"}},
              "seed": {"type": "categorical", "choices": [0, 100], "when": {"loss.name": "kl"}}}
    space = load_space(write_space(tmp_path, search=search, study={"algorithm": "grid", "replicates": 3}))
    points = space.grid_points()
    assert len(points) == 2 * 2 + 1
    assert {space.trial_config(p).init.start for p in points} == {"pretrained", "warmup"}
    assert {space.trial_config(p).seed for p in points if p["loss.name"] == "wkl"} == {0}
    search["seed"]["choices"] = [0, 2]   # the base seed's 0..2 and 2..4 overlap
    with pytest.raises(ConfigError, match=r"search.seed: with study.replicates: 3"):
        load_space(write_space(tmp_path, search=search, study={"algorithm": "grid", "replicates": 3}))
    # a confirmation runs just its listed points (random + points_to_evaluate): their seeds are known, so allowed
    listed = [{"loss.name": "kl", "init.from": "warmup", "seed": 0}, {"loss.name": "kl", "init.from": "warmup",
                                                                      "seed": 100}]
    search["seed"]["choices"] = [0, 100]
    confirm = {"algorithm": "random", "replicates": 3, "num_samples": 2, "points_to_evaluate": listed}
    assert load_space(write_space(tmp_path, search=search, study=confirm)).num_trials == 6
    with pytest.raises(ConfigError, match=r"search.seed: .* where every point is listed"):   # Optuna would pick seeds
        load_space(write_space(tmp_path, search=search, study={**confirm, "num_samples": 3}))


def test_grid_shorthand_in_study_section(tmp_path):
    path = write_space(tmp_path, search={}, study={"algorithm": "grid", "grid": {"sampler.k": [2, 4], "seed": [0, 1]}})
    space = load_space(path)
    assert space.grid_points() == [{"sampler.k": 2, "seed": 0}, {"sampler.k": 2, "seed": 1},
                                   {"sampler.k": 4, "seed": 0}, {"sampler.k": 4, "seed": 1}]


def test_default_metric_and_multi_objective(tmp_path):
    assert load_space(write_space(tmp_path)).metrics == ["dev_mrr_at_10"]
    objectives = [{"metric": "dev_mrr_at_10"}, {"metric": "beir_ndcg_at_10_avg", "mode": "max"}]
    space = load_space(write_space(tmp_path, study={"objectives": objectives}))
    assert space.metrics == ["dev_mrr_at_10", "beir_ndcg_at_10_avg"] and space.modes == ["max", "max"]


def test_cli_style_overrides_replace_study_settings(tmp_path):
    space = load_space(write_space(tmp_path), overrides={"study.name": "other", "study.num_samples": 3})
    assert space.name == "other" and space.num_samples == 3


def test_settling_the_study_returns_new_settings_and_leaves_the_parsed_ones(tmp_path):
    """The default metric and the grid's size are filled into new settings; validation mutates nothing."""
    search = {"sampler.k": {"type": "categorical", "choices": [2, 4]}, "seed": {"type": "int", "low": 0, "high": 2}}
    space = load_space(write_space(tmp_path, search=search, study={"algorithm": "grid"}))
    parsed = replace(space, study=StudySettings(name="t", algorithm="grid"))
    settled = settle_study(parsed)
    assert settled.metric == "dev_mrr_at_10" and settled.num_samples == 6 == len(space.grid_points())
    assert settled == space.study
    assert parsed.study.metric is None and parsed.study.num_samples is None
    with pytest.raises(ValidationError, match="frozen"):
        space.study.num_samples = 7


def test_pinning_a_searched_field_stops_searching_it(tmp_path):
    space = load_space(write_space(tmp_path), pin={"loss.name": "wkl", "optim.epochs": 2})
    assert "loss.name" not in space.param_names and space.base.loss.name == "wkl"
    assert {"loss.gamma1", "loss.alpha"} <= set(ask(space))          # their condition now always holds
    assert space.base.optim.epochs == 2


# ---- bad inputs: one line naming the file and the key ----------------------------------------------
BAD = [
    ("unknown top-level key", {"extra": {"serach": {}}}, r"space\.yaml: serach: unknown key \(expected one of: base, fixed, search, study\)"),
    ("unknown study key", {"study": {"trials": 3}}, r"space\.yaml: study\.trials: unknown key"),
    ("unknown spec key", {"search": {**WKL_SEARCH, "optim.lr": {"type": "loguniform", "low": 1e-5, "hi": 1}}},
     r"space\.yaml: search\.optim\.lr\.hi: unknown key"),
    ("unknown searched field", {"search": {"loss.gama1": {"type": "float", "low": 0, "high": 1}}},
     r"space\.yaml: search\.loss\.gama1: 'loss\.gama1' is not a trial config field"),
    ("unknown fixed field", {"fixed": {"optim.learning_rate": 1e-4}},
     r"space\.yaml: fixed\.optim\.learning_rate: 'optim\.learning_rate' is not a trial config field"),
    ("gamma1 < 0 in a range", {"search": {**WKL_SEARCH, "loss.gamma1": {"type": "float", "low": -1, "high": 6, "when": {"loss.name": "wkl"}}}},
     r"space\.yaml: search\.loss\.gamma1: -1\.0 is invalid: loss\.gamma1: Input should be greater than or equal to 0"),
    ("gamma1 < 0 fixed", {"search": {"loss.name": WKL_SEARCH["loss.name"]}, "fixed": {"loss.gamma1": -0.5}},
     r"space\.yaml: fixed\.loss\.gamma1: -0\.5 is invalid: loss\.gamma1: Input should be greater than or equal to 0"),
    ("k > pool size in a choice", {"search": {**WKL_SEARCH, "sampler.k": {"type": "categorical", "choices": [4, 8, 16]}}},
     r"space\.yaml: search\.sampler\.k: 16 is invalid: sampler\.k=16 is larger than data\.pool_depth=10"),
    ("k > pool size fixed", {"fixed": {"sampler.k": 12}},
     r"space\.yaml: fixed\.sampler\.k: 12 is invalid: sampler\.k=12 is larger than data\.pool_depth=10"),
    ("unknown dataset id", {"base": {**BASE, "eval": {"dev": "msmarco-dev"}}},
     r"space\.yaml: base: eval\.dev\.id: unknown dataset id 'msmarco-dev'"),
    ("unknown choice", {"search": {"sampler.name": {"type": "categorical", "choices": ["topk", "quantile"]}}},
     r"space\.yaml: search\.sampler\.name: 'quantile' is invalid: sampler: unknown sampler 'quantile': expected one "
     r"of topk, random, stratified, equal_width, teacher_top_n"),
    ("search type", {"search": {"optim.lr": {"type": "uniform", "low": 0.1, "high": 1}}},
     r"space\.yaml: search\.optim\.lr\.type: Input should be 'float', 'int', 'loguniform' or 'categorical'"),
    ("low above high", {"search": {"optim.lr": {"type": "float", "low": 1, "high": 0.1}}},
     r"space\.yaml: search\.optim\.lr: low=1\.0 is above high=0\.1"),
    ("loguniform low <= 0", {"search": {"optim.lr": {"type": "loguniform", "low": 0, "high": 1}}},
     r"space\.yaml: search\.optim\.lr: loguniform needs low > 0"),
    ("asset field searched", {"search": {"data.pool_depth": {"type": "int", "low": 10, "high": 20}}},
     r"space\.yaml: search\.data\.pool_depth: data\.pool_depth shapes the shared assets"),
    ("condition never holds", {"search": {**WKL_SEARCH, "loss.alpha": {"type": "float", "low": 0, "high": 1, "when": {"loss.name": "kl_nll"}}}},
     r"space\.yaml: search\.loss\.alpha\.when: loss\.name never takes \['kl_nll'\]"),
    ("condition on a fixed field", {"search": {"loss.gamma1": {"type": "float", "low": 0, "high": 1, "when": {"loss.name": "wkl"}}}},
     r"space\.yaml: search\.loss\.gamma1\.when: loss\.name is fixed to 'kl'"),
    ("mode holds the algorithm", {"study": {"mode": "tpe"}},
     r"space\.yaml: study\.mode: expected 'max' or 'min' \(the search algorithm goes in study\.algorithm: tpe\)"),
    ("metric not reported", {"study": {"metric": "dl19_ndcg_at_10"}},
     r"space\.yaml: study\.metric: 'dl19_ndcg_at_10' is not reported by trials of this base config"),
    ("asha without evaluations", {"study": {"scheduler": "asha"}},
     r"space\.yaml: study\.scheduler: asha stops trials on intermediate evaluations: set eval\.every_steps"),
    ("grid over a continuous range", {"study": {"algorithm": "grid"}},
     r"space\.yaml: search\.optim\.lr: grid mode needs `choices` or a stepped range"),
    ("grid with another num_samples", {"search": {"sampler.k": {"type": "categorical", "choices": [2, 4]}},
                                       "study": {"algorithm": "grid", "num_samples": 5}},
     r"space\.yaml: study\.num_samples: grid mode runs each of the 2 grid points once"),
    ("point outside its search", {"study": {"points_to_evaluate": [{"loss.name": "margin_mse"}]}},
     r"space\.yaml: study\.points_to_evaluate\.0\.loss\.name: 'margin_mse' is outside its search"),
    ("point sets an inactive param", {"study": {"points_to_evaluate": [{"loss.name": "kl", "loss.gamma1": 2.0}]}},
     r"space\.yaml: study\.points_to_evaluate\.0\.loss\.gamma1: given, but its condition"),
    ("bad study name", {"study": {"name": "my study"}}, r"space\.yaml: study\.name: expected letters, digits"),
    ("base file missing", {"base": "nowhere.yaml"}, r"space\.yaml: base: 'nowhere\.yaml' is not a file"),
    ("searched and fixed", {"fixed": {"loss.name": "kl"}}, r"space\.yaml: fixed\.loss\.name: also searched"),
]


@pytest.mark.parametrize("label,change,message", BAD, ids=[b[0] for b in BAD])
def test_bad_space_gives_one_line_naming_file_and_key(tmp_path, label, change, message):
    kwargs = {"base": change.get("base"), "search": change.get("search"), "fixed": change.get("fixed"),
              "study": change.get("study"), "extra": change.get("extra")}
    path = write_space(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match=message) as raised:
        load_space(path)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(str(path))


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("study:\n  name: t\nsearch: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+: malformed YAML"):
        load_space(path)


def test_missing_study_section(tmp_path):
    path = tmp_path / "nostudy.yaml"
    path.write_text(yaml.safe_dump({"search": WKL_SEARCH}))
    with pytest.raises(ConfigError, match=r"nostudy\.yaml: study: missing"):
        load_space(path)
