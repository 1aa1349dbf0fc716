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
from trainables.data.token_ids import CHUNK, TokenIds, token_ids


def corpus_tokens(student, data: RetrievalData, cache_dir: str | Path) -> TokenIds | None:
    """The corpus's token ids at the passage max length (row = position in corpus order), or None without a
    fingerprint. The streaming search encodes each block's rows from them (`retrieval.encoded_blocks`)."""
    if not data.corpus_fingerprint:
        return None
    return token_ids(cache_dir, f"corpus:{data.corpus_fingerprint}", lambda: _corpus_chunks(data),
                     student.tokenizer, student.passage_max_length)


def query_tokens(student, data: RetrievalData, qids: list[str], cache_dir: str | Path) -> TokenIds | None:
    """Token ids of `qids`' texts at the query max length, or None without a fingerprint."""
    if not data.fingerprint:
        return None
    digest = hashlib.sha256("\n".join(qids).encode()).hexdigest()[:16]
    return token_ids(cache_dir, f"queries:{data.fingerprint}:{digest}",
                     lambda: [[data.queries[q] for q in qids[i:i + CHUNK]] for i in range(0, len(qids), CHUNK)],
                     student.tokenizer, student.query_max_length)


def encode_queries(student, data: RetrievalData, qids: list[str], batch_size: int, progress: bool = False,
                   cache_dir: str | Path | None = None) -> np.ndarray:
    """np.float32 embeddings of `qids`' queries: from their token ids with `cache_dir` (when the set has a
    fingerprint), else from their texts. Both encode in eval mode (no dropout) and without grad."""
    tokens = query_tokens(student, data, qids, cache_dir) if cache_dir and qids else None
    if tokens is not None:
        return student.encode_token_ids(tokens, batch_size=batch_size, progress=progress, desc="encode queries")
    return student.encode([data.queries[qid] for qid in qids], is_query=True, batch_size=batch_size,
                          progress=progress)


def _corpus_chunks(data: RetrievalData):
    texts = []
    for _, text in data.corpus:
        texts.append(text)
        if len(texts) == CHUNK:
            yield texts
            texts = []
    if texts:
        yield texts
