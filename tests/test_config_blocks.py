"""The `loss:` / `sampler:` blocks: one typed model per registered name, and the configs written before them."""
from __future__ import annotations

import pytest
import yaml

from trainables.config import ConfigError, TrialConfig

# What kd-study dumped for a loss block before the per-loss models: every loss's fields, at their defaults.
FLAT_KL = {"name": "kl", "gamma1": 0.0, "alpha": 0.0, "nll_weight": 1.0, "teacher_temperature": 1.0,
           "student_temperature": 1.0, "beta_refresh_steps": 200, "beta_pool_depth": 20, "kl_warmup_steps": 0,
           "gamma2_floor": None, "student_scale": "auto", "in_batch_weight": 0.0}
FLAT_SAMPLER = {"name": "stratified", "k": 8, "top_n": 20, "on_small_pool": "error"}


def test_a_flat_block_dumped_before_the_union_still_loads():
    cfg = TrialConfig.from_dict({"loss": FLAT_KL, "sampler": FLAT_SAMPLER})
    assert type(cfg.loss).__name__ == "KLSettings" and not hasattr(cfg.loss, "gamma1")
    assert TrialConfig.from_dict({"loss": {**FLAT_KL, "name": "wkl", "gamma1": 2.0}}).loss.gamma1 == 2.0
    assert TrialConfig.from_dict({"loss": {**FLAT_KL, "name": "margin_mse"}}).loss.student_scale == "auto"


def test_another_losss_setting_off_its_default_is_one_line_naming_file_and_key():
    with pytest.raises(ConfigError, match=r"^t\.yaml: loss: gamma1=2\.0 is a setting of loss wkl, not of 'kl'$"):
        TrialConfig.from_dict({"loss": {"name": "kl", "gamma1": 2.0}}, source="t.yaml")
    with pytest.raises(ConfigError, match=r"^t\.yaml: sampler: top_n=5 is a setting of sampler teacher_top_n, not of "
                                          r"'topk'$"):
        TrialConfig.from_dict({"sampler": {"name": "topk", "top_n": 5}}, source="t.yaml")
    with pytest.raises(ConfigError, match=r"^t\.yaml: loss\.gama1: unknown key$"):
        TrialConfig.from_dict({"loss": {"name": "wkl", "gama1": 2.0}}, source="t.yaml")


def test_a_dumped_config_round_trips_and_stays_auto(tmp_path):
    cfg = TrialConfig.from_dict({"loss": {"name": "margin_mse"}, "teacher": {"kind": "cross_encoder", "model": "x"}})
    cfg.to_yaml(tmp_path / "t.yaml")
    assert yaml.safe_load((tmp_path / "t.yaml").read_text())["loss"] == {
        "name": "margin_mse", "teacher_temperature": 1.0, "student_temperature": 1.0, "in_batch_weight": 0.0,
        "student_scale": "auto"}
    again = TrialConfig.from_yaml(tmp_path / "t.yaml")
    assert again == cfg and again.loss.margin_scale == 20.0


def test_a_run_folder_recorded_with_a_flat_block_resumes(tmp_path):
    """A trial's run folder records its config; one written before the per-loss blocks is the same trial."""
    from trainables.train.trial import RUN_CONFIG, _claim_run_dir

    cfg = TrialConfig.from_dict({"loss": {"name": "kl"}, "cache_dir": str(tmp_path), "output_dir": str(tmp_path)})
    old = cfg.model_dump(mode="json")
    old["loss"] = {**FLAT_KL, "beta_refresh_steps": 4}        # quickstart's KL trials carried WKL's interval
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_CONFIG).write_text(yaml.safe_dump(old))
    _claim_run_dir(tmp_path / "run", cfg)                      # the same trial: no error
    with pytest.raises(ConfigError, match=r"different trial config \(changed: loss\.student_temperature\)"):
        _claim_run_dir(tmp_path / "run", cfg.with_overrides({"loss.student_temperature": 0.5}))


def test_a_study_json_space_with_a_flat_base_gives_wkl_trials_their_settings(tmp_path):
    """study.json keeps the space with its base inline, dumped flat by older versions: resume reads it so."""
    from study.space.schema import dump_space, load_space

    space = {"base": {"loss": {**FLAT_KL, "beta_refresh_steps": 4}, "data": {"pool_depth": 32}},
             "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}},
             "study": {"name": "old", "algorithm": "grid", "metric": "dev_mrr_at_10"}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    loaded = load_space(tmp_path / "space.yaml")
    wkl = loaded.trial_config({"loss.name": "wkl"})
    assert wkl.loss.beta_refresh_steps == 4 and not hasattr(loaded.trial_config({"loss.name": "kl"}).loss, "gamma1")
    (tmp_path / "again.yaml").write_text(dump_space(loaded))
    assert load_space(tmp_path / "again.yaml").trial_config({"loss.name": "wkl"}).loss.beta_refresh_steps == 4


def test_a_config_pickled_by_an_older_version_unpickles_with_the_block_of_its_name():
    """Tune pickled a study's space (its base TrialConfig, flat `trainables.config.LossConfig` blocks inside) into
    the searcher: a resumed study unpickles it."""
    import pickle

    from trainables.config import LossConfig, SamplerConfig

    old = TrialConfig.model_construct(**{**dict(TrialConfig()), "loss": LossConfig(**{**FLAT_KL, "beta_refresh_steps": 4}),
                                         "sampler": SamplerConfig(**FLAT_SAMPLER)})
    data = pickle.dumps(old)
    assert b"trainables.config" in data and b"LossConfig" in data            # the names older pickles hold
    again = pickle.loads(data)
    assert type(again.loss).__name__ == "KLSettings" and type(again.sampler).__name__ == "StratifiedSettings"
    assert again == TrialConfig()
