"""A trial's checkpoints on disk: the training state a run resumes from, and the final result.

A training checkpoint holds `outputs.TRAIN_STATE` (format `STATE_FORMAT`); the final checkpoint holds
the student, its per-query scores, the trial config and the final report (`outputs.FINAL_METRICS`,
whose presence marks a finished trial). Ray Train hands a (re)started worker the latest one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainables.outputs import FINAL_METRICS, PER_QUERY, STUDENT_DIR, TRAIN_STATE, TRIAL_CONFIG

if TYPE_CHECKING:
    from trainables.config import TrialConfig
    from trainables.evaluate import EvalResult

STATE_FORMAT = 1


@dataclass
class TrainState:
    """What a training checkpoint holds: enough to continue the run step for step."""

    step: int                       # completed global steps
    student: dict[str, Any]         # state dicts
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rank_table: Tensor | None       # WKL's β ranks (losses/wkl_ranks.py), None for other losses
    train_seconds: float            # training time of all attempts so far
    last_loss: float                # the last logged train loss


@dataclass
class Resume:
    """What a worker starts from: nothing, a training state, or a finished trial's final metrics."""

    train_state: TrainState | None = None
    final_metrics: dict[str, Any] | None = None


def load_checkpoint(checkpoint) -> Resume:
    """The `Resume` held by a `ray.train.Checkpoint` (or None: start from scratch)."""
    if checkpoint is None:
        return Resume()
    with checkpoint.as_directory() as directory:
        final = Path(directory, FINAL_METRICS)
        if final.is_file():
            return Resume(final_metrics=json.loads(final.read_text())["metrics"])
        state_path = Path(directory, TRAIN_STATE)
        if not state_path.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint.path} holds neither {TRAIN_STATE} nor {FINAL_METRICS}")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"checkpoint {checkpoint.path}: train state format {state.get('format')}, expected {STATE_FORMAT}"
        )
    return Resume(train_state=TrainState(
        step=state["step"], student=state["student"], optimizer=state["optimizer"], scheduler=state["scheduler"],
        rank_table=state.get("rank_table"), train_seconds=state["train_s"], last_loss=state["last_loss"],
    ))


def save_train_state(directory: str, state: TrainState, steps_per_epoch: int, world: int) -> None:
    """Write a training checkpoint into `directory` (epoch and world size are recorded for readers)."""
    torch.save({
        "format": STATE_FORMAT, "step": state.step, "epoch": state.step // steps_per_epoch,
        "student": state.student, "optimizer": state.optimizer, "scheduler": state.scheduler,
        "rank_table": state.rank_table, "train_s": state.train_seconds, "last_loss": state.last_loss,
        "world_size": world,
    }, os.path.join(directory, TRAIN_STATE))


def save_final(directory: str, student, cfg: TrialConfig, final: dict[str, Any], result: EvalResult) -> None:
    """Write the final checkpoint: the student, per-query scores, the config and the final report."""
    student.save(os.path.join(directory, STUDENT_DIR))
    Path(directory, PER_QUERY).write_text(json.dumps(result.per_query))
    cfg.to_yaml(os.path.join(directory, TRIAL_CONFIG))
    Path(directory, FINAL_METRICS).write_text(json.dumps({"metrics": final, "eval_timings": result.timings}, indent=1))
