"""Teacher scoring in shards: a killed build resumes with the missing shards only, to the same assets."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from test_candidates import scifact_ci
from test_teacher import _trial
from trainables.models import teacher as teacher_module
from trainables.prepare import teacher_shards
from trainables.prepare.assets import prepare_assets
from trainables.prepare.teacher_shards import ShardProgress, shard_bounds, shard_folder
from trainables.data.training_set import load_npz_checked


class DriverKilled(BaseException):
    """What a killed driver looks like to the build: it stops right after a shard was written."""


def arrays_digest(path: str | Path) -> str:
    """sha256 of a cache file's arrays (names, dtypes, shapes, bytes): npz bytes also hold write times."""
    arrays, status = load_npz_checked(Path(path))
    assert status == "hit", f"{path}: {status}"
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@pytest.fixture()
def forward_calls(monkeypatch) -> list[int]:
    """Counts the teacher model's forward calls (a hook on every teacher built), whatever counts the code keeps."""
    calls = [0]
    real = teacher_module.build_teacher

    def counting(*args, **kwargs):
        teacher = real(*args, **kwargs)
        model = teacher.encoder.model if hasattr(teacher, "encoder") else teacher.model
        model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        return teacher

    monkeypatch.setattr(teacher_module, "build_teacher", counting)
    return calls


def test_shard_bounds_depend_on_query_count_and_shard_size_only():
    assert shard_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert shard_bounds(4, 2) == [(0, 2), (2, 4)] and shard_bounds(0, 2) == []


def test_progress_line_says_shards_rate_and_eta():
    line = ShardProgress(3, 10, 4500, 15000, 1500.0, 7.0).line()
    assert line == "teacher scores: 3/10 shards, 4,500/15,000 pairs, 1,500 pairs/s, ETA 7s"
    assert ShardProgress(1, 2, 1, 2, 0.0, None).line().endswith("0 pairs/s")
    assert "ETA 2h05m" in ShardProgress(1, 2, 1, 2, 1.0, 7500.0).line()


def test_the_assets_line_says_when_cached_shards_were_reused():
    from study.run.assets import assets_line

    line = assets_line({"n_train_queries": 6, "teacher_pairs_scored": 40, "teacher_shards": 3,
                        "teacher_shards_scored": 2})
    assert line == ("kd-study: assets ready (6 training queries, 40 teacher pairs scored "
                    "(2 of 3 shards; the others were cached by an interrupted build))")


def test_a_driver_killed_after_a_shard_rescores_only_the_missing_shards_to_identical_assets(
        sample_data, tmp_path, forward_calls, monkeypatch):
    # In this process, whatever an earlier test left running: the forward calls are counted here.
    monkeypatch.setattr(teacher_shards, "_ray_ready", lambda: False)
    data = scifact_ci(sample_data)
    uninterrupted_cfg = _trial(sample_data, tmp_path / "whole", shard_queries=2)   # 6 queries: 3 shards
    uninterrupted = prepare_assets(uninterrupted_cfg, progress=False, data=data)
    whole_calls, forward_calls[0] = forward_calls[0], 0
    assert uninterrupted.stats["teacher_shards"] == 3 and uninterrupted.stats["teacher_ran"] == "in-process"

    cfg = _trial(sample_data, tmp_path / "killed", shard_queries=2)
    seen: list[ShardProgress] = []

    def killed_after_the_first_shard(progress: ShardProgress) -> None:
        seen.append(progress)
        raise DriverKilled

    with pytest.raises(DriverKilled):
        prepare_assets(cfg, progress=False, data=data, on_teacher_progress=killed_after_the_first_shard)
    first_calls, forward_calls[0] = forward_calls[0], 0
    teacher_path = tmp_path / "killed" / "teacher" / f"{uninterrupted.keys['teacher']}.npz"
    assert not teacher_path.exists()
    assert sorted(p.name for p in shard_folder(teacher_path, 2).glob("*.npz")) == ["00000.npz"]
    assert seen[0].shards_done == 1 and seen[0].shards_total == 3 and seen[0].pairs_per_s > 0

    resumed = prepare_assets(cfg, progress=False, data=data)
    assert resumed.stats["teacher_shards_scored"] == 2
    assert 0 < forward_calls[0] < whole_calls and first_calls + forward_calls[0] == whole_calls
    assert resumed.stats["teacher_forward_passes"] == forward_calls[0]
    assert resumed.stats["teacher_pairs_scored"] < uninterrupted.stats["teacher_pairs_scored"]
    assert resumed.keys == uninterrupted.keys
    assert arrays_digest(teacher_path) == arrays_digest(tmp_path / "whole" / "teacher" / teacher_path.name)
    assert arrays_digest(resumed.training_set_path) == arrays_digest(uninterrupted.training_set_path)
    assert not teacher_path.with_suffix(".shards").exists(), "the shards are removed once assembled"


@pytest.mark.slow
def test_under_ray_each_shard_is_a_task_and_the_assets_equal_the_in_process_build(
        sample_data, tmp_path, ray_local, monkeypatch):
    data = scifact_ci(sample_data)
    in_ray = prepare_assets(_trial(sample_data, tmp_path / "ray", shard_queries=4), progress=False, data=data)
    assert in_ray.stats["teacher_ran"] == "ray-cpu" and in_ray.stats["teacher_shards_scored"] == 2
    assert in_ray.stats["teacher_forward_passes"] > 0
    monkeypatch.setattr(teacher_shards, "_ray_ready", lambda: False)   # the same build without Ray
    here = prepare_assets(_trial(sample_data, tmp_path / "here", shard_queries=4), progress=False, data=data)
    assert here.stats["teacher_ran"] == "in-process"
    name = f"{here.keys['teacher']}.npz"
    assert arrays_digest(tmp_path / "ray" / "teacher" / name) == arrays_digest(tmp_path / "here" / "teacher" / name)
