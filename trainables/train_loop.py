"""The per-worker distillation loop that Ray Train runs: sample → score → distil → report → checkpoint.

Every worker holds the whole (small) TrainingSet and the student; DDP averages gradients. One
step = `optim.batch_size` queries over all workers. Per query the loss sees its positive (column 0)
and K candidates drawn from its pool by `sampler.name`; teacher scores come from the TrainingSet,
student scores from the model being trained.

Determinism: epoch `e` visits the queries in the order `default_rng([seed, e]).permutation(Q)`;
rank `r` takes its slice of each global batch and draws positives and candidates for the whole epoch
up front from `default_rng([seed, e, r])`. Dropout is seeded per step from (seed, step). A resumed
run rebuilds the same plan and skips the steps its checkpoint says are done, so at the same world
size it repeats the uninterrupted run step for step (same batches, weights, optimizer state, β).

WKL's β needs the student's rank of each candidate. A per-query rank table [Q, P + N] (positives,
then pool columns) starts from the initial student's scores saved in the TrainingSet and is
refreshed every `loss.beta_refresh_steps` steps by re-scoring, for the queries the next
`beta_refresh_steps` steps train on, the positives and the `loss.beta_pool_depth` best pool
candidates (by initial student rank) with the current student;
every other pool candidate keeps its relative order behind them (rank > the refreshed set).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trainables.config import LossConfig, TrialConfig
from trainables.losses import compute_loss, ranks_from_scores, wkl_beta
from trainables.samplers import sample_candidates, score_diagnostics
from trainables.outputs import (
    CHECKPOINT_SECONDS, EVAL_SECONDS, FINAL_LOSS, FINAL_METRICS, PER_QUERY, RESUMED_FROM, STUDENT_DIR, TRAIN_SECONDS,
    TRAIN_STATE, TRIAL_CONFIG, WORKER_SETUP_SECONDS,
)
from trainables.training_set import TrainingSet

STATE_FORMAT = 1


# ---- the epoch plan: which queries, positives and candidates each rank trains on -----------------
@dataclass
class RankBatch:
    """One rank's share of one global step."""

    query_idx: np.ndarray       # [b] rows of the TrainingSet
    positive_col: np.ndarray    # [b] column into positive_doc_idx (the positive this epoch)
    candidate_col: np.ndarray   # [b, K] columns into pool_doc_idx, -1 where a small pool was clipped
    global_size: int            # queries in the whole step (over all ranks)


