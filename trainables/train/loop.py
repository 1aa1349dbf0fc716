"""The per-worker distillation loop that Ray Train runs: plan → (β refresh) → step → report → checkpoint.

Every worker maps the TrainingSet and its token ids and holds the student; DDP averages gradients. Beside
this driver: the epoch plan (`epoch_plan.py`: which queries, positives and candidates each rank trains on),
its batches (`input_pipeline.py`), one step (`step.py`), WKL's rank table for β (`rank_table.py`)
and checkpoint I/O (`checkpoints.py`). What the loop carries from step to step is one `LoopState`.

Determinism: the plan is a pure function of (seed, epoch, rank, world) and dropout is seeded per
step from (seed, step). A resumed run rebuilds the same plan and skips the steps its checkpoint says
are done, so at the same world size it repeats the uninterrupted run step for step (same batches,
weights, optimizer state, β).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from trainables.train.checkpoints import (
    LEASE_OWNER_KEY, TrainState, check_lease, load_checkpoint, save_final, save_train_state,
)
from trainables.config import TrialConfig
from trainables.train.ddp import all_reduce_sum, eval_shard, unwrap
from trainables.disk import writing
from trainables.train.epoch_plan import RankBatch, check_sizes, steps_per_epoch, total_steps
from trainables.train.input_pipeline import training_batches
from trainables.registry import loss_entry
from trainables.outputs import (
    BEST_STEP, CHECKPOINT_SECONDS, EVAL_SECONDS, FINAL_LOSS, LEARNING_RATE, QUERIES_PER_SECOND, RESUMED_FROM,
    SAMPLED_SCORE_ENTROPY, SAMPLED_SCORE_VARIANCE, STAGING_DIR, TRAIN_LOSS, TRAIN_SECONDS, WORKER_SETUP_SECONDS,
    curve_best_key, curve_metric_key,
)
from trainables.train.precision import autocast, autocast_dtype
from trainables.samplers import score_diagnostics
from trainables.train.step import DistillScorer, StepInputs, make_optimizer, step_ranks, train_step
from trainables.data.training_set import TrainingSet


# ---- the Ray Train entry point --------------------------------------------------------------------
def train_loop_per_worker(loop_config: dict) -> None:
    """Train, checkpoint and evaluate one trial on this Ray Train worker.

    loop_config: {"trial": TrialConfig.model_dump(mode="json"), "training_set": path to the .npz,
    "run_dir": the trial's storage folder (checkpoints are staged in it before Ray copies them)},
    optionally "student_init": the warm start's state_dict (`init: {from: warmup}`, warm_start.py) and
    "hooks": a test's `TrainHooks` (trainables/train/hooks.py: a fault before a step, a NaN loss).
    """
    started = time.perf_counter()
    import ray.train
    import ray.train.torch

    import trainables.evaluate.evaluation  # noqa: F401  (faiss, ir_measures: loading them is part of the worker's setup)

    cfg = TrialConfig.model_validate(loop_config["trial"])
    context = ray.train.get_context()
    worker = Worker.start(cfg, TrainingSet.load(loop_config["training_set"], mapped=True), context.get_world_rank(),
                          context.get_world_size(), ray.train.torch.get_device(), loop_config["run_dir"],
                          loop_config.get(LEASE_OWNER_KEY))

    worker.check_lease()    # a lost run's restarted workers must not touch the folder a new run took over
    if worker.rank == 0:    # what a killed attempt left half-written
        shutil.rmtree(worker.staging, ignore_errors=True)
    resume = load_checkpoint(ray.train.get_checkpoint())
    if resume.final_metrics is not None:    # a finished trial (same storage and name) reports again and stops
        ray.train.report(resume.final_metrics)
        return
    training = Training.build(worker, resume.train_state, loop_config.get("student_init"))
    state = LoopState.resume(worker, resume.train_state)
    tokens, batches = training_batches(loop_config["training_set"], worker.ts, training.student, cfg, worker.rank,
                                       worker.world, state.step, worker.steps, worker.device)

    training.model.train()
    state.setup_seconds = state.restart_phase() - started
    hooks = loop_config.get("hooks")
    for batch, inputs in batches:
        if hooks is not None:
            hooks.before_step(state.step + 1, worker.rank, worker.world, worker.device)
        if state.loss_state is not None:
            state.loss_state.before_step(training.student, worker.ts, cfg, state.step, worker.rank, worker.world,
                                         worker.device, tokens=tokens)
        _train_on(batch, inputs, worker, training, state, nan_loss=hooks is not None and hooks.nan_loss(state.step + 1))
        _report_if_due(worker, training, state)

    _final_report(worker, training, state)


# ---- what the loop works with ---------------------------------------------------------------------
@dataclass(frozen=True)
class Worker:
    """This worker's part in the run: the typed config, the TrainingSet, its rank, device and step budget."""

    cfg: TrialConfig
    ts: TrainingSet
    rank: int
    world: int
    device: torch.device
    autocast_dtype: torch.dtype | None   # resources.precision on this device (None: fp32)
    steps: int                  # total global steps of the run
    steps_per_epoch: int
    staging: Path               # inside the trial's run folder: rank 0 writes checkpoints here for Ray to copy
    curve_steps: frozenset[int]  # learning-curve points (eval.at_fractions): the dev set is evaluated there
    lease_owner: str | None = None   # the run folder's lease this run holds (checkpoints.FolderLease)

    @classmethod
    def start(cls, cfg: TrialConfig, ts: TrainingSet, rank: int, world: int, device: torch.device,
              run_dir: str, lease_owner: str | None = None) -> Worker:
        check_sizes(len(ts), cfg.optim.batch_size, world)
        steps = total_steps(cfg, len(ts))
        return cls(cfg, ts, rank, world, device, autocast_dtype(cfg.resources.precision, device),
                   steps, steps_per_epoch(len(ts), cfg.optim.batch_size), Path(run_dir, STAGING_DIR),
                   frozenset(cfg.eval.curve_steps(steps)), lease_owner)

    def check_lease(self) -> None:
        """Before writing a checkpoint: stop if another run took the run folder over (a lost driver's workers)."""
        check_lease(self.staging.parent, self.lease_owner)


@dataclass
class Training:
    """What a step updates: the student, its DDP wrapper (the scorer), the optimizer and LR schedule."""

    student: Any                # trainables.models.student.BiEncoder, inside `model`
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any

    @classmethod
    def build(cls, worker: Worker, saved: TrainState | None, init: str | None = None) -> Training:
        """A fresh student (seeded; from the warm start `init` when given) or the checkpoint's, wrapped for
        DDP, with its optimizer and schedule."""
        import ray.train.torch

        from trainables.models.student import BiEncoder

        torch.manual_seed(worker.cfg.seed)
        student = BiEncoder.from_config(worker.cfg.student, worker.cfg.cache_dir)
        if saved is not None:
            student.load_state_dict(saved.student)
        elif init is not None:
            from trainables.train.warm_start import load_warm_start

            load_warm_start(student, init)
        model = ray.train.torch.prepare_model(DistillScorer(student))
        optimizer, scheduler = make_optimizer(model, worker.cfg, worker.steps)
        if saved is not None:
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
        return cls(unwrap(model).student, model, optimizer, scheduler)


class Window:
    """Loss, sampling diagnostics and training seconds since the last log, reduced over ranks when flushed."""

    def __init__(self) -> None:
        self.sums = np.zeros(5)      # loss·b, b, variance·b, entropy·b, global queries
        self.seconds = 0.0
        self.start = time.perf_counter()

    def restart(self) -> None:
        """Resume timing now: reports, checkpoints and evaluations do not count as training time."""
        self.start = time.perf_counter()

    def add(self, loss: float, b: int, diagnostics: dict[str, float], global_size: int) -> None:
        now = time.perf_counter()
        self.seconds += now - self.start
        self.start = now
        self.sums += [loss * b, b, diagnostics["variance"] * b, diagnostics["entropy"] * b, global_size / 1.0]

    def flush(self, world: int, device: torch.device) -> dict[str, float]:
        """The window's means over every rank (the sums travel on the training `device`: NCCL takes no CPU tensor)."""
        loss_b, b, variance_b, entropy_b, queries, seconds = all_reduce_sum(np.append(self.sums, self.seconds),
                                                                            world, device).tolist()
        queries, seconds = queries / world, seconds / world   # every rank counted the global batch
        self.sums, self.seconds = np.zeros(5), 0.0
        return {
            TRAIN_LOSS: loss_b / b,
            SAMPLED_SCORE_VARIANCE: variance_b / b,
            SAMPLED_SCORE_ENTROPY: entropy_b / b,
            QUERIES_PER_SECOND: queries / seconds if seconds > 0 else float("nan"),
        }


@dataclass
class LoopState:
    """What the loop carries from step to step; a training checkpoint saves it with the weights."""

    step: int = 0                           # completed global steps
    loss_state: Any = None                  # the loss's per-step state (registry `LossEntry.state`: WKL's
                                            # rank table), None for a stateless loss
    last_loss: float = float("nan")         # the last logged train loss
    train_seconds: float = 0.0              # all attempts; reports, evaluations and checkpoints excluded
    eval_seconds: float = 0.0               # all attempts' intermediate evaluations (curve points, every_steps)
    resumed_from: int = 0                   # the step this attempt started at
    setup_seconds: float = 0.0              # this attempt: model, training set, DDP wrap
    checkpoint_seconds: float = 0.0         # this attempt's intermediate checkpoints
    phase_start: float = 0.0                # when training last resumed after a report
    best: Best = field(default_factory=lambda: Best())
    window: Window = field(default_factory=Window)

    @classmethod
    def resume(cls, worker: Worker, saved: TrainState | None) -> LoopState:
        kind = loss_entry(worker.cfg.loss.name).state_class()
        loss_state = kind.start(worker.ts, worker.cfg.loss, saved.rank_table if saved else None) if kind else None
        if saved is None:
            return cls(loss_state=loss_state)
        return cls(step=saved.step, loss_state=loss_state, last_loss=saved.last_loss,
                   train_seconds=saved.train_seconds, eval_seconds=saved.eval_seconds, resumed_from=saved.step,
                   best=Best(saved.curve_best, saved.curve_best_step))

    def restart_phase(self) -> float:
        """Training time counts again from now; returns now."""
        self.window.restart()
        self.phase_start = time.perf_counter()
        return self.phase_start

    def pause_phase(self) -> None:
        self.train_seconds += time.perf_counter() - self.phase_start

    def train_state(self, training: Training) -> TrainState:
        return TrainState(step=self.step, student=training.student.state_dict(),
                          optimizer=training.optimizer.state_dict(), scheduler=training.scheduler.state_dict(),
                          rank_table=self.loss_state.table if self.loss_state is not None else None,
                          train_seconds=self.train_seconds, last_loss=self.last_loss,
                          curve_best=self.best.value, curve_best_step=self.best.step,
                          eval_seconds=self.eval_seconds)


@dataclass
class Best:
    """The best point of the learning curve so far (value of `outputs.curve_metric_key`, its step)."""

    value: float = float("-inf")
    step: int = 0

    def update(self, metrics: dict[str, Any], key: str | None, step: int) -> None:
        """Keep `metrics[key]` at `step` when it beats the best (strictly: ties keep the earlier step)."""
        if key is not None and key in metrics and metrics[key] > self.value:
            self.value, self.step = float(metrics[key]), step

    def report(self, key: str | None) -> dict[str, float]:
        """`{<key>_best: value, best_step: step}` for the final report; {} without a curve."""
        if key is None or self.value == float("-inf"):
            return {}
        return {curve_best_key(key): self.value, BEST_STEP: self.step}


# ---- the loop's parts -----------------------------------------------------------------------------
def _train_on(batch: RankBatch, inputs: StepInputs, worker: Worker, training: Training, state: LoopState,
              nan_loss: bool = False) -> None:
    """One global step on this rank's share; counts it and adds its loss and diagnostics to the window.

    `nan_loss` (`TrainHooks.nan_loss_at_step`): NaN teacher scores make this step's loss NaN, as a
    diverging run's would be; `train_step` then raises `Diverged`.
    """
    cfg = worker.cfg
    torch.manual_seed(cfg.seed * 1_000_003 + state.step)   # dropout by (seed, step): a resumed run repeats
    if state.loss_state is not None:   # read now: a β refresh may have changed the table since the loader built it
        inputs.student_ranks = step_ranks(worker.ts, batch, state.loss_state.table)
    if nan_loss:
        inputs.teacher_scores = torch.full_like(inputs.teacher_scores, float("nan"))
    loss = train_step(training.model, training.optimizer, training.scheduler, inputs, cfg.loss, state.step,
                      cfg.optim.max_grad_norm, worker.device, worker.autocast_dtype)
    state.step += 1
    # Entropy at the teacher temperature the loss uses: the distribution the student is asked to match.
    diagnostics = score_diagnostics(inputs.sampled_teacher_scores, cfg.loss.teacher_temperature)
    state.window.add(loss, len(batch.query_idx), diagnostics, batch.global_size)


def reports_due(step: int, cfg: TrialConfig, steps: int, per_epoch: int,
                curve_steps: frozenset[int] = frozenset()) -> tuple[bool, str | None, bool]:
    """(log, evaluate, checkpoint) after `step` completed steps of `steps`; evaluate is "all", "selection" or None.

    Log every `log_every_steps` and at the end; before the end (the final evaluation follows the
    loop) evaluate every set every `eval.every_steps`, and the selection (dev) set alone at the
    learning curve's `curve_steps`; checkpoint at each epoch end, at the end and every
    `checkpoint_every_steps`.
    """
    log = step % cfg.optim.log_every_steps == 0 or step == steps
    every = cfg.eval.every_steps
    evaluate = None
    if step < steps:
        if every is not None and step % every == 0:
            evaluate = "all"
        elif step in curve_steps:
            evaluate = "selection"
    every_ckpt = cfg.optim.checkpoint_every_steps
    checkpoint = step % per_epoch == 0 or step == steps or bool(every_ckpt and step % every_ckpt == 0)
    return log, evaluate, checkpoint


def _report_if_due(worker: Worker, training: Training, state: LoopState) -> None:
    """Log, evaluate and checkpoint when due; the time this takes is not training time."""
    log, evaluate, checkpoint = reports_due(state.step, worker.cfg, worker.steps, worker.steps_per_epoch,
                                            worker.curve_steps)
    if not (log or evaluate or checkpoint):
        return
    metrics: dict[str, Any] = {}
    if log:
        metrics.update(state.window.flush(worker.world, worker.device))
        state.last_loss = metrics[TRAIN_LOSS]
        metrics[LEARNING_RATE] = training.scheduler.get_last_lr()[0]
    state.pause_phase()
    if evaluate:
        evaluating = time.perf_counter()
        metrics.update(_evaluate(worker, training, evaluate).metrics)
        state.eval_seconds += time.perf_counter() - evaluating
        state.best.update(metrics, curve_metric_key(worker.cfg.eval), state.step)
    metrics.update(step=state.step, epoch=state.step / worker.steps_per_epoch, **{TRAIN_SECONDS: state.train_seconds})
    if checkpoint:
        worker.check_lease()
        saving = time.perf_counter()
        _report(metrics, worker.rank, lambda directory: save_train_state(
            directory, state.train_state(training), worker.steps_per_epoch, worker.world), worker.staging, "kd-ckpt-",
            f"step_{state.step:07d}")
        state.checkpoint_seconds += time.perf_counter() - saving
    else:
        _report(metrics, worker.rank)
    state.restart_phase()


def _final_report(worker: Worker, training: Training, state: LoopState) -> None:
    """Evaluate the trained student and report the final metrics with the final checkpoint."""
    eval_start = time.perf_counter()
    training.model.eval()
    result = _evaluate(worker, training)
    curve = curve_metric_key(worker.cfg.eval)
    state.best.update(result.metrics, curve, state.step)
    final = {
        **result.metrics,
        **state.best.report(curve),
        FINAL_LOSS: state.last_loss,
        RESUMED_FROM: state.resumed_from,
        "step": state.step,
        "epoch": state.step / worker.steps_per_epoch,
        TRAIN_SECONDS: state.train_seconds,
        EVAL_SECONDS: state.eval_seconds + time.perf_counter() - eval_start,   # the curve's evaluations too
        WORKER_SETUP_SECONDS: state.setup_seconds,
        CHECKPOINT_SECONDS: state.checkpoint_seconds,
    }
    worker.check_lease()
    _report(final, worker.rank, lambda directory: save_final(directory, training.student, worker.cfg, final, result),
            worker.staging, "kd-final-", "final")


def _evaluate(worker: Worker, training: Training, point: str = "final"):
    """`evaluate_student` at the `point` "final", "all" or "selection" (the last two on `eval.at_intermediate()`,
    "selection": the dev set only), the corpus streamed and sharded over the workers (rank 0 scores)."""
    from trainables.evaluate.evaluation import evaluate_student

    eval_cfg = worker.cfg.eval if point == "final" else worker.cfg.eval.at_intermediate(dev_only=point == "selection")
    with autocast(worker.device, worker.autocast_dtype):   # encoding at the training precision; faiss gets float32
        return evaluate_student(training.student, eval_cfg, worker.cfg.seed, progress=False,
                                shard=eval_shard(worker.rank, worker.world, worker.device),
                                cache_dir=worker.cfg.cache_dir)


def _report(metrics: dict[str, Any], rank: int, write: Callable[[str], None] | None = None,
            staging: Path | None = None, prefix: str = "kd-ckpt-", name: str | None = None) -> None:
    """`ray.train.report` on every rank; with `write`, rank 0 writes a checkpoint folder to report with it.

    Staged in `staging` (the run folder: a full /tmp must not fail it), removed once Ray copied it; a full disk is one line.
    """
    import ray.train

    if write is None:
        ray.train.report(metrics)
        return
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    staging.mkdir(parents=True, exist_ok=True)
    with writing(staging), tempfile.TemporaryDirectory(prefix=prefix, dir=staging) as directory:
        write(directory)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory), checkpoint_dir_name=name)
