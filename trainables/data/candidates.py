"""Candidate pools: the top-N passages per training query, positives excluded, as the papers build them.

First stage: dense retrieval with the *initial* student over an exact inner-product index of the
whole corpus (retrieve N + #positives, drop the positives, keep the top N), or a candidates file
(TREC run or hard-negative JSONL, `trainables.data.candidates_file`). Then, per `data.pool_source`:
`student` / `file` keep that order; `teacher` keeps the teacher's top `pool_depth` of the first
`first_stage_depth` (`rank_by_teacher`, once the teacher has scored them: the WKL paper's re-ranked
top 100 → top 20). `random_additions` R appends R seeded random corpus passages to each pool (the
score-distribution paper's pools), never a positive or a first-stage candidate.
The initial student's scores of pool and positives are kept: WKL's β needs student ranks before
the first refresh (see science.md §2).

Pools are arrays: rows into one docid table (`doc_table.DocTable`), padded [Q, N] (-1 / NaN), never
lists of docid strings (100k queries × 150 candidates are 15M of them).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.doc_table import DocTable, encode_ids
from trainables.data.student_scores import student_scores
from trainables.data.types import RetrievalData
from trainables.evaluate.retrieval import build_index, encode_corpus, search
from trainables.models.student import BiEncoder

log = logging.getLogger(__name__)

TrainQuery = tuple[str, str, Sequence[str]]  # (qid, text, positive docids)


@dataclass
class Pools:
    """Per training query: pool passages in first-stage rank order and the initial student's scores,
    as rows into `docs`; each query's entries first, then padding (-1 rows, NaN scores)."""

    query_ids: list[str]
    docs: DocTable
    pool_idx: np.ndarray                 # [Q, N] int32, positives excluded, rank order; N: the longest pool
    student_scores: np.ndarray           # [Q, N] float32
    positive_idx: np.ndarray             # [Q, P] int32; P: the most positives of a query
    student_positive_scores: np.ndarray  # [Q, P] float32
    source: str                          # "dense" or the candidates file path
    random_counts: np.ndarray            # [Q] int64: the last R of each pool are random additions

    def __len__(self) -> int:
        return len(self.query_ids)

    def pool_sizes(self) -> np.ndarray:
        return (self.pool_idx >= 0).sum(axis=1)

    def positive_sizes(self) -> np.ndarray:
        return (self.positive_idx >= 0).sum(axis=1)

    def doc_ids(self, i: int) -> list[str]:
        """Query i's pool docids, rank order."""
        return self.docs.strings(self.pool_idx[i][self.pool_idx[i] >= 0])

    def positive_doc_ids(self, i: int) -> list[str]:
        return self.docs.strings(self.positive_idx[i][self.positive_idx[i] >= 0])

    @classmethod
    def from_lists(cls, query_ids: list[str], doc_ids: Sequence[Sequence[str]], student_scores: Sequence[np.ndarray],
                   positive_doc_ids: Sequence[Sequence[str]], student_positive_scores: Sequence[np.ndarray],
                   source: str, random_counts: Sequence[int] | None = None) -> Pools:
        """Pools from per-query lists of docids and scores (small pools: tests, samples)."""
        docs = DocTable.of(*(encode_ids(ids) for ids in [*doc_ids, *positive_doc_ids]))
        return cls(query_ids, docs, _rows(docs, doc_ids), _pad(student_scores), _rows(docs, positive_doc_ids),
                   _pad(student_positive_scores), source,
                   np.asarray(random_counts if random_counts is not None else [0] * len(query_ids), dtype=np.int64))

    # The cache file: the docid table once and integer rows, loadable without pickle.
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "query_ids": np.array(self.query_ids, dtype=str),
            "doc_table": self.docs.ids,
            "pool_idx": self.pool_idx,
            "student_scores": self.student_scores,
            "positive_idx": self.positive_idx,
            "student_positive_scores": self.student_positive_scores,
            "source": np.array(self.source),
            "random_counts": self.random_counts,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Pools:
        return cls([str(q) for q in arrays["query_ids"].tolist()], DocTable(arrays["doc_table"]),
                   arrays["pool_idx"], arrays["student_scores"], arrays["positive_idx"],
                   arrays["student_positive_scores"], str(arrays["source"]), arrays["random_counts"].astype(np.int64))

    def keep(self, columns: Sequence[np.ndarray]) -> Pools:
        """These pools with only `columns` (per query, indices into its pool, in the order given)."""
        sizes = self.pool_sizes()
        random_counts = np.array([int((cols >= n - r).sum()) for cols, n, r in zip(columns, sizes, self.random_counts)],
                                 dtype=np.int64)
        return Pools(self.query_ids, self.docs, _pad([self.pool_idx[i, c] for i, c in enumerate(columns)], -1, np.int32),
                     _pad([self.student_scores[i, c] for i, c in enumerate(columns)]), self.positive_idx,
                     self.student_positive_scores, self.source, random_counts)


