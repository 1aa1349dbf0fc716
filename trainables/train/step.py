"""One distillation step: a rank's batch → student scores → `compute_loss` → optimizer step.

Per query the loss sees its positives (the first `data.max_positives` columns, padded) and K candidates; teacher scores come from the
TrainingSet, student scores from the model being trained, in one forward so DDP sees one forward per
step. Shared by the Ray Train loop (train_loop.py) and bench/bench_train.py (one process, no Ray).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from trainables.config import LossSettings, TrialConfig
from trainables.data.mapped import read_rows
from trainables.train.epoch_plan import RankBatch
from trainables.errors import Diverged
from trainables.train.dispatch import compute_loss
from trainables.train.precision import autocast

if TYPE_CHECKING:
    from trainables.data.token_ids import StepTokens
    from trainables.data.training_set import TrainingSet


class DistillScorer(nn.Module):
    """Student scores [b, n] of each query's n passages in one forward, so DDP sees one forward per step.

    With `in_batch`, also the scores [b, b·n] of every query with every passage of the step (the
    same embeddings: in-batch negatives cost one matrix product).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, queries, passages, n: int, in_batch: bool = False):
        q_emb = self.student.embed(queries)
        p_flat = self.student.embed(passages)
        own = self.student.score(q_emb, p_flat.reshape(q_emb.shape[0], n, -1))
        return (own, q_emb @ p_flat.T) if in_batch else own


@dataclass
class StepInputs:
    queries: Any                   # BatchEncoding [b]
    passages: Any                  # BatchEncoding [b * n], query-major
    n: int                         # passages per query: M positive columns + K candidates
    teacher_scores: Tensor         # [b, n]
    positive_mask: Tensor          # [b, n] bool, the first M columns (where a positive is there)
    valid_mask: Tensor             # [b, n] bool, False at padding (fewer positives than M, a clipped pool)
    student_ranks: Tensor | None   # [b, n] the loss state's table entries (WKL: student ranks for β), None without
    sampled_teacher_scores: list[np.ndarray]   # per query, the K candidates' teacher scores
    loss_weight: float             # b · world / global batch: DDP's gradient mean = mean over all queries
    in_batch_mask: Tensor | None = None   # [b, b * n] passages a query's in-batch NLL may use (loss.in_batch_weight)

    def pin_memory(self) -> StepInputs:
        """A copy with its tensors in pinned memory (DataLoader(pin_memory=True) calls this on GPU hosts)."""
        pinned = {name: value.pin_memory() if isinstance(value, Tensor) else value
                  for name, value in vars(self).items()}
        pinned["queries"] = {k: v.pin_memory() for k, v in self.queries.items()}
        pinned["passages"] = {k: v.pin_memory() for k, v in self.passages.items()}
        return StepInputs(**pinned)


def build_step_inputs(tokens: StepTokens, ts: TrainingSet, batch: RankBatch, world: int, rank_table: Tensor | None,
                      in_batch: bool = False) -> StepInputs:
    """Padded token ids and aligned teacher scores / masks for one rank's share of a step (`in_batch`: and
    the in-batch mask: valid passages, minus the query's own positives met in other queries' lists).

    The batches come from the training set's token ids (`tokens`), never from a tokenizer call: they
    equal `student.tokenize` of the same texts, a padded slot holding the empty text's ids.
    """
    q, pos, cand = batch.query_idx, batch.positive_col, batch.candidate_col
    m = pos.shape[1]
    valid_pos, valid_cand = pos >= 0, cand >= 0
    safe_pos, safe_cand = np.where(valid_pos, pos, 0), np.where(valid_cand, cand, 0)

    def pick(array: np.ndarray, columns: np.ndarray) -> np.ndarray:   # the step's rows read, not faulted in
        return np.take_along_axis(read_rows(array, q), columns, axis=1)

    docs = np.concatenate([pick(ts.positive_doc_idx, safe_pos), pick(ts.pool_doc_idx, safe_cand)], axis=1)
    valid = np.concatenate([valid_pos, valid_cand], axis=1)
    teacher = np.concatenate([pick(ts.teacher_positive_scores, safe_pos), pick(ts.teacher_pool_scores, safe_cand)],
                             axis=1)
    teacher = np.where(valid, teacher, 0.0).astype(np.float32)
    positive_mask = np.zeros_like(valid)
    positive_mask[:, :m] = valid_pos
    return StepInputs(
        queries=tokens.queries.batch(q),
        passages=tokens.passages.batch(np.where(valid, docs, -1)),
        n=docs.shape[1],
        teacher_scores=torch.from_numpy(teacher),
        positive_mask=torch.from_numpy(positive_mask),
        valid_mask=torch.from_numpy(valid),
        student_ranks=step_ranks(ts, batch, rank_table) if rank_table is not None else None,
        sampled_teacher_scores=[row[ok] for row, ok in zip(teacher[:, m:], valid[:, m:])],
        loss_weight=len(q) * world / batch.global_size,
        in_batch_mask=torch.from_numpy(in_batch_mask(ts, q, docs, valid)) if in_batch else None,
    )


