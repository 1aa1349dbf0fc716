"""A running top-k per query over a corpus searched block by block, and the merge of several ranks' top-k.

Exact inner-product search without holding the corpus: each block of passage embeddings is searched
(faiss exact k-NN, on the GPU when faiss has one) and folded into the best `k` seen so far. Ties are broken
by the passage's position in the corpus (lower first), so the result is the same whatever the block
size or the number of ranks the corpus was split over:

    order of a row = score descending, then corpus position ascending

Memory is O(queries × k + queries × block) — never O(corpus).

    >>> top = RunningTopK(query_emb, k=100)
    >>> for positions, ids, emb in blocks: top.add(positions, ids, emb)
    >>> merged = merge_topk([top.result(), other_rank_result], k=100)
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from trainables.evaluate import retrieval


@dataclass(frozen=True)
class TopK:
    """Best-first `scores` [nq, m] float32, corpus `positions` [nq, m] int64 and `doc_ids` [nq, m] (object).

    m ≤ k; a row has exactly m entries (every query sees the same passages). Small enough to send
    between ranks: this is all a rank contributes to a sharded evaluation.
    """

    scores: np.ndarray
    positions: np.ndarray
    doc_ids: np.ndarray

    @classmethod
    def empty(cls, n_queries: int) -> "TopK":
        return cls(np.zeros((n_queries, 0), np.float32), np.zeros((n_queries, 0), np.int64),
                   np.zeros((n_queries, 0), object))

    def rows(self) -> list[dict[str, float]]:
        """One {doc_id: score} per query, best first (a run row); slots an approximate index left empty are dropped."""
        return [{d: s for d, s in zip(ids, scores) if d is not None}
                for ids, scores in zip(self.doc_ids.tolist(), self.scores.tolist())]


def _best(scores: np.ndarray, positions: np.ndarray, doc_ids: np.ndarray, k: int) -> TopK:
    """The k best columns of every row: score descending, then corpus position ascending."""
    order = np.lexsort((positions, -scores), axis=-1)[:, :k]
    take = lambda a: np.take_along_axis(a, order, axis=1)   # noqa: E731
    return TopK(take(scores), take(positions), take(doc_ids))


def merge_topk(parts: list[TopK], k: int) -> TopK:
    """The top k of the union of `parts` (disjoint passages, same queries), in the deterministic order."""
    if not parts:
        raise ValueError("merge_topk: nothing to merge")
    return _best(np.concatenate([p.scores for p in parts], axis=1),
                 np.concatenate([p.positions for p in parts], axis=1),
                 np.concatenate([p.doc_ids for p in parts], axis=1), k)


class RunningTopK:
    """The best `k` passages per query seen so far, fed blocks of passage embeddings in corpus order.

    Each block is searched exactly (faiss `knn`, `knn_gpu` when faiss sees a GPU) and folded in with
    a stable sort of [running | block]: both halves are already in order and every running position
    precedes the block's, so the sort is a linear two-run merge and ties keep corpus order.
    """

    def __init__(self, query_emb: np.ndarray, k: int, use_gpu: bool | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.query_emb = np.ascontiguousarray(query_emb, dtype=np.float32)
        self.k = k
        self._gpu = retrieval.gpu_available() if use_gpu is None else use_gpu
        self._resources = faiss.StandardGpuResources() if self._gpu else None
        self._top = TopK.empty(len(self.query_emb))
        self._last_position = -1

    def add(self, positions: np.ndarray, doc_ids: list[str], emb: np.ndarray) -> None:
        """Fold one block (increasing corpus positions, their ids, embeddings [b, d]) into the running top-k."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(doc_ids) or not len(self.query_emb):
            return
        if positions[0] <= self._last_position:
            raise ValueError("RunningTopK.add: blocks must come in increasing corpus positions")
        self._last_position = int(positions[-1])
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        k = min(self.k, len(doc_ids))
        if self._gpu:
            scores, idx = faiss.knn_gpu(self._resources, self.query_emb, emb, k, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            scores, idx = faiss.knn(self.query_emb, emb, k, metric=faiss.METRIC_INNER_PRODUCT)
        block = _best(scores, positions[idx], np.asarray(doc_ids, dtype=object)[idx], k)
        running = self._top
        both = TopK(*(np.concatenate([a, b], axis=1) for a, b in
                      ((running.scores, block.scores), (running.positions, block.positions),
                       (running.doc_ids, block.doc_ids))))
        order = np.argsort(-both.scores, axis=1, kind="stable")[:, :self.k]
        self._top = TopK(*(np.take_along_axis(a, order, axis=1) for a in (both.scores, both.positions, both.doc_ids)))

    def result(self) -> TopK:
        return self._top
