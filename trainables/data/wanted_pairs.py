"""The (query, passage) pairs whose teacher scores a study reads from a file, as integer keys and slots.

A scores file (Parquet, TSV, JSONL, pickle) is read in batches of (qid, pid, score); each batch is
matched against the wanted pairs with one `searchsorted` over sorted int64 keys (query index << 32 |
docid row), so holding 15M wanted pairs costs ~20 B each, never a `{qid: {pid: score}}` dict.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainables.data.doc_table import DocTable, encode_ids


class WantedPairs:
    """Pairs `rows[i, j]` (rows into `docs`, -1: none) of `query_ids[i]`, and the scores found for them."""

    def __init__(self, query_ids: Sequence[str], docs: DocTable, rows: np.ndarray):
        self.docs, self.shape = docs, rows.shape
        self.query_index: dict[str, int] = {}
        for qid in query_ids:
            self.query_index.setdefault(str(qid), len(self.query_index))
        self.query_ids = [str(q) for q in query_ids]
        index = np.array([self.query_index[q] for q in self.query_ids], dtype=np.int64).reshape(-1, 1)
        valid = rows >= 0
        keys = ((index << 32) | rows.astype(np.int64))[valid]
        order = np.argsort(keys, kind="stable")
        self.keys, self.slots = keys[order], np.flatnonzero(valid.ravel())[order]
        self.scores = np.full(rows.size, np.nan, dtype=np.float32)

    @classmethod
    def from_lists(cls, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> WantedPairs:
        """Per query a list of pids (small inputs: tests, tools); `flat()` gives their scores in list order."""
        return cls(queries, *lists_as_rows(passages))

    def __len__(self) -> int:
        return len(self.keys)

    def fill(self, query_index: np.ndarray, doc_rows: np.ndarray, scores: np.ndarray) -> None:
        """Record the scores of a batch's pairs (query index, docid row; -1 in either: not wanted) that are
        wanted; a pair the file gives twice keeps its last score."""
        keys = (np.asarray(query_index, dtype=np.int64) << 32) | np.asarray(doc_rows, dtype=np.int64)
        known = (np.asarray(query_index) >= 0) & (np.asarray(doc_rows) >= 0)
        if not len(self.keys) or not known.any():
            return
        keys, scores = keys[known], np.asarray(scores)[known]
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[at] == keys
        self.scores[self.slots[at[hit]]] = scores[hit]

    def fill_strings(self, qids: Sequence[str], pids: Sequence[str], scores: Sequence[float]) -> None:
        """`fill` for a batch of id strings."""
        index = np.array([self.query_index.get(q, -1) for q in qids], dtype=np.int64)
        wanted = index >= 0
        if wanted.any():
            kept = np.flatnonzero(wanted)
            self.fill(index[kept], self.docs.rows([pids[i] for i in kept.tolist()]),
                      np.asarray(scores, dtype=np.float64)[kept])

    def result(self) -> np.ndarray:
        """float32 [Q, W] scores, NaN where the file lacks the pair or there is none; a pair wanted twice
        has the same score in both places."""
        first = np.searchsorted(self.keys, self.keys, side="left")
        self.scores[self.slots] = self.scores[self.slots[first]]
        return self.scores.reshape(self.shape)

    def flat(self) -> np.ndarray:
        """The wanted pairs' scores in row order (each query's pairs in turn)."""
        grid = self.result().ravel()
        return grid[np.sort(self.slots)]


def lists_as_rows(passages: Sequence[Sequence[str]]) -> tuple[DocTable, np.ndarray]:
    """Per-query pid lists as a docid table and [Q, longest] rows into it, -1 padded (small inputs)."""
    docs = DocTable.of(*(encode_ids(str(p) for p in plist) for plist in passages))
    rows = np.full((len(passages), max((len(p) for p in passages), default=0)), -1, dtype=np.int64)
    for i, plist in enumerate(passages):
        rows[i, :len(plist)] = docs.rows([str(p) for p in plist])
    return docs, rows
