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
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.data.types import RetrievalData
from trainables.evaluate.retrieval import build_index, encode_corpus, search
from trainables.models.student import BiEncoder

log = logging.getLogger(__name__)

TrainQuery = tuple[str, str, Sequence[str]]  # (qid, text, positive docids)


@dataclass
class Pools:
    """Per training query: pool docids in first-stage rank order, and the initial student's scores."""

    query_ids: list[str]
    doc_ids: list[list[str]]                 # pool, positives excluded, rank order, ≤ depth each
    student_scores: list[np.ndarray]         # float32, aligned with doc_ids
    positive_doc_ids: list[list[str]]
    student_positive_scores: list[np.ndarray]
    source: str                              # "dense" or the candidates file path
    random_counts: list[int] = field(default_factory=list)   # the last R of each pool are random additions

    def __post_init__(self) -> None:
        if not self.random_counts:
            self.random_counts = [0] * len(self.query_ids)

    def __len__(self) -> int:
        return len(self.query_ids)

    # Fixed-width unicode + NaN/"" padding: loadable without pickle.
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "query_ids": np.array(self.query_ids, dtype=str),
            "doc_ids": _pad_str(self.doc_ids),
            "student_scores": _pad_float(self.student_scores, _width(self.doc_ids)),
            "positive_doc_ids": _pad_str(self.positive_doc_ids),
            "student_positive_scores": _pad_float(self.student_positive_scores, _width(self.positive_doc_ids)),
            "source": np.array(self.source),
            "random_counts": np.array(self.random_counts, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Pools":
        def unpad(ids: np.ndarray, scores: np.ndarray) -> tuple[list[list[str]], list[np.ndarray]]:
            rows = [[d for d in row if d] for row in ids.tolist()]
            return rows, [scores[i, :len(r)].astype(np.float32) for i, r in enumerate(rows)]

        doc_ids, scores = unpad(arrays["doc_ids"], arrays["student_scores"])
        pos_ids, pos_scores = unpad(arrays["positive_doc_ids"], arrays["student_positive_scores"])
        return cls([str(q) for q in arrays["query_ids"].tolist()], doc_ids, scores, pos_ids, pos_scores,
                   str(arrays["source"]), arrays["random_counts"].astype(int).tolist())

    def keep(self, columns: list[np.ndarray]) -> "Pools":
        """These pools with only `columns` (per query, indices into its pool, in the order given)."""
        random_counts = [int((cols >= len(d) - r).sum()) for cols, d, r in zip(columns, self.doc_ids, self.random_counts)]
        return Pools(self.query_ids, [[d[i] for i in cols] for d, cols in zip(self.doc_ids, columns)],
                     [s[cols] for s, cols in zip(self.student_scores, columns)], self.positive_doc_ids,
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
    positive_scores = _score_docs(data, student, q_emb, positives, batch_size, progress)

    corpus_ids: Sequence[str] | None = None
    if candidates_file is not None:
        from trainables.data.candidates_file import read_candidates_file

        # Read a little deeper than `depth`: the file may list a query's positives among its candidates.
        widest = max((len(p) for p in positives), default=0)
        ranked_lists = read_candidates_file(candidates_file, set(query_ids), depth + widest, systems)
        doc_ids, missing = [], 0
        for qid, pos in zip(query_ids, positives):
            ranked = ranked_lists.get(qid, [])
            missing += not ranked
            excluded = set(pos)
            doc_ids.append([d for d in ranked if d not in excluded][:depth])
        if missing:
            log.warning("%s: %d of %d training queries have no candidates in the file", candidates_file, missing,
                        len(query_ids))
        pool_scores = _score_docs(data, student, q_emb, doc_ids, batch_size, progress)
        source = str(candidates_file)
    else:
        corpus_ids, corpus_emb = encode_corpus(student, data.corpus, batch_size=batch_size, progress=progress)
        index = build_index(corpus_emb, kind="flat", use_gpu=None)  # exact: pools must not depend on ANN noise
        k = min(len(corpus_ids), depth + max((len(p) for p in positives), default=0))
        scores, idx = search(index, q_emb, k)
        doc_ids, pool_scores = [], []
        for row, pos in enumerate(positives):
            excluded = set(pos)
            keep = [(corpus_ids[i], s) for i, s in zip(idx[row], scores[row])
                    if i >= 0 and corpus_ids[i] not in excluded][:depth]
            doc_ids.append([d for d, _ in keep])
            pool_scores.append(np.array([s for _, s in keep], dtype=np.float32))
        source = "dense"
    random_counts = [0] * len(query_ids)
    if random_additions:
        if corpus_ids is None:
            corpus_ids = data.corpus.doc_ids()
        extra = random_corpus_passages(corpus_ids, positives, doc_ids, random_additions, seed)
        extra_scores = _score_docs(data, student, q_emb, extra, batch_size, progress)
        doc_ids = [d + e for d, e in zip(doc_ids, extra)]
        pool_scores = [np.concatenate([s, e]).astype(np.float32) for s, e in zip(pool_scores, extra_scores)]
        random_counts = [len(e) for e in extra]
    return Pools(query_ids, doc_ids, pool_scores, positives, positive_scores, source, random_counts)


def random_corpus_passages(
    corpus_ids: Sequence[str], positives: Sequence[Sequence[str]], pools: Sequence[Sequence[str]], r: int, seed: int,
) -> list[list[str]]:
    """R distinct corpus passages per query, uniformly at random, none a positive or already in its pool.

    Seeded by (seed, query position) so a query's draw does not depend on the other queries. A
    corpus too small for R is a short draw (every passage left), never a repeat.
    """
    n = len(corpus_ids)
    out = []
    for row, (pos, pool) in enumerate(zip(positives, pools)):
        excluded = set(pos) | set(pool)
        rng = np.random.default_rng([seed, row])
        take = min(n, r + len(excluded))
        picked = [corpus_ids[i] for i in rng.choice(n, size=take, replace=False)]
        out.append([d for d in picked if d not in excluded][:r])
    return out


def rank_by_teacher(pools: Pools, teacher_pool_scores: Sequence[np.ndarray], depth: int) -> tuple[Pools, list[np.ndarray]]:
    """`pool_source: teacher`: each pool cut to the teacher's top `depth` of its first-stage part (best first),
    random additions kept after them; returns the pools and their teacher scores, aligned."""
    columns = []
    for scores, ids, r in zip(teacher_pool_scores, pools.doc_ids, pools.random_counts):
        first = len(ids) - r
        order = np.argsort(-np.asarray(scores[:first], dtype=np.float64), kind="stable")[:depth]
        columns.append(np.concatenate([order, np.arange(first, len(ids))]).astype(np.int64))
    return pools.keep(columns), [np.asarray(s)[c] for s, c in zip(teacher_pool_scores, columns)]


def _score_docs(
    data: RetrievalData, student: BiEncoder, q_emb: np.ndarray, doc_ids: list[list[str]], batch_size: int, progress: bool
) -> list[np.ndarray]:
    """Student scores <q_i, e(d)> for each query's docids, encoding every unique docid once."""
    unique = list(dict.fromkeys(d for row in doc_ids for d in row))
    emb = student.encode(data.corpus.get_many(unique), is_query=False, batch_size=batch_size, progress=progress)
    row_of = {d: i for i, d in enumerate(unique)}
    return [
        (emb[[row_of[d] for d in row]] @ q_emb[i]).astype(np.float32) if row else np.zeros(0, dtype=np.float32)
        for i, row in enumerate(doc_ids)
    ]


def _width(rows: list[list[str]]) -> int:
    return max((len(r) for r in rows), default=0)


def _pad_str(rows: list[list[str]]) -> np.ndarray:
    out = np.full((len(rows), _width(rows)), "", dtype=object)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out.astype(str) if out.size else np.zeros((len(rows), 0), dtype="<U1")


def _pad_float(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out
