"""study/space/pins.py: `--set FIELD=VALUE` fixes the field for every trial and stops searching it everywhere (issue 27)."""
from __future__ import annotations

from pathlib import Path

import yaml

from study.cli.verbs import main
from study.space.schema import load_space

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def test_set_on_a_searched_field_of_the_quickstart_runs_its_points_at_that_value():
    """The quickstart's points_to_evaluate name sampler.k: `--set sampler.k=4` used to fail as "not a searched parameter"."""
    space = load_space(QUICKSTART, pin={"sampler.k": 4})
    assert "sampler.k" not in space.param_names and space.base.sampler.k == 4
    points = space.study.points_to_evaluate
    assert len(points) == 6 and all("sampler.k" not in point for point in points)
    assert all(space.trial_config(point).sampler.k == 4 for point in points)


def test_the_dry_run_with_set_on_a_searched_field_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--root", str(tmp_path / "studies"), "run", str(QUICKSTART), "--set", "sampler.k=4", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "search sampler.k" not in out and "search sampler.name" in out


def test_a_pinned_field_leaves_grid_baseline_and_contrasts():
    from study.space.pins import pin_fields

    raw = {"search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}},
           "study": {"name": "s", "grid": {"sampler.k": [4, 8]},
                     "points_to_evaluate": [{"loss.name": "kl", "sampler.k": 4}, {"loss.name": "kl", "sampler.k": 8}],
                     "baseline": {"sampler.k": 4},
                     "contrasts": [{"vs": {"sampler.k": 4}}, {"vs": {"loss.name": "kl"}, "within": ["sampler.k"]}]}}
    pinned = pin_fields(raw, {"sampler.k": 8})
    assert pinned["fixed"] == {"sampler.k": 8} and pinned["study"]["grid"] == {}
    assert pinned["study"]["points_to_evaluate"] == [{"loss.name": "kl"}]   # equal once pinned: kept once
    assert pinned["study"]["baseline"] is None
    assert pinned["study"]["contrasts"] == [{"vs": {"loss.name": "kl"}, "within": []}]
    assert raw["study"]["grid"] == {"sampler.k": [4, 8]}   # the file's mapping is left as it was


def test_a_pinned_grid_field_shrinks_the_grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
                                    "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}},
                                    "study": {"name": "g", "algorithm": "grid", "grid": {"sampler.k": [2, 4]}}}))
    assert load_space(path).num_samples == 4
    assert load_space(path, pin={"sampler.k": 2}).num_samples == 2