def steps_per_epoch(n_queries: int, batch_size: int) -> int:
    """Full global batches per epoch (the incomplete last batch is dropped; at least one step)."""
    return max(1, n_queries // batch_size)


def total_steps(cfg: TrialConfig, n_queries: int) -> int:
    """`optim.max_steps` when set (it overrides `epochs`), else epochs × steps per epoch."""
    if cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    return cfg.optim.epochs * steps_per_epoch(n_queries, cfg.optim.batch_size)


def check_sizes(n_queries: int, batch_size: int, world: int) -> None:
    """Every rank needs at least one query per step (an empty DDP share cannot join the all-reduce)."""
    if min(batch_size, n_queries) < world:
        raise ValueError(
            f"optim.batch_size={batch_size} with {n_queries} training queries gives some of the "
            f"{world} workers no query per step: use batch_size and data.max_train_queries >= resources.num_workers"
        )


def epoch_order(n_queries: int, cfg: TrialConfig, epoch: int) -> np.ndarray:
    """The order epoch `epoch` visits the TrainingSet rows in: global batch i is rows [i*B, (i+1)*B)."""
    return np.random.default_rng([cfg.seed, epoch]).permutation(n_queries)


def plan_epoch(ts: TrainingSet, cfg: TrialConfig, epoch: int, rank: int, world: int) -> list[RankBatch]:
    """This rank's batches for `epoch`, deterministic in (seed, epoch, rank); candidates re-drawn every epoch."""
    n_queries, batch_size = len(ts), cfg.optim.batch_size
    check_sizes(n_queries, batch_size, world)
    order = epoch_order(n_queries, cfg, epoch)
    shares, sizes = [], []
    for step in range(steps_per_epoch(n_queries, batch_size)):
        global_batch = order[step * batch_size:(step + 1) * batch_size]
        shares.append(np.array_split(global_batch, world)[rank])
        sizes.append(len(global_batch))
    mine = np.concatenate(shares)

    rng = np.random.default_rng([cfg.seed, epoch, rank])
    n_positives = (ts.positive_doc_idx[mine] >= 0).sum(axis=1)
    # One positive per query and epoch: the first, or a seeded random one when there are several.
    positive_col = np.where(n_positives > 1, rng.integers(0, np.maximum(n_positives, 1)), 0)
    picked = sample_candidates(
        cfg.sampler.name, ts.teacher_pool_scores[mine], cfg.sampler.k, rng, cfg.sampler.on_small_pool
    )
    candidate_col = np.full((len(mine), cfg.sampler.k), -1, dtype=np.int64)
    for row, columns in enumerate(picked):
        candidate_col[row, :len(columns)] = columns

    batches, start = [], 0
    for share, size in zip(shares, sizes):
        stop = start + len(share)
        batches.append(RankBatch(mine[start:stop], positive_col[start:stop], candidate_col[start:stop], size))
        start = stop
    return batches


# ---- the student's rank table for WKL's β ---------------------------------------------------------
def initial_rank_table(ts: TrainingSet) -> Tensor:
    """[Q, P + N] float ranks (1 = best) of positives then pool candidates by the initial student's score."""
    scores, valid = _table_scores(ts.student_positive_scores, ts.student_pool_scores, ts)
    return ranks_from_scores(scores, valid)


def refresh_columns(ts: TrainingSet, depth: int) -> np.ndarray:
    """[Q, min(depth, N)] pool columns re-scored at a β refresh: the best by initial student score, -1 padded."""
    scores = np.where(ts.pool_doc_idx >= 0, np.nan_to_num(ts.student_pool_scores, nan=-np.inf), -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.where(np.take_along_axis(ts.pool_doc_idx, order, axis=1) >= 0, order, -1)


def _table_scores(positive_scores: np.ndarray, pool_scores: np.ndarray, ts: TrainingSet) -> tuple[Tensor, Tensor]:
    valid = torch.from_numpy(np.concatenate([ts.positive_doc_idx >= 0, ts.pool_doc_idx >= 0], axis=1))
    scores = torch.from_numpy(np.concatenate([positive_scores, pool_scores], axis=1).astype(np.float32))
    return torch.where(valid, torch.nan_to_num(scores, nan=-torch.inf), -torch.inf), valid


def steps_queries(n_queries: int, cfg: TrialConfig, first_step: int, n_steps: int) -> np.ndarray:
    """TrainingSet rows of global steps [first_step, first_step + n_steps): the queries those steps train on.

    `plan_epoch`'s global batches (`epoch_order`, the same on every rank), across epochs.
    """
    batch_size, per_epoch = cfg.optim.batch_size, steps_per_epoch(n_queries, cfg.optim.batch_size)
    rows, orders = [], {}
    for step in range(first_step, min(first_step + n_steps, total_steps(cfg, n_queries))):
        epoch, index = divmod(step, per_epoch)
        if epoch not in orders:
            orders[epoch] = epoch_order(n_queries, cfg, epoch)
        rows.append(orders[epoch][index * batch_size:(index + 1) * batch_size])
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def refresh_ranks(
    student, ts: TrainingSet, table: Tensor, columns: np.ndarray, rank: int, world: int, batch_size: int,
    queries: np.ndarray | None = None,
) -> Tensor:
    """A new rank table: positives + refreshed pool columns ranked by the current student (no grad).

    `queries` (TrainingSet rows, the same on every rank) limits the refresh to the queries the steps
    until the next refresh train on (`steps_queries`); None refreshes all. The rows it writes do not
    depend on when a row was last refreshed (see below), so a windowed refresh gives the rows those
    steps read exactly as a full one would, at a fraction of the encoding.
    Queries are sharded over ranks (every world-th) and the rows all-gathered. In each row the
    refreshed set takes ranks 1..m by current score; every other pool candidate follows (ranks > m)
    in its previous order — which is always its initial order, since those columns are never re-scored —
    so a sampled candidate outside the refreshed depth keeps rank > depth.
    """
    n_pos = ts.positive_doc_idx.shape[1]
    mine = (np.arange(len(ts)) if queries is None else np.asarray(queries, dtype=np.int64))[rank::world]
    doc_rows = {}
    for q in mine:
        for d in np.concatenate([ts.positive_doc_idx[q], ts.pool_doc_idx[q, columns[q][columns[q] >= 0]]]):
            if d >= 0:
                doc_rows.setdefault(int(d), len(doc_rows))
    doc_emb = student.encode([ts.doc_texts[d] for d in doc_rows], is_query=False, batch_size=batch_size)
    query_emb = student.encode([ts.query_texts[q] for q in mine], is_query=True, batch_size=batch_size)

    rows = {}
    for i, q in enumerate(mine):
        row = table[q].clone()
        pos_cols = np.flatnonzero(ts.positive_doc_idx[q] >= 0)
        pool_cols = columns[q][columns[q] >= 0]
        table_cols = np.concatenate([pos_cols, n_pos + pool_cols])
        docs = np.concatenate([ts.positive_doc_idx[q, pos_cols], ts.pool_doc_idx[q, pool_cols]])
        scores = doc_emb[[doc_rows[int(d)] for d in docs]] @ query_emb[i]   # the bi-encoder's inner product
        fresh = np.argsort(-scores, kind="stable")
        new = torch.empty(len(table_cols))
        new[torch.from_numpy(fresh)] = torch.arange(1, len(table_cols) + 1, dtype=torch.float32)
        others = np.setdiff1d(np.arange(n_pos, table.shape[1]), n_pos + pool_cols)
        others = others[ts.pool_doc_idx[q, others - n_pos] >= 0]
        behind = others[np.argsort(row[others].numpy(), kind="stable")]
        row[torch.from_numpy(table_cols)] = new
        row[torch.from_numpy(behind)] = torch.arange(len(table_cols) + 1, len(table_cols) + 1 + len(behind),
                                                     dtype=torch.float32)
        rows[int(q)] = row
    for part in _all_gather(rows, world):
        for q, row in part.items():
            table[q] = row
    return table


# ---- one training step (shared with bench/bench_train.py) ----------------------------------------
class DistillScorer(nn.Module):
    """Student scores [b, n] of each query's n passages in one forward, so DDP sees one forward per step."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, queries, passages, n: int) -> Tensor:
        q_emb = self.student.embed(queries)
        p_emb = self.student.embed(passages).reshape(q_emb.shape[0], n, -1)
        return self.student.score(q_emb, p_emb)


@dataclass
class StepInputs:
    queries: Any                   # BatchEncoding [b]
    passages: Any                  # BatchEncoding [b * n], query-major
    n: int                         # passages per query: 1 positive + K candidates
    teacher_scores: Tensor         # [b, n]
    positive_mask: Tensor          # [b, n] bool, column 0
    valid_mask: Tensor             # [b, n] bool, False where a small pool was clipped
    student_ranks: Tensor | None   # [b, n] rank table entries for β (WKL only)
    sampled_teacher_scores: list[np.ndarray]   # per query, the K candidates' teacher scores
    loss_weight: float             # b · world / global batch: DDP's gradient mean = mean over all queries


def build_step_inputs(student, ts: TrainingSet, batch: RankBatch, world: int, rank_table: Tensor | None) -> StepInputs:
    """Tokenised texts and aligned teacher scores / masks for one rank's share of a step."""
    q, pos, cand = batch.query_idx, batch.positive_col, batch.candidate_col
    valid_cand = cand >= 0
    safe_cand = np.where(valid_cand, cand, 0)
    docs = np.concatenate([ts.positive_doc_idx[q, pos][:, None], ts.pool_doc_idx[q[:, None], safe_cand]], axis=1)
    valid = np.concatenate([np.ones((len(q), 1), dtype=bool), valid_cand], axis=1)
    teacher = np.concatenate(
        [ts.teacher_positive_scores[q, pos][:, None], ts.teacher_pool_scores[q[:, None], safe_cand]], axis=1
    )
    teacher = np.where(valid, teacher, 0.0).astype(np.float32)
    texts = [ts.doc_texts[d] if ok else "" for d, ok in zip(docs.ravel(), valid.ravel())]
    positive_mask = np.zeros_like(valid)
    positive_mask[:, 0] = True
    ranks = None
    if rank_table is not None:
        n_pos = ts.positive_doc_idx.shape[1]
        cols = np.concatenate([pos[:, None], n_pos + safe_cand], axis=1)
        ranks = rank_table[torch.from_numpy(q)[:, None], torch.from_numpy(cols)]
        ranks = torch.where(torch.from_numpy(valid), ranks, float(rank_table.shape[1] + 1))
    return StepInputs(
        queries=student.tokenize([ts.query_texts[i] for i in q], is_query=True),
        passages=student.tokenize(texts, is_query=False),
        n=docs.shape[1],
        teacher_scores=torch.from_numpy(teacher),
        positive_mask=torch.from_numpy(positive_mask),
        valid_mask=torch.from_numpy(valid),
        student_ranks=ranks,
        sampled_teacher_scores=[row[ok] for row, ok in zip(teacher[:, 1:], valid[:, 1:])],
        loss_weight=len(q) * world / batch.global_size,
    )


def autocast_context(device: torch.device, mixed_precision: bool):
    """bf16 autocast on GPU when asked; full precision on CPU (autocast there is slow and unhelpful)."""
    if device.type == "cuda" and mixed_precision:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    inputs: StepInputs,
    loss_cfg: LossConfig,
    step: int,
    max_grad_norm: float,
    device: torch.device,
    mixed_precision: bool = False,
) -> float:
    """Forward, `compute_loss`, backward (DDP all-reduce), clip, optimizer and LR-scheduler step.

    `step` is the number of completed steps (for the KL warm-up of WKL). Returns this rank's loss.
    """
    teacher = inputs.teacher_scores.to(device)
    positives = inputs.positive_mask.to(device)
    valid = inputs.valid_mask.to(device)
    beta = None
    if loss_cfg.name == "wkl" and inputs.student_ranks is not None:
        beta = wkl_beta(inputs.student_ranks.to(device), positives, loss_cfg.alpha, valid)
    with autocast_context(device, mixed_precision):
        student_scores = model(inputs.queries, inputs.passages, inputs.n)
    loss = compute_loss(loss_cfg, student_scores.float(), teacher, positives, beta=beta, step=step, valid_mask=valid)
    optimizer.zero_grad(set_to_none=True)
    (loss * inputs.loss_weight).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def make_optimizer(model: nn.Module, cfg: TrialConfig, steps: int):
    """AdamW (no decay on biases and LayerNorm) with linear warm-up then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.optim.warmup_ratio * steps), steps)
    return optimizer, scheduler


def uses_beta(loss_cfg: LossConfig) -> bool:
    return loss_cfg.name == "wkl" and loss_cfg.alpha > 0


def is_refresh_step(loss_cfg: LossConfig, completed: int) -> bool:
    """Refresh β's ranks when WKL starts after its KL warm-up, then every `beta_refresh_steps` steps."""
    if not uses_beta(loss_cfg) or completed < loss_cfg.kl_warmup_steps or completed == 0:
        return False
    return (completed - loss_cfg.kl_warmup_steps) % loss_cfg.beta_refresh_steps == 0


# ---- the Ray Train entry point --------------------------------------------------------------------
def train_loop_per_worker(loop_config: dict) -> None:
    """Train, checkpoint and evaluate one trial on this Ray Train worker.

    loop_config: {"trial": TrialConfig.model_dump(mode="json"), "training_set": path to the .npz},
    plus, for fault-tolerance tests only, "fail_once_at_step": int and "fail_marker": path — the
    fault-injection hook: before training step `fail_once_at_step` (1-based) every worker raises
    once if the marker file does not exist yet (rank 0 creates it first, so the retry passes).
    """
    loop_start = time.perf_counter()
    import ray.train
    import ray.train.torch

    from trainables.evaluate import evaluate_student
    from trainables.student import BiEncoder

    cfg = TrialConfig.model_validate(loop_config["trial"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    mixed_precision = cfg.resources.mixed_precision and device.type == "cuda"

    ts = TrainingSet.load(loop_config["training_set"])
    steps_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    steps = total_steps(cfg, len(ts))
    check_sizes(len(ts), cfg.optim.batch_size, world)

    # A finished trial (re-run with the same storage/name) reports its final metrics again and stops.
    resume = _load_checkpoint(ray.train.get_checkpoint())
    if resume.get("final_metrics") is not None:
        ray.train.report(resume["final_metrics"])
        return

    torch.manual_seed(cfg.seed)
    student = BiEncoder.from_config(cfg.student, cfg.cache_dir)
    state = resume.get("state")
    if state is not None:
        student.load_state_dict(state["student"])
    model = ray.train.torch.prepare_model(DistillScorer(student))
    student = _unwrap(model).student
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    rank_table = initial_rank_table(ts) if uses_beta(cfg.loss) else None
    refresh_cols = refresh_columns(ts, cfg.loss.beta_pool_depth) if uses_beta(cfg.loss) else None
    completed, train_seconds, last_loss = 0, 0.0, float("nan")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        completed, train_seconds, last_loss = state["step"], state["train_s"], state["last_loss"]
        if state.get("rank_table") is not None:
            rank_table = state["rank_table"]
    resumed_from = completed

    def save_train_state(directory: str) -> None:
        torch.save({
            "format": STATE_FORMAT, "step": completed, "epoch": completed // steps_epoch,
            "student": student.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rank_table": rank_table,
            "train_s": train_seconds, "last_loss": last_loss, "world_size": world,
        }, os.path.join(directory, TRAIN_STATE))

    window = _Window()
    model.train()
    phase_start = time.perf_counter()
    setup_seconds, checkpoint_seconds = phase_start - loop_start, 0.0  # inside the worker: what overhead is made of
    plan, plan_epoch_index = None, -1
    fail_at = loop_config.get("fail_once_at_step")
    while completed < steps:
        epoch, index_in_epoch = divmod(completed, steps_epoch)
        if epoch != plan_epoch_index:
            plan, plan_epoch_index = plan_epoch(ts, cfg, epoch, rank, world), epoch
        if fail_at is not None and completed + 1 == fail_at:
            _inject_fault_once(loop_config["fail_marker"], fail_at, world)
        if is_refresh_step(cfg.loss, completed):
            # Only the queries trained on until the next refresh: their rows come out as a full refresh's.
            refreshed = steps_queries(len(ts), cfg, completed, cfg.loss.beta_refresh_steps)
            rank_table = refresh_ranks(student, ts, rank_table, refresh_cols, rank, world, cfg.eval.batch_size,
                                       queries=refreshed)

        batch = plan[index_in_epoch]
        # Dropout draws depend on (seed, step) only, so a resumed run repeats the uninterrupted one.
        torch.manual_seed(cfg.seed * 1_000_003 + completed)
        inputs = build_step_inputs(student, ts, batch, world, rank_table)
        loss = train_step(model, optimizer, scheduler, inputs, cfg.loss, completed, cfg.optim.max_grad_norm,
                          device, mixed_precision)
        completed += 1
        # Entropy at the teacher temperature the loss uses: the distribution the student is asked to match.
        diagnostics = score_diagnostics(inputs.sampled_teacher_scores, cfg.loss.teacher_temperature)
        window.add(loss, len(batch.query_idx), diagnostics, batch.global_size)

        metrics: dict[str, Any] = {}
        if completed % cfg.optim.log_every_steps == 0 or completed == steps:
            train_metrics = window.flush(world)
            last_loss = train_metrics["train/loss"]
            metrics.update(train_metrics, **{"train/lr": scheduler.get_last_lr()[0]})
        every = cfg.eval.every_steps
        evaluate_now = every is not None and completed % every == 0 and completed < steps
        checkpoint_now = (completed % steps_epoch == 0 or completed == steps
                          or (cfg.optim.checkpoint_every_steps and completed % cfg.optim.checkpoint_every_steps == 0))
        if not (metrics or evaluate_now or checkpoint_now):
            continue
        train_seconds += time.perf_counter() - phase_start
        if evaluate_now:
            result = evaluate_student(student, cfg.eval, cfg.seed, progress=False, shard=_shard(rank, world))
            metrics.update(result.metrics)
        metrics.update(step=completed, epoch=completed / steps_epoch, **{TRAIN_SECONDS: train_seconds})
        if checkpoint_now:
            saving = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="kd-ckpt-") as directory:
                checkpoint = None
                if rank == 0:
                    save_train_state(directory)
                    checkpoint = ray.train.Checkpoint.from_directory(directory)
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step_{completed:07d}")
            checkpoint_seconds += time.perf_counter() - saving
        else:
            ray.train.report(metrics)
        window.restart()
        phase_start = time.perf_counter()

    # ---- final evaluation and checkpoint ----------------------------------------------------------
    eval_start = time.perf_counter()
    model.eval()
    result = evaluate_student(student, cfg.eval, cfg.seed, progress=False, shard=_shard(rank, world))
    eval_seconds = time.perf_counter() - eval_start
    final = {
        **result.metrics,
        FINAL_LOSS: last_loss,
        RESUMED_FROM: resumed_from,
        "step": completed,
        "epoch": completed / steps_epoch,
        TRAIN_SECONDS: train_seconds,
        EVAL_SECONDS: eval_seconds,
        WORKER_SETUP_SECONDS: setup_seconds,        # this attempt: model, training set, DDP wrap
        CHECKPOINT_SECONDS: checkpoint_seconds,     # this attempt's intermediate checkpoints
    }
    with tempfile.TemporaryDirectory(prefix="kd-final-") as directory:
        checkpoint = None
        if rank == 0:
            student.save(os.path.join(directory, STUDENT_DIR))
            Path(directory, PER_QUERY).write_text(json.dumps(result.per_query))
            cfg.to_yaml(os.path.join(directory, TRIAL_CONFIG))
            Path(directory, FINAL_METRICS).write_text(json.dumps(
                {"metrics": final, "eval_timings": result.timings}, indent=1))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(final, checkpoint=checkpoint, checkpoint_dir_name="final")


# ---- helpers ----------------------------------------------------------------------------------------
class _Window:
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

    def flush(self, world: int) -> dict[str, float]:
        sums = torch.tensor(np.append(self.sums, self.seconds), dtype=torch.float64)
        if world > 1:
            torch.distributed.all_reduce(sums)
        loss_b, b, variance_b, entropy_b, queries, seconds = sums.tolist()
        queries, seconds = queries / world, seconds / world   # every rank counted the global batch
        self.sums, self.seconds = np.zeros(5), 0.0
        return {
            "train/loss": loss_b / b,
            "train/sampled_score_variance": variance_b / b,
            "train/sampled_score_entropy": entropy_b / b,
            "train/queries_per_s": queries / seconds if seconds > 0 else float("nan"),
        }


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _all_gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _shard(rank: int, world: int):
    """`evaluate_student`'s shard: corpus encoding split over workers, rank 0 searches and scores."""
    return (rank, world, lambda obj: _all_gather(obj, world)) if world > 1 else None


def _inject_fault_once(marker: str, step: int, world: int) -> None:
    """Test hook: every rank raises once at `step`; all read the marker before rank 0 creates it."""
    fired = os.path.exists(marker)
    if world > 1:
        torch.distributed.barrier()
    if fired:
        return
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).touch()
    raise RuntimeError(f"fault injected before step {step} (fail_once_at_step test hook)")


def _load_checkpoint(checkpoint) -> dict[str, Any]:
    """{"final_metrics": dict} for a finished trial, {"state": dict} for a training checkpoint, else {}."""
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as directory:
        final = Path(directory, FINAL_METRICS)
        if final.is_file():
            return {"final_metrics": json.loads(final.read_text())["metrics"]}
        state_path = Path(directory, TRAIN_STATE)
        if not state_path.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint.path} holds neither {TRAIN_STATE} nor {FINAL_METRICS}")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"checkpoint {checkpoint.path}: train state format {state.get('format')}, expected {STATE_FORMAT}")
    return {"state": state}
