"""Collectives on the training device: every collective a trial issues gets tensors on the device it trains on.

NCCL (Ray Train's GPU backend) takes CUDA tensors only, so a tensor made without a device (the
CPU's) crashes a multi-GPU trial at its first log step. Checked here without a GPU, in a real
2-process gloo group: the training device is declared `cpu` and tensors made without a device land
on `meta` (`with torch.device("meta")`), the roles CUDA and CPU play on a GPU worker; every
collective entry checks its tensors are on the declared device, and the object collectives, which
choose their own device, are refused.
"""
from __future__ import annotations

import ast
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.train import ddp
from trainables.config import TrialConfig
from trainables.train.rank_table import RankTable, initial_rank_table, refresh_columns, refresh_ranks
from trainables.outputs import QUERIES_PER_SECOND, TRAIN_LOSS
from trainables.train.loop import Window
from trainables.data.training_set import TrainingSet

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
TRAINING_DEVICE = torch.device("cpu")   # declared; tensors made without a device go to meta in the checks
TENSOR_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce",
                      "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather",
                      "scatter", "send", "recv")
# These pick a device of their own (the current CUDA device under NCCL), not the trial's.
DEVICELESS_COLLECTIVES = ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
                          "barrier", "monitored_barrier")


# ---- what the ranks run ----------------------------------------------------------------------------
class HashStudent:
    """A student whose embeddings are a fixed function of the text (the rank table's collectives are under test)."""

    def encode(self, texts, is_query: bool, batch_size: int = 64) -> np.ndarray:
        seeds = [int(hashlib.sha256(f"{is_query}{t}".encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(8) for s in seeds] or [np.zeros(8)])[:len(texts)]


def tiny_training_set(q: int = 7, p: int = 1, n: int = 6) -> TrainingSet:
    rng = np.random.default_rng(0)
    docs = q * (p + n)
    pos = np.arange(q * p).reshape(q, p)
    pool = q * p + np.arange(q * n).reshape(q, n)
    pool[0, -2:] = -1   # padded candidates
    return TrainingSet(
        [f"q{i}" for i in range(q)], [f"query {i}" for i in range(q)], [f"d{i}" for i in range(docs)],
        [f"passage {i}" for i in range(docs)], pos, pool,
        rng.standard_normal((q, p)).astype(np.float32), rng.standard_normal((q, n)).astype(np.float32),
        rng.standard_normal((q, p)).astype(np.float32), rng.standard_normal((q, n)).astype(np.float32))


def wkl_config() -> TrialConfig:
    return TrialConfig.from_dict({
        "data": {"train": {"id": "quickstart", "split": "train"}},
        "loss": {"name": "wkl", "alpha": 1.0, "beta_refresh_steps": 2, "beta_pool_depth": 3, "kl_warmup_steps": 0},
        "optim": {"batch_size": 2, "epochs": 1},
    })


def _check_devices(name: str, collective):
    def checked(*args, **kwargs):
        for value in [*args, *kwargs.values()]:
            for tensor in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(tensor, torch.Tensor) and tensor.device != TRAINING_DEVICE:
                    raise AssertionError(f"{name} got a tensor on {tensor.device}; the trial trains on {TRAINING_DEVICE}")
        return collective(*args, **kwargs)
    return checked


def _refuse(name: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} chooses its own device, not the trial's")
    return refused


def _rank_main(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for name in TENSOR_COLLECTIVES:
            if hasattr(dist, name):
                setattr(dist, name, _check_devices(name, getattr(dist, name)))
        for name in DEVICELESS_COLLECTIVES:
            setattr(dist, name, _refuse(name))
        out = {}
        with torch.device("meta"):   # a tensor made without the training device would land here
            window = Window()
            window.add(loss=1.0 + rank, b=2, diagnostics={"variance": 0.5, "entropy": 0.25}, global_size=4)
            out["window"] = window.flush(WORLD, TRAINING_DEVICE)
            out["objects"] = ddp.all_gather({"rank": rank}, WORLD, TRAINING_DEVICE)
            out["uneven"] = [t.tolist() for t in ddp.all_gather_tensors(
                torch.arange(rank + 1, device=TRAINING_DEVICE), WORLD, TRAINING_DEVICE)]
            ddp.barrier(WORLD, TRAINING_DEVICE)
        ts, cfg = tiny_training_set(), wkl_config()
        table = RankTable.start(ts, cfg.loss)
        table.refresh_if_due(HashStudent(), ts, cfg, 2, rank, WORLD, TRAINING_DEVICE)   # a refresh step
        full = refresh_ranks(HashStudent(), ts, initial_rank_table(ts), refresh_columns(ts, 3), rank, WORLD, 4,
                             device=TRAINING_DEVICE)
        out["full_refresh"] = full.tolist()
        results[rank] = out
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the tests -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_ranks():
    """What each rank of a 2-process gloo group computed, every collective checked (a few seconds)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(_free_port(), results), nprocs=WORLD, join=True)
        return dict(results)


def test_every_collective_of_a_trial_gets_tensors_on_the_training_device(two_ranks):
    """Fails on a Window.flush that all-reduces a tensor made without the device (a CPU tensor under NCCL)."""
    assert set(two_ranks) == {0, 1}


def test_the_window_averages_over_the_ranks(two_ranks):
    for rank in range(WORLD):
        metrics = two_ranks[rank]["window"]
        assert metrics[TRAIN_LOSS] == pytest.approx((1.0 * 2 + 2.0 * 2) / 4)
        assert np.isfinite(metrics[QUERIES_PER_SECOND])


def test_gathers_return_every_ranks_part_in_rank_order(two_ranks):
    for rank in range(WORLD):
        assert two_ranks[rank]["objects"] == [{"rank": 0}, {"rank": 1}]
        assert two_ranks[rank]["uneven"] == [[0], [0, 1]]


def test_two_ranks_refresh_the_rank_table_as_one_process_does(two_ranks):
    ts = tiny_training_set()
    one = refresh_ranks(HashStudent(), ts, initial_rank_table(ts), refresh_columns(ts, 3), 0, 1, 4, device="cpu")
    assert two_ranks[0]["full_refresh"] == two_ranks[1]["full_refresh"] == one.tolist()
    assert not torch.equal(one, initial_rank_table(ts))   # the refresh changed ranks


def test_only_trainables_ddp_calls_torch_distributed():
    """One home for collectives: a call elsewhere could put its tensors on any device."""
    offenders = []
    for path in [*ROOT.glob("trainables/**/*.py"), *ROOT.glob("study/**/*.py")]:
        if path == ROOT / "trainables" / "train" / "ddp.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "distributed" and \
                    isinstance(node.value, ast.Name) and node.value.id == "torch":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n.startswith("torch.distributed") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