def build_pools(
    data: RetrievalData,
    train_queries: Sequence[TrainQuery],
    student: BiEncoder,
    depth: int,
    candidates_file: str | Path | None = None,
    progress: bool = True,
    batch_size: int = 128,
    *,
    systems: Sequence[str] | None = None,
    random_additions: int = 0,
    seed: int = 0,
) -> Pools:
    """Pools of `depth` first-stage candidates per query (dense retrieval with `student`, or `candidates_file`),
    each followed by `random_additions` seeded random corpus passages."""
    if depth < 1:
        raise ValueError(f"pool depth must be >= 1, got {depth}")
    query_ids = [q for q, _, _ in train_queries]
    positives = [list(dict.fromkeys(p)) for _, _, p in train_queries]
    q_emb = student.encode([t for _, t, _ in train_queries], is_query=True, batch_size=batch_size, progress=progress)

    pool_scores = None
    corpus_ids: np.ndarray | Sequence[str] | None = None
    if candidates_file is not None:
        from trainables.data.candidates_file import read_candidates_file

        # Read a little deeper than `depth`: the file may list a query's positives among its candidates.
        widest = max((len(p) for p in positives), default=0)
        ranked = read_candidates_file(candidates_file, set(query_ids), depth + widest, systems)
        docs = DocTable.of(ranked.docs.ids, *(encode_ids(p) for p in positives))
        found = docs.rows(ranked.docs.ids)
        first_stage = _pad([found[ranked.rows_of(q)] for q in query_ids], -1, np.int32, depth + widest)
        missing = int((first_stage < 0).all(axis=1).sum())
        if missing:
            log.warning("%s: %d of %d training queries have no candidates in the file", candidates_file, missing,
                        len(query_ids))
        del ranked, found
        source = str(candidates_file)
    else:
        corpus_ids, corpus_emb = encode_corpus(student, data.corpus, batch_size=batch_size, progress=progress)
        corpus_ids = encode_ids(corpus_ids)
        index = build_index(corpus_emb, kind="flat", use_gpu=None)  # exact: pools must not depend on ANN noise
        del corpus_emb
        k = min(len(corpus_ids), depth + max((len(p) for p in positives), default=0))
        scores, idx = search(index, q_emb, k)
        docs = DocTable.of(corpus_ids, *(encode_ids(p) for p in positives))
        first_stage = np.where(idx >= 0, docs.rows(corpus_ids)[np.maximum(idx, 0)], -1).astype(np.int32)
        first_scores = np.where(idx >= 0, scores, np.nan).astype(np.float32)
        source = "dense"
    positive_idx = _rows(docs, positives)
    keep = _first_not_positive(first_stage, positive_idx, depth)
    pool_idx = _take_columns(first_stage, keep, -1)
    if candidates_file is None:
        pool_scores = _take_columns(first_scores, keep, np.nan)
    positive_scores = student_scores(data.corpus, docs, student, q_emb, positive_idx, batch_size, progress)
    if pool_scores is None:
        pool_scores = student_scores(data.corpus, docs, student, q_emb, pool_idx, batch_size, progress)
    random_counts = np.zeros(len(query_ids), dtype=np.int64)
    if random_additions:
        if corpus_ids is None:
            corpus_ids = data.corpus.doc_ids()   # positions → docids; an indexed corpus lists no 8.84M strings
        extra = random_corpus_passages(
            corpus_ids, (docs.ids[r[r >= 0]] for r in positive_idx), (docs.ids[r[r >= 0]] for r in pool_idx),
            random_additions, seed)
        merged = DocTable.of(docs.ids, *extra)
        moved = merged.rows(docs.ids)
        positive_idx, pool_idx = (np.where(a >= 0, moved[np.maximum(a, 0)], -1).astype(np.int32)
                                  for a in (positive_idx, pool_idx))
        docs = merged
        extra_idx = _rows(docs, extra)
        extra_scores = student_scores(data.corpus, docs, student, q_emb, extra_idx, batch_size, progress)
        sizes, random_counts = (pool_idx >= 0).sum(axis=1), (extra_idx >= 0).sum(axis=1).astype(np.int64)
        pool_idx = _append(pool_idx, sizes, extra_idx, random_counts, -1)
        pool_scores = _append(pool_scores, sizes, extra_scores, random_counts, np.nan)
    return Pools(query_ids, docs, pool_idx, pool_scores, positive_idx, positive_scores, source, random_counts)


