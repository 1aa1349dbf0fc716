"""WKL's rank table: the student's rank π(i) of every training candidate, which β is computed from.

    β_i = α · (1/π(i) − mean_{j∈D+} 1/π(j)),   π = rank by the *student's* score (1 = best)   (wkl.py)

β is a constant in the loss, so π comes from a table rather than from the scores of the step: a
per-query table [Q, P + N] (positives, then pool columns) starts from the initial student's scores
saved in the TrainingSet and is refreshed every `loss.beta_refresh_steps` steps — first when WKL
starts after its KL warm-up — by re-scoring, with the current student, the positives and the
`loss.beta_pool_depth` best pool candidates (by initial student rank) of the queries the next
`beta_refresh_steps` steps train on. Every other pool candidate keeps its relative order behind them
(rank > the refreshed set). The paper refreshes every 2,000 batches over the top 50 candidates.
Reference: Yang et al., SIGIR 2024 (arXiv:2406.05977); science.md §2.

Relations: only WKL with α > 0 reads the table (`uses_beta`); α = 0 gives γ2 = γ1 and no table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from trainables.config import LossSettings, TrialConfig
from trainables.train.ddp import all_gather_tensors
from trainables.train.epoch_plan import steps_queries
from trainables.losses.wkl import ranks_from_scores

if TYPE_CHECKING:
    from trainables.data.token_ids import StepTokens
    from trainables.data.training_set import TrainingSet


def uses_beta(loss_cfg: LossSettings) -> bool:
    """WKL with α > 0: the only loss whose β needs the student's ranks."""
    return loss_cfg.name == "wkl" and getattr(loss_cfg, "alpha", 0) > 0


def is_refresh_step(loss_cfg: LossSettings, completed: int) -> bool:
    """Refresh β's ranks when WKL starts after its KL warm-up, then every `beta_refresh_steps` steps."""
    if not uses_beta(loss_cfg) or completed < loss_cfg.kl_warmup_steps or completed == 0:
        return False
    return (completed - loss_cfg.kl_warmup_steps) % loss_cfg.beta_refresh_steps == 0


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


def refresh_ranks(
    student, ts: TrainingSet, table: Tensor, columns: np.ndarray, rank: int, world: int, batch_size: int,
    queries: np.ndarray | None = None, tokens: StepTokens | None = None, *, device: torch.device | str,
) -> Tensor:
    """A new rank table: positives + refreshed pool columns ranked by the current student (no grad).

    `queries` (TrainingSet rows, the same on every rank) limits the refresh to the queries the steps
    until the next refresh train on (`steps_queries`); None refreshes all. The rows it writes do not
    depend on when a row was last refreshed (see below), so a windowed refresh gives the rows those
    steps read exactly as a full one would, at a fraction of the encoding.
    Queries are sharded over ranks (every world-th) and the rows all-gathered as tensors on the
    training `device` (trainables.train.ddp: NCCL takes CUDA tensors only). In each row the
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
    if tokens is not None:   # the training set's token ids: no tokenizer call
        doc_emb = student.encode_token_ids(tokens.passages, np.fromiter(doc_rows, np.int64), batch_size=batch_size)
        query_emb = student.encode_token_ids(tokens.queries, mine, batch_size=batch_size)
    else:
        doc_emb = student.encode([ts.doc_texts[d] for d in doc_rows], is_query=False, batch_size=batch_size)
        query_emb = student.encode([ts.query_texts[q] for q in mine], is_query=True, batch_size=batch_size)

    rows = torch.empty((len(mine), table.shape[1]), dtype=table.dtype)
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
        rows[i] = row
    for part_queries, part_rows in zip(all_gather_tensors(torch.from_numpy(mine), world, device),
                                       all_gather_tensors(rows, world, device)):
        table[part_queries] = part_rows
    return table


@dataclass
class RankTable:
    """The rank table a training run carries, and the pool columns each refresh re-scores.

    WKL's per-step state in the registry (`LossEntry.state`): `start`, `before_step` and `table`.
    """

    ranks: Tensor           # [Q, P + N], see `initial_rank_table`
    columns: np.ndarray     # [Q, min(beta_pool_depth, N)], see `refresh_columns`

    @classmethod
    def start(cls, ts: TrainingSet, loss_cfg: LossSettings, saved: Tensor | None = None) -> RankTable | None:
        """The initial (or a checkpoint's `saved`) table; None when the loss does not use β."""
        if not uses_beta(loss_cfg):
            return None
        ranks = saved if saved is not None else initial_rank_table(ts)
        return cls(ranks, refresh_columns(ts, loss_cfg.beta_pool_depth))

    @property
    def table(self) -> Tensor:
        """[Q, P + N]: what each step reads for its candidates (β's ranks) and a checkpoint saves."""
        return self.ranks

    def before_step(self, student, ts: TrainingSet, cfg: TrialConfig, completed: int, rank: int, world: int,
                    device: torch.device | str, tokens: StepTokens | None = None) -> None:
        self.refresh_if_due(student, ts, cfg, completed, rank, world, device, tokens)

    def refresh_if_due(self, student, ts: TrainingSet, cfg: TrialConfig, completed: int, rank: int, world: int,
                       device: torch.device | str, tokens: StepTokens | None = None) -> None:
        """Before step `completed` + 1: re-rank the queries the steps until the next refresh train on
        (encoding from `tokens`, the training set's token ids, when given; else tokenising its texts).

        `device`: the training device, where the ranks' rows travel (any device in one process).

        A trial that starts from the shared warm start (`init: {from: warmup}`) also refreshes before
        its first step: the table's initial ranks are the pretrained student's, not the warm start's.
        """
        warm_first = completed == 0 and cfg.init.start == "warmup" and cfg.loss.kl_warmup_steps == 0
        if not (is_refresh_step(cfg.loss, completed) or warm_first):
            return
        # Only those queries: their rows come out as a full refresh's (see `refresh_ranks`).
        window = steps_queries(len(ts), cfg, completed, cfg.loss.beta_refresh_steps)
        self.ranks = refresh_ranks(student, ts, self.ranks, self.columns, rank, world, cfg.eval.batch_size,
                                   queries=window, tokens=tokens, device=device)
