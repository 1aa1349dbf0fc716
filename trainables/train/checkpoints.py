"""A trial's checkpoints on disk: the training state a run resumes from, and the final result.

A training checkpoint holds `outputs.TRAIN_STATE` (format `STATE_FORMAT`); the final checkpoint holds
the student, its per-query scores, the trial config and the final report (`outputs.FINAL_METRICS`,
whose presence marks a finished trial). Ray Train hands a (re)started worker the latest one.

The train state is read with `torch.load(weights_only=True)`: tensors, numbers, strings and plain
containers only, so whoever can write the storage folder cannot make every worker run their code.
`save_train_state` writes only such values. Format 1 (read with a full unpickler) is refused with a
one-line `CheckpointError`.

A run folder is written by one run at a time: `FolderLease` (a heartbeat file beside the checkpoints)
is held for the whole run, and every worker checks it before it writes a checkpoint (`check_lease`),
so a run whose driver was lost stops writing once a new run has taken the folder over.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from trainables.data.runfile import write_run_file
from trainables.disk import writing
from trainables.errors import CheckpointError
from trainables.outputs import (
    FINAL_METRICS, LEASE, PER_QUERY, RUNS_DIR, STUDENT_DIR, TRAIN_STATE, TRIAL_CONFIG, run_file_name,
)

if TYPE_CHECKING:
    from trainables.config import TrialConfig
    from trainables.evaluate.evaluation import EvalResult

STATE_FORMAT = 2   # 2: plain types only, read with weights_only=True


@dataclass
class TrainState:
    """What a training checkpoint holds: enough to continue the run step for step."""

    step: int                       # completed global steps
    student: dict[str, Any]         # state dicts
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rank_table: Tensor | None       # the loss state's table (registry LossEntry.state: WKL's β ranks), None without
    train_seconds: float            # training time of all attempts so far
    last_loss: float                # the last logged train loss
    curve_best: float = float("-inf")   # the learning curve's best value so far, and its step
    curve_best_step: int = 0
    eval_seconds: float = 0.0           # intermediate evaluations (learning curve, eval.every_steps) so far


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
        eval_seconds=state.get("eval_s", 0.0),
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
    with writing(os.path.join(directory, TRAIN_STATE)):   # torch's "unexpected pos" on a full disk: one line
        _save_state(directory, state, rank_table, steps_per_epoch, world)


def _save_state(directory: str, state: TrainState, rank_table, steps_per_epoch: int, world: int) -> None:
    torch.save({
        "format": STATE_FORMAT, "step": int(state.step), "epoch": int(state.step) // steps_per_epoch,
        "student": state.student, "optimizer": state.optimizer, "scheduler": state.scheduler,
        "rank_table": rank_table, "train_s": float(state.train_seconds), "last_loss": float(state.last_loss),
        "world_size": int(world), "curve_best": float(state.curve_best), "curve_best_step": int(state.curve_best_step),
        "eval_s": float(state.eval_seconds),
    }, os.path.join(directory, TRAIN_STATE))


def save_final(directory: str, student, cfg: TrialConfig, final: dict[str, Any], result: EvalResult) -> None:
    """Write the final checkpoint: the student, per-query scores, the config and the final report."""
    with writing(directory):
        _save_final(directory, student, cfg, final, result)


def _save_final(directory: str, student, cfg: TrialConfig, final: dict[str, Any], result: EvalResult) -> None:
    student.save(os.path.join(directory, STUDENT_DIR))
    Path(directory, PER_QUERY).write_text(json.dumps(result.per_query))
    for set_name, run in result.runs.items():   # re-scorable by trec_eval, ranx, pyserini, ir_measures
        write_run_file(Path(directory, RUNS_DIR, run_file_name(set_name)), run, tag=cfg.name)
    cfg.to_yaml(os.path.join(directory, TRIAL_CONFIG))
    Path(directory, FINAL_METRICS).write_text(json.dumps({"metrics": final, "eval_timings": result.timings}, indent=1))


# ---- who writes a run folder ---------------------------------------------------------------------
LEASE_BEAT_S = 4.0     # the holder rewrites its lease this often
LEASE_TTL_S = 20.0     # a lease not rewritten for this long belongs to a run that is gone
LEASE_OWNER_KEY = "lease_owner"   # the loop config's key: the owner token every worker checks


class FolderBusy(CheckpointError):
    """A folder another live run is writing; the message is one line."""


class FolderLease:
    """A folder's lease: `{owner, host, pid, heartbeat}` in `<folder>/lease.json`, rewritten every LEASE_BEAT_S.

    Why a file and not a Ray handle: the folder is what two runs must not share, and a file works
    whichever process (a driver, a Tune trial actor) or cluster holds it. A lease is free when it is
    absent, when its heartbeat is older than LEASE_TTL_S, or when its holder's process on this host
    is gone (a killed driver takes its trial actors with it: no need to wait out the TTL). The
    holder stops beating once someone else took the lease over; a run's workers then stop at their
    next checkpoint (`check_lease`).
    """

    def __init__(self, folder: str | Path, owner: str | None = None):
        self.folder = Path(folder)
        self.owner = owner or uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_s: float | None = None, poll_s: float = 1.0,
                on_wait: Callable[[str], None] | None = None) -> FolderLease:
        """Take the lease once it is free, waiting up to `wait_s` (default: until a lost holder's lease is stale)
        (`on_wait` hears why, once); else `FolderBusy`."""
        wait_s = LEASE_TTL_S + LEASE_BEAT_S if wait_s is None else wait_s
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            held = read_lease(self.folder)
            if held is None or held.get("owner") == self.owner or not lease_is_live(held):
                self._write()
                time.sleep(0.2)          # two runs taking a free lease at once: the last write wins, the other waits
                if (read_lease(self.folder) or {}).get("owner") == self.owner:
                    break
            elif time.monotonic() >= deadline:
                raise FolderBusy(f"{self.folder} is being written by another live run ({holder_text(held)}); "
                                 "wait for it to end or stop it")
            elif on_wait is not None and not told:
                on_wait(f"{self.folder} is held by another run ({holder_text(held)}); waiting up to {wait_s:.0f} s")
                told = True
            time.sleep(poll_s)
        self._thread = threading.Thread(target=self._beat, name="kd-study-lease", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop beating and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LEASE_BEAT_S + 1)
        if (read_lease(self.folder) or {}).get("owner") == self.owner:
            Path(self.folder, LEASE).unlink(missing_ok=True)

    def __enter__(self) -> FolderLease:
        return self.acquire() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.release()

    def _write(self) -> None:
        path = Path(self.folder, LEASE)
        tmp = path.with_name(f".{LEASE}.{self.owner}.tmp")
        tmp.write_text(json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                                   "heartbeat": time.time()}))
        os.replace(tmp, path)

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_BEAT_S):
            held = read_lease(self.folder)
            if held is not None and held.get("owner") != self.owner:
                return            # taken over: this run is the stale one
            try:
                self._write()
            except OSError:
                pass              # a full or flaky disk: the next beat tries again; the TTL covers a few


def read_lease(folder: str | Path) -> dict[str, Any] | None:
    """The lease of a folder, or None (absent or half-written)."""
    try:
        held = json.loads(Path(folder, LEASE).read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def lease_age(held: dict[str, Any]) -> float:
    """Seconds since the holder last beat (wall clocks: hosts sharing a folder keep them within seconds)."""
    try:
        return time.time() - float(held.get("heartbeat", 0.0))
    except (TypeError, ValueError):
        return float("inf")


def lease_is_live(held: dict[str, Any]) -> bool:
    """A recent heartbeat, and (when the holder ran on this host) its process still exists."""
    if lease_age(held) > LEASE_TTL_S:
        return False
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass                  # alive, owned by another user
    return True


def holder_text(held: dict[str, Any]) -> str:
    return (f"owner {str(held.get('owner'))[:8]} on {held.get('host')} pid {held.get('pid')}, "
            f"last heartbeat {lease_age(held):.0f} s ago")


def check_lease(folder: str | Path, owner: str | None) -> None:
    """Before a worker writes a checkpoint: `FolderBusy` if another run has taken the folder over.

    A run whose driver was lost but whose workers live on would otherwise keep writing (and
    pruning) checkpoints under the run that resumed the trial.
    """
    if owner is None:
        return
    held = read_lease(folder)
    if held is not None and held.get("owner") != owner:
        raise FolderBusy(f"run folder {folder} was taken over by another run ({holder_text(held)}); "
                         "this run stops so that two runs never write it at once")
