"""A loss and a sampler from another package: registered through entry points, swept beside kl and random.

The plugin is a one-file distribution (`my_kd_plugin.py` + its `.dist-info` with `entry_points.txt`) in a
temporary folder on PYTHONPATH: importlib.metadata finds it there as it finds a pip-installed one, so no
kd-study file changes and nothing is installed. The study runs as its own `kd-study` process (its Ray
workers inherit PYTHONPATH and import the plugin through the entry point in their own processes).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.test_study import cli, env, study_runs, write_space

PLUGIN = textwrap.dedent('''
    """my-kd-plugin: one loss (list_mse) and one sampler (bottomk) for kd-study."""
    from typing import Literal

    import numpy as np
    from pydantic import Field

    from trainables.registry import CheckRow, Derived, LossEntry, SamplerEntry
    from trainables.settings import LossSettings, SamplerSettings


    class ListMSESettings(LossSettings):
        name: Literal["list_mse"] = "list_mse"
        scale: float = Field(1.0, gt=0.0, description="student scores × scale before the squared error")


    def list_mse(cfg, student, teacher, positives, valid, *, step, state):
        """Mean over queries of the squared error between scaled student and teacher scores (padding out)."""
        import torch

        keep = valid if valid is not None else torch.ones_like(positives)
        error = torch.where(keep, student * cfg.scale - teacher, torch.zeros_like(student))
        return (error ** 2).sum(dim=1).mean()


    def scale_row(cfg, evidence):
        return Derived(cfg.loss.scale, f"student × {cfg.loss.scale:g}")


    class BottomKSettings(SamplerSettings):
        name: Literal["bottomk"] = "bottomk"


    def bottomk(scores, k, rng):
        """The K candidates the teacher scores lowest (easy negatives)."""
        return np.argsort(np.asarray(scores), kind="stable")[:k].astype(np.int64)


    LOSS = LossEntry("list_mse", ListMSESettings, list_mse, label="list MSE", summary="MSE of the score lists",
                     check=(CheckRow("list MSE scale", ("loss.scale",), scale_row),))
    SAMPLER = SamplerEntry("bottomk", BottomKSettings, bottomk, label="bottom-K", summary="the K lowest")
''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding the one-file plugin and its distribution metadata (what `pip install` would write)."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "my_kd_plugin.py").write_text(PLUGIN)
    dist = root / "my_kd_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-kd-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kd_study.losses]\nlist_mse = my_kd_plugin:LOSS\n\n"
                                           "[kd_study.samplers]\nbottomk = my_kd_plugin:SAMPLER\n")
    return root


def plugin_env(plugin_path: Path) -> dict[str, str]:
    base = env()
    return {**base, "PYTHONPATH": os.pathsep.join(p for p in (str(plugin_path), base.get("PYTHONPATH")) if p)}


def test_a_plugins_loss_and_sampler_are_selectable_from_a_config(plugin_path, tmp_path):
    """In a fresh process with the plugin on the path: its names validate, with their own typed settings."""
    code = textwrap.dedent('''
        from trainables.config import ConfigError, TrialConfig
        from trainables.registry import loss_entries, sampler_entries
        cfg = TrialConfig.from_dict({"loss": {"name": "list_mse", "scale": 2.0}, "sampler": {"name": "bottomk"}})
        print(list(loss_entries())[-1], list(sampler_entries())[-1], cfg.loss.scale, type(cfg.sampler).__name__)
        try:
            TrialConfig.from_dict({"loss": {"name": "kl", "scale": 2.0}}, source="x.yaml")
        except ConfigError as error:
            print(error)
    ''')
    result = subprocess.run([sys.executable, "-c", code], env=plugin_env(plugin_path), capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "list_mse bottomk 2.0 BottomKSettings"
    assert lines[1] == "x.yaml: loss: scale=2.0 is a setting of loss list_mse, not of 'kl'"


@pytest.mark.slow
def test_a_study_sweeps_a_plugins_loss_and_sampler_beside_kl_and_random(plugin_path, tmp_path, sample_data):
    """Two trials (list_mse + bottomk, kl + random): both train, pass `kd-study check` and appear in the report."""
    name = "tiny-plugin"
    search = {"loss.name": {"type": "categorical", "choices": ["kl", "list_mse"]},
              "sampler.name": {"type": "categorical", "choices": ["random", "bottomk"]}}
    points = [{"loss.name": "list_mse", "sampler.name": "bottomk"}, {"loss.name": "kl", "sampler.name": "random"}]
    space = write_space(tmp_path, sample_data, name, {"algorithm": "random", "num_samples": 2,
                                                      "points_to_evaluate": points}, search)
    raw = yaml.safe_load(space.read_text())
    raw["base"]["loss"]["scale"] = 0.5          # the plugin loss's own setting; KL trials do without it
    raw["base"]["optim"]["epochs"] = 1          # 2 steps a trial: training is what is tested, not learning
    raw["base"]["resources"]["num_workers"] = 1
    space.write_text(yaml.safe_dump(raw, sort_keys=False))

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(cli(tmp_path, *args), cwd=tmp_path, env=plugin_env(plugin_path), capture_output=True,
                                text=True, timeout=800)
        assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
        return result

    checked = run("check", str(space)).stdout
    assert "list MSE scale" in checked and "student × 0.5" in checked
    run("run", str(space), "--quiet")

    _, parents, trials = study_runs(tmp_path, name)
    assert len(parents) == 1 and len(trials) == 2
    by_loss = {r.data.params["loss.name"]: r for r in trials}
    assert set(by_loss) == {"kl", "list_mse"} and all(r.info.status == "FINISHED" for r in trials)
    assert by_loss["list_mse"].data.params["sampler.name"] == "bottomk"
    assert all("dev_mrr_at_10" in r.data.metrics for r in trials)
    report = "\n".join(p.read_text() for p in (tmp_path / "studies" / name / "report").glob("*.md"))
    assert "list_mse" in report and "bottomk" in report and "random" in report
