"""Evaluation encodings from token ids: an evaluation corpus and its queries tokenised once, then mapped.

The first evaluation of a study builds them (`token_ids.token_ids`, under a lock, addressed by the
corpus fingerprint or the set's fingerprint + its query ids, the tokenizer and the max length);
every later evaluation — curve points, other trials, other ranks — maps the same files and pads
rows (`BiEncoder.encode_token_ids`), with no tokenizer call. A set without a fingerprint ("": not
known to be the same corpus twice) is not cached: the caller encodes its texts.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from trainables.data.types import RetrievalData
from trainables.token_ids import CHUNK, TokenIds, token_ids


def corpus_tokens(student, data: RetrievalData, cache_dir: str | Path) -> tuple[list[str], TokenIds] | None:
    """(doc ids in corpus order, their token ids at the passage max length), or None without a fingerprint."""
    if not data.corpus_fingerprint:
        return None
    doc_ids = [doc_id for doc_id, _ in data.corpus]
    tokens = token_ids(cache_dir, f"corpus:{data.corpus_fingerprint}", lambda: _corpus_chunks(data),
                       student.tokenizer, student.passage_max_length)
    return doc_ids, tokens


def query_tokens(student, data: RetrievalData, qids: list[str], cache_dir: str | Path) -> TokenIds | None:
    """Token ids of `qids`' texts at the query max length, or None without a fingerprint."""
    if not data.fingerprint:
        return None
    digest = hashlib.sha256("\n".join(qids).encode()).hexdigest()[:16]
    return token_ids(cache_dir, f"queries:{data.fingerprint}:{digest}",
                     lambda: [[data.queries[q] for q in qids[i:i + CHUNK]] for i in range(0, len(qids), CHUNK)],
                     student.tokenizer, student.query_max_length)


def encode_corpus_tokens(student, tokens: TokenIds, batch_size: int, shard: tuple[int, int] = (0, 1),
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rows, np.float32 embeddings) of shard `rank` of `world` (every world-th row, as `retrieval.encode_corpus`)."""
    rank, world = shard
    rows = np.arange(rank, len(tokens), world, dtype=np.int64)
    return rows, student.encode_token_ids(tokens, rows, batch_size=batch_size, progress=progress,
                                          desc="encode corpus")


def _corpus_chunks(data: RetrievalData):
    texts = []
    for _, text in data.corpus:
        texts.append(text)
        if len(texts) == CHUNK:
            yield texts
            texts = []
    if texts:
        yield texts