def random_corpus_passages(
    corpus_ids: Sequence, positives: Iterable[Sequence], pools: Iterable[Sequence], r: int, seed: int,
) -> list[list]:
    """R distinct corpus passages per query, uniformly at random, none a positive or already in its pool.

    Seeded by (seed, query position) so a query's draw does not depend on the other queries. A
    corpus too small for R is a short draw (every passage left), never a repeat. Docids come back as
    `corpus_ids` holds them (strings, or bytes from a docid table).
    """
    n = len(corpus_ids)
    out = []
    for row, (pos, pool) in enumerate(zip(positives, pools)):
        excluded = set(_plain(pos)) | set(_plain(pool))
        rng = np.random.default_rng([seed, row])
        take = min(n, r + len(excluded))
        picked = _plain(corpus_ids[rng.choice(n, size=take, replace=False)]) if isinstance(corpus_ids, np.ndarray) \
            else [corpus_ids[i] for i in rng.choice(n, size=take, replace=False)]
        out.append([d for d in picked if d not in excluded][:r])
    return out


def rank_by_teacher(pools: Pools, teacher_pool_scores: np.ndarray, depth: int) -> tuple[Pools, np.ndarray]:
    """`pool_source: teacher`: each pool cut to the teacher's top `depth` of its first-stage part (best first),
    random additions kept after them; returns the pools and their teacher scores ([Q, N], NaN padded), aligned."""
    columns = []
    for scores, n, r in zip(teacher_pool_scores, pools.pool_sizes().tolist(), pools.random_counts.tolist()):
        first = n - r
        order = np.argsort(-np.asarray(scores[:first], dtype=np.float64), kind="stable")[:depth]
        columns.append(np.concatenate([order, np.arange(first, n)]).astype(np.int64))
    return pools.keep(columns), _pad([np.asarray(s)[c] for s, c in zip(teacher_pool_scores, columns)])


def _plain(values) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _rows(docs: DocTable, lists: Sequence[Sequence]) -> np.ndarray:
    """[Q, longest] int32 rows of per-query docid lists in `docs`, -1 padded."""
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    flat = docs.rows(np.concatenate([encode_ids(x) for x in lists]) if len(lists) else np.zeros(0, "S1"))
    out = np.full((len(lists), int(lengths.max(initial=0))), -1, dtype=np.int32)
    out[np.arange(out.shape[1]) < lengths[:, None]] = flat
    return out


def _pad(rows: Sequence[np.ndarray], fill=np.nan, dtype=np.float32, width: int | None = None) -> np.ndarray:
    """Per-query arrays as one [Q, width] array (width: the longest), `fill` padded."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out


def _first_not_positive(first_stage: np.ndarray, positive_idx: np.ndarray, depth: int) -> np.ndarray:
    """[Q, depth'] column indices of each query's first `depth` first-stage entries that are not its positives
    (-1 padded; depth': the most any query keeps)."""
    q = np.arange(first_stage.shape[0], dtype=np.int64)[:, None]
    keys = (q << 32) | first_stage.astype(np.int64)
    positive = np.isin(keys, ((q << 32) | positive_idx.astype(np.int64))[positive_idx >= 0])
    kept = (first_stage >= 0) & ~positive
    order = np.argsort(~kept, axis=1, kind="stable")
    count = np.minimum(kept.sum(axis=1), depth)
    width = int(count.max(initial=0))
    columns = order[:, :width]
    return np.where(np.arange(width) < count[:, None], columns, -1)


def _take_columns(values: np.ndarray, columns: np.ndarray, fill) -> np.ndarray:
    taken = np.take_along_axis(values, np.maximum(columns, 0), axis=1)
    return np.where(columns >= 0, taken, fill).astype(values.dtype)


def _append(left: np.ndarray, sizes: np.ndarray, right: np.ndarray, right_sizes: np.ndarray, fill) -> np.ndarray:
    """Each query's `right_sizes` entries of `right` after its `sizes` entries of `left` (both padded [Q, *])."""
    width = int((sizes + right_sizes).max(initial=0))
    out = np.full((len(left), width), fill, dtype=left.dtype)
    for i, (n, m) in enumerate(zip(sizes.tolist(), right_sizes.tolist())):
        out[i, :n], out[i, n:n + m] = left[i, :n], right[i, :m]
    return out
