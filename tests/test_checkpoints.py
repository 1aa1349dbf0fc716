"""trainables/train/checkpoints.py without Ray: a train state survives the safe load, anything else is refused in one line;
a run folder is written by one run at a time (its lease)."""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainables.train import checkpoints
from trainables.train.checkpoints import (
    STATE_FORMAT, FolderBusy, FolderLease, TrainState, check_lease, read_checkpoint, read_lease, save_train_state,
)
from trainables.config import TrialConfig
from trainables.errors import CheckpointError
from trainables.outputs import LEASE, TRAIN_STATE
from trainables.train.step import make_optimizer

REPO = Path(__file__).resolve().parents[1]


def training(seed: int = 0):
    """A small model with the trial's own AdamW and linear schedule (what a train state holds)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer, scheduler = make_optimizer(model, TrialConfig.from_dict({"optim": {"lr": 1e-2}}, source="test"), 10)
    return model, optimizer, scheduler


def step(model, optimizer, scheduler, seed: int) -> None:
    torch.manual_seed(seed)
    optimizer.zero_grad()
    model(torch.randn(3, 4)).square().sum().backward()
    optimizer.step()
    scheduler.step()


def test_a_train_state_round_trips_and_the_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    model, optimizer, scheduler = training()
    for seed in range(3):
        step(model, optimizer, scheduler, seed)
    ranks = np.arange(12, dtype=np.float32).reshape(3, 4)     # handed as numpy: saved as a tensor
    save_train_state(str(tmp_path), TrainState(
        step=3, student=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        rank_table=ranks, train_seconds=np.float64(1.5), last_loss=float("nan"), eval_seconds=0.25),
        steps_per_epoch=2, world=2)

    saved = read_checkpoint(tmp_path).train_state
    assert saved.step == 3 and saved.train_seconds == 1.5 and math.isnan(saved.last_loss)
    assert saved.eval_seconds == 0.25     # a resumed trial's eval time keeps its earlier curve points
    assert type(saved.train_seconds) is float
    assert torch.equal(saved.rank_table, torch.from_numpy(ranks))

    resumed, resumed_optimizer, resumed_scheduler = training(seed=1)   # other initial weights
    resumed.load_state_dict(saved.student)
    resumed_optimizer.load_state_dict(saved.optimizer)
    resumed_scheduler.load_state_dict(saved.scheduler)
    step(model, optimizer, scheduler, 3)
    step(resumed, resumed_optimizer, resumed_scheduler, 3)
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()
    for before, after in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(before, after)


def test_a_format_1_checkpoint_is_one_clear_line(tmp_path):
    model, optimizer, scheduler = training()
    torch.save({"format": 1, "step": 2, "student": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rank_table": None, "train_s": 1.0, "last_loss": 0.5},
               tmp_path / TRAIN_STATE)
    wanted = rf"train state format 1, this version reads format {STATE_FORMAT} only"
    with pytest.raises(CheckpointError, match=wanted) as caught:
        read_checkpoint(tmp_path, where="runs/t/step_0000002")
    assert "runs/t/step_0000002" in str(caught.value) and "\n" not in str(caught.value)


class Planted:
    """What someone who can write the storage folder could leave in a checkpoint: code run on unpickling."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_holding_an_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"format": STATE_FORMAT, "step": 1, "student": {"w": Planted(marker)}}, folder / TRAIN_STATE)
    with pytest.raises(CheckpointError, match=r"a safe load .* refused train_state\.pt: Unsupported global") as caught:
        read_checkpoint(folder)
    assert not marker.exists()
    assert "\n" not in str(caught.value) and "weights_only` set to `False" not in str(caught.value)


def test_a_checkpoint_without_a_train_state_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="holds neither train_state.pt nor final_metrics.json"):
        read_checkpoint(tmp_path)


def test_no_checkpoint_or_cache_file_is_read_with_a_full_unpickler():
    pattern = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True")
    found = [f"{path.relative_to(REPO)}:{number}" for folder in ("study", "trainables")
             for path in sorted((REPO / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


# ---- the run folder's lease: one run writes a folder at a time ----------------------------------------
def write_lease(folder: Path, **held) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LEASE).write_text(json.dumps({"owner": "other", "host": socket.gethostname(), "pid": os.getpid(),
                                            "heartbeat": time.time(), **held}))


def test_a_lease_is_held_while_the_run_lives_and_released_after(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "LEASE_BEAT_S", 0.05)
    with FolderLease(tmp_path / "run") as lease:
        first = read_lease(tmp_path / "run")
        assert first["owner"] == lease.owner and first["pid"] == os.getpid()
        time.sleep(0.3)
        assert read_lease(tmp_path / "run")["heartbeat"] > first["heartbeat"]      # it beats
        check_lease(tmp_path / "run", lease.owner)                                  # its own workers go on
    assert read_lease(tmp_path / "run") is None


def test_a_live_holder_keeps_the_folder_and_the_second_run_fails_in_one_line(tmp_path):
    write_lease(tmp_path / "run")                  # this very process: alive, beating now
    started = time.monotonic()
    with pytest.raises(FolderBusy) as error:
        FolderLease(tmp_path / "run").acquire(wait_s=0.5, poll_s=0.1)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "\n" not in message and "another live run" in message and f"pid {os.getpid()}" in message
    assert read_lease(tmp_path / "run")["owner"] == "other"                        # untouched


@pytest.mark.parametrize("held", [
    {"heartbeat": time.time() - 3600},                              # stale: its holder stopped beating long ago
    {"pid": 2 ** 22 + 12345},                                       # on this host, and its process is gone
])
def test_a_lost_runs_lease_is_taken_over_at_once_and_its_workers_stop(tmp_path, held):
    write_lease(tmp_path / "run", **held)
    started = time.monotonic()
    lease = FolderLease(tmp_path / "run").acquire(wait_s=30)
    try:
        assert time.monotonic() - started < 5
        assert read_lease(tmp_path / "run")["owner"] == lease.owner
        # The lost run's workers, still running somewhere, stop before their next checkpoint.
        with pytest.raises(FolderBusy, match="was taken over by another run"):
            check_lease(tmp_path / "run", "other")
    finally:
        lease.release()


def test_a_holder_that_was_taken_over_stops_beating_and_leaves_the_new_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "LEASE_BEAT_S", 0.05)
    lease = FolderLease(tmp_path / "run").acquire()
    write_lease(tmp_path / "run", owner="new")
    time.sleep(0.3)
    lease.release()
    assert read_lease(tmp_path / "run")["owner"] == "new"
