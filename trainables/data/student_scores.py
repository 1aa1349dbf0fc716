"""The initial student's scores of each query's passages, <q_i, e(d)>: every passage encoded once, streamed.

WKL's β needs the student's ranks before its first refresh (science.md §2), so every pool passage is
scored at build time. At MS MARCO scale that is ~7M distinct passages: their texts and embeddings are
never held whole. Passages are encoded a window at a time (`WINDOW_BYTES` of embeddings, texts fetched
`TEXT_CHUNK` at a time) and each window's pairs are scored before the next window is encoded.

The scores are bit-identical to encoding every passage in one `BiEncoder.encode` call and taking
`emb[pool_i] @ q_i` per query: the passages go through the encoder in the same order and the same
batches (`encode` sorts by text length, longest first, ties in first-occurrence order; windows are whole
batches of that order), and each query's product is the same BLAS matrix–vector call on a [k_i, d]
matrix holding the window's rows at their pool positions (a row's result depends on its position and
k_i, not on the other rows' values).
"""
from __future__ import annotations

import numpy as np

from trainables.data.doc_table import DocTable, first_occurrence
from trainables.data.types import Corpus
from trainables.progress import progress_bar

TEXT_CHUNK = 16384          # passage texts fetched (and handed to the encoder) at a time
WINDOW_BYTES = 256 << 20    # float32 embeddings held at once


def student_scores(corpus: Corpus, docs: DocTable, student, q_emb: np.ndarray, rows: np.ndarray,
                   batch_size: int, progress: bool) -> np.ndarray:
    """float32 [Q, W] scores of `rows` ([Q, W] rows into `docs`, each query's passages first, -1 padded) for
    the query embeddings `q_emb` [Q, d]; NaN where a row is -1."""
    out = np.full(rows.shape, np.nan, dtype=np.float32)
    valid = rows >= 0
    if not valid.any():
        return out
    pair_query, pair_column = (index.astype(np.int32) for index in np.nonzero(valid))
    passages, pair_passage = first_occurrence(rows[valid])
    del valid
    lengths = np.empty(len(passages), dtype=np.int64)
    for start in range(0, len(passages), TEXT_CHUNK):
        texts = corpus.get_many(docs.strings(passages[start:start + TEXT_CHUNK]))
        lengths[start:start + len(texts)] = [len(t) for t in texts]
    encode_order = np.argsort(-lengths, kind="stable")    # BiEncoder.encode's order
    del lengths
    rank = np.empty(len(passages), dtype=np.int64)
    rank[encode_order] = np.arange(len(passages))
    pair_rank = rank[pair_passage]
    del rank, pair_passage

    chunk = batch_size * max(1, TEXT_CHUNK // batch_size)   # whole batches: encode's batches stay the same
    window = chunk * max(1, WINDOW_BYTES // (4 * student.dim * chunk))
    pair_window = pair_rank // window
    by_window = np.lexsort((pair_query, pair_window))        # each window's pairs, by query
    window_ends = np.cumsum(np.bincount(pair_window, minlength=-(-len(passages) // window)))
    del pair_window
    pool_sizes = np.bincount(pair_query, minlength=rows.shape[0])
    bar = progress_bar(len(passages), "score pool passages", "passage", enabled=progress)
    for w, start in enumerate(range(0, len(passages), window)):
        stop = min(start + window, len(passages))
        emb = np.empty((stop - start, student.dim), dtype=np.float32)
        for at in range(start, stop, chunk):
            ids = docs.strings(passages[encode_order[at:min(at + chunk, stop)]])
            emb[at - start:at - start + len(ids)] = student.encode(corpus.get_many(ids), is_query=False,
                                                                  batch_size=batch_size)
            bar.update(len(ids))
        pairs = by_window[(int(window_ends[w - 1]) if w else 0):int(window_ends[w])]
        _score_window(out, emb, start, q_emb, pair_query[pairs], pair_column[pairs], pair_rank[pairs], pool_sizes)
    bar.close()
    return out


def _score_window(out: np.ndarray, emb: np.ndarray, start: int, q_emb: np.ndarray, query: np.ndarray,
                  column: np.ndarray, rank: np.ndarray, pool_sizes: np.ndarray) -> None:
    """Scores of one window's pairs (sorted by query): per query, its window rows at their pool positions."""
    bounds = np.flatnonzero(np.diff(query)) + 1
    for group in np.split(np.arange(len(query)), bounds):
        if not len(group):
            continue
        q = int(query[group[0]])
        cols = column[group]
        matrix = np.zeros((int(pool_sizes[q]), emb.shape[1]), dtype=np.float32)
        matrix[cols] = emb[rank[group] - start]
        out[q, cols] = (matrix @ q_emb[q])[cols]