def step_ranks(ts: TrainingSet, batch: RankBatch, rank_table: Tensor) -> Tensor:
    """[b, n] WKL rank-table entries of the step's passages; padding ranks last. Read when the step runs:
    the table changes at β refreshes, so a prefetched batch gets its ranks here, not in the loader."""
    q, pos, cand = batch.query_idx, batch.positive_col, batch.candidate_col
    valid = np.concatenate([pos >= 0, cand >= 0], axis=1)
    cols = np.concatenate([np.maximum(pos, 0), ts.positive_doc_idx.shape[1] + np.maximum(cand, 0)], axis=1)
    ranks = rank_table[torch.from_numpy(q)[:, None], torch.from_numpy(cols)]
    return torch.where(torch.from_numpy(valid), ranks, float(rank_table.shape[1] + 1))


def in_batch_mask(ts: TrainingSet, query_idx: np.ndarray, docs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[b, b·n]: True where query i may treat passage j of the step as its positive (j = i·n) or a negative.

    Padding is out, and so is any positive of query i met elsewhere in the batch: a false negative.
    """
    b, n = docs.shape
    flat_docs, flat_valid = docs.ravel(), valid.ravel()
    positives = read_rows(ts.positive_doc_idx, query_idx)               # [b, P], -1 padded
    is_positive = (flat_docs[None, :, None] == positives[:, None, :]).any(axis=2)   # [b, b·n]
    mask = np.broadcast_to(flat_valid, (b, b * n)) & ~is_positive
    mask[np.arange(b), np.arange(b) * n] = True                          # the query's own positive
    return mask


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    inputs: StepInputs,
    loss_cfg: LossSettings,
    step: int,
    max_grad_norm: float,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Forward, `compute_loss`, backward (DDP all-reduce), clip, optimizer and LR-scheduler step.

    `step` is the number of completed steps (for the KL warm-up of WKL); `autocast_dtype` (from
    `precision.autocast_dtype`) runs the forward under that autocast, the loss in float32. Returns this rank's loss.
    Raises `Diverged` before the optimizer step when the loss or the gradient norm is not finite,
    so NaN never reaches the weights (every rank raises: the gradients are all-reduced).
    """
    teacher = inputs.teacher_scores.to(device)
    positives = inputs.positive_mask.to(device)
    valid = inputs.valid_mask.to(device)
    in_batch = None
    with autocast(device, autocast_dtype):
        if inputs.in_batch_mask is not None:
            student_scores, all_scores = model(inputs.queries, inputs.passages, inputs.n, in_batch=True)
            own_positive = torch.arange(all_scores.shape[0], device=device) * inputs.n
            in_batch = (all_scores.float(), own_positive, inputs.in_batch_mask.to(device))
        else:
            student_scores = model(inputs.queries, inputs.passages, inputs.n)
    state = inputs.student_ranks.to(device) if inputs.student_ranks is not None else None
    loss = compute_loss(loss_cfg, student_scores.float(), teacher, positives, state=state, step=step,
                        valid_mask=valid, in_batch=in_batch)
    optimizer.zero_grad(set_to_none=True)
    (loss * inputs.loss_weight).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    value = check_finite(loss, grad_norm, step + 1)
    optimizer.step()
    scheduler.step()
    return value


def check_finite(loss: Tensor, grad_norm: Tensor, step: int) -> float:
    """The loss as a float; `Diverged` ("diverged at step N: loss is nan") when it or the gradient norm is not."""
    # One device sync for both values (the loss is read back anyway).
    value, norm = torch.stack([loss.detach().float(), grad_norm.detach().float().to(loss.device)]).tolist()
    if not math.isfinite(value):
        raise Diverged(f"diverged at step {step}: loss is {value}")
    if not math.isfinite(norm):
        raise Diverged(f"diverged at step {step}: gradient norm is {norm}")
    return value


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
