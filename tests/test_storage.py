"""study/run/storage.py and the environment of Ray processes: the storage root, cache_dir inside it, the node check."""
from __future__ import annotations

import pytest

from study.run.ray_session import forwarded_env
from study.run.storage import StorageError, check_nodes_see, node_label, storage_root, studies_root, under_storage
from trainables.config import ResourcesConfig, TrialConfig


def test_storage_root_takes_a_path_or_a_file_uri_and_refuses_object_stores(tmp_path):
    assert storage_root(None) is None
    assert storage_root(str(tmp_path)) == storage_root(f"file://{tmp_path}") == tmp_path.resolve()
    assert studies_root(tmp_path) == tmp_path / "kd-studies"
    with pytest.raises(StorageError, match=r"only a shared filesystem path .* not s3://"):
        storage_root("s3://bucket/kd")


def test_cache_and_output_dirs_go_under_the_storage_root_and_an_outside_one_is_refused(tmp_path):
    placed = under_storage(TrialConfig(), tmp_path)
    assert placed.cache_dir == str(tmp_path / ".kd-cache") and placed.output_dir == str(tmp_path / "kd-runs")
    assert under_storage(TrialConfig(cache_dir="assets"), tmp_path).cache_dir == str(tmp_path / "assets")
    inside = str(tmp_path / "x" / "cache")
    assert under_storage(TrialConfig(cache_dir=inside), tmp_path).cache_dir == inside
    with pytest.raises(StorageError, match=r"cache_dir /elsewhere is outside the storage root .*another node"):
        under_storage(TrialConfig(cache_dir="/elsewhere"), tmp_path)


def test_data_and_model_locations_reach_every_ray_process():
    env = {"IR_DATASETS_HOME": "/s/irds", "HF_HOME": "/s/hf", "KD_SHARED_DATA": "/s/data", "HF_HUB_OFFLINE": "1",
           "HOME": "/root", "PATH": "/bin"}
    assert forwarded_env(env) == {k: env[k] for k in ("IR_DATASETS_HOME", "HF_HOME", "KD_SHARED_DATA", "HF_HUB_OFFLINE")}


def test_custom_resources_pin_workers_and_cannot_shadow_cpu():
    assert ResourcesConfig(custom={"node2": 0.01}).custom == {"node2": 0.01}
    with pytest.raises(ValueError, match="'CPU' is set by num_workers"):
        ResourcesConfig(custom={"CPU": 1})
    with pytest.raises(ValueError, match="needs an amount > 0"):
        ResourcesConfig(custom={"node2": 0})


def test_every_node_of_a_local_ray_sees_a_local_folder_and_the_markers_are_cleaned_up(ray_local, tmp_path):
    check_nodes_see(ray_local, [tmp_path])
    assert not any((tmp_path / ".kd-storage-check").iterdir())
    node = {"NodeID": "ab" * 14, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 2.0, "node2": 1.0,
                                                                                  "node:10.0.0.2": 1.0}}
    assert node_label(node) == "abababababab (10.0.0.2, resources node2)"


def test_bad_storage_is_one_line_and_exit_2_before_anything_is_made(tmp_path, capsys, monkeypatch):
    from test_cli import one_error_line, space_file

    from study.cli.verbs import main

    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path)
    assert main(["--storage", "s3://bucket/kd", "run", str(space)]) == 2
    assert "only a shared filesystem path" in one_error_line(capsys.readouterr().err)
    # study.storage in the space, and a cache_dir the other nodes would not see
    text = space.read_text().replace("study:\n", f"study:\n  storage: {tmp_path / 'shared'}\n")
    space.write_text(text.replace("base:\n", "base:\n  cache_dir: /elsewhere/cache\n"))
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "run", str(space)]) == 2
    assert "cache_dir /elsewhere/cache is outside the storage root" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "shared").exists() and not (tmp_path / "kd-studies").exists()
