"""Shared fixtures: the real samples that ship in tests/data, the full sets in ../shared/data when present, one local Ray."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """`tests/data`: the small real samples that ship with the repository (scifact_ci, dl19_sample)."""
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full sets in `../shared/data` (or $KD_SHARED_DATA), for the few tests about them: skipped in a bare clone."""
    path = Path(os.environ.get("KD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"full SciFact not found at {path} (set KD_SHARED_DATA); the shipped samples cover the rest")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs, temp dir outside the tree, shut down at the end)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray_kd_", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        yield ray
    finally:
        ray.shutdown()
