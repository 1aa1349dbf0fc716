"""A trial's checkpoints on disk: the training state a run resumes from, and the final result.

A training checkpoint holds `outputs.TRAIN_STATE` (format `STATE_FORMAT`); the final checkpoint holds
the student, its per-query scores, the trial config and the final report (`outputs.FINAL_METRICS`,
whose presence marks a finished trial). Ray Train hands a (re)started worker the latest one.

The train state is read with `torch.load(weights_only=True)`: tensors, numbers, strings and plain
containers only, so whoever can write the storage folder cannot make every worker run their code.
`save_train_state` writes only such values. Format 1 (read with a full unpickler) is refused with a
one-line `CheckpointError`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainables.data.runfile import write_run_file
from trainables.errors import CheckpointError
from trainables.outputs import FINAL_METRICS, PER_QUERY, RUNS_DIR, STUDENT_DIR, TRAIN_STATE, TRIAL_CONFIG, run_file_name

if TYPE_CHECKING:
    from trainables.config import TrialConfig
    from trainables.evaluate import EvalResult

STATE_FORMAT = 2   # 2: plain types only, read with weights_only=True


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
    curve_best: float = float("-inf")   # the learning curve's best value so far, and its step
    curve_best_step: int = 0


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
        return read_checkpoint(directory, where=checkpoint.path)


def read_checkpoint(directory: str | Path, where: str | None = None) -> Resume:
    """The `Resume` held by a checkpoint folder; `where` names it in errors (default: the folder)."""
    where = where or str(directory)
    final = Path(directory, FINAL_METRICS)
    if final.is_file():
        return Resume(final_metrics=json.loads(final.read_text())["metrics"])
    state_path = Path(directory, TRAIN_STATE)
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint {where} holds neither {TRAIN_STATE} nor {FINAL_METRICS}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a refused object, a truncated file: pickle raises several types
        raise CheckpointError(
            f"checkpoint {where}: a safe load (tensors and plain values only) refused {TRAIN_STATE}: "
            f"{_refusal(error)}; delete the run folder to start over"
        ) from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != STATE_FORMAT:
        raise CheckpointError(
            f"checkpoint {where}: train state format {found}, this version reads format {STATE_FORMAT} only "
            "(written by an older kd-study); delete the run folder to start over"
        )
    return Resume(train_state=TrainState(
        step=state["step"], student=state["student"], optimizer=state["optimizer"], scheduler=state["scheduler"],
        rank_table=state.get("rank_table"), train_seconds=state["train_s"], last_loss=state["last_loss"],
        curve_best=state.get("curve_best", float("-inf")), curve_best_step=state.get("curve_best_step", 0),
    ))


def _refusal(error: Exception) -> str:
    """The one line of a `torch.load` error that says what it refused (not the advice to unpickle anyway)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip().split(". ")[0]
    return lines[0] if lines else type(error).__name__


def save_train_state(directory: str, state: TrainState, steps_per_epoch: int, world: int) -> None:
    """Write a training checkpoint into `directory` (epoch and world size are recorded for readers).

    Only what a safe load reads back: torch state dicts (tensors, numbers, strings, plain
    containers; the LR schedule's lambdas are saved as their plain `__dict__`), the rank table as a
    tensor (even if handed a numpy array) and the scalars as Python numbers.
    """
    rank_table = None if state.rank_table is None else torch.as_tensor(state.rank_table)
    torch.save({
        "format": STATE_FORMAT, "step": int(state.step), "epoch": int(state.step) // steps_per_epoch,
        "student": state.student, "optimizer": state.optimizer, "scheduler": state.scheduler,
        "rank_table": rank_table, "train_s": float(state.train_seconds), "last_loss": float(state.last_loss),
        "world_size": int(world), "curve_best": float(state.curve_best), "curve_best_step": int(state.curve_best_step),
    }, os.path.join(directory, TRAIN_STATE))


def save_final(directory: str, student, cfg: TrialConfig, final: dict[str, Any], result: EvalResult) -> None:
    """Write the final checkpoint: the student, per-query scores, the config and the final report."""
    student.save(os.path.join(directory, STUDENT_DIR))
    Path(directory, PER_QUERY).write_text(json.dumps(result.per_query))
    for set_name, run in result.runs.items():   # re-scorable by trec_eval, ranx, pyserini, ir_measures
        write_run_file(Path(directory, RUNS_DIR, run_file_name(set_name)), run, tag=cfg.name)
    cfg.to_yaml(os.path.join(directory, TRIAL_CONFIG))
    Path(directory, FINAL_METRICS).write_text(json.dumps({"metrics": final, "eval_timings": result.timings}, indent=1))
