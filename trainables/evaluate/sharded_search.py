"""Search one corpus split over the ranks of a trial: every rank streams its shard, only top-k lists travel.

Each rank encodes its shard (every world-th passage) block by block and keeps a running top-k per
query (`trainables.evaluate.topk`); the ranks then exchange their (queries × k) ids and scores — never
embeddings — and rank 0 merges them. A rank holds O(encode batch + one block + queries × k), not
O(corpus): the search scales to MS MARCO's 8.8M passages on any number of ranks.

`flat` is exact and streams. `ivf` / `hnsw` are approximate indexes that must see all the vectors
they index, so each rank builds one over its own shard (O(shard) memory) and searches it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.evaluate import retrieval
from trainables.data.types import Corpus
from trainables.evaluate.topk import RunningTopK, TopK, merge_topk

if TYPE_CHECKING:
    from trainables.data.token_ids import TokenIds

GatherFn = Callable[[Any], list[Any]]
Shard = tuple[int, int, GatherFn]

BLOCK_SIZE = 16384   # passages per block: 24 MiB of 384-d float32 plus their text


def search_corpus(
    student,
    corpus: Corpus,
    query_emb: np.ndarray,
    top_k: int,
    index_kind: str = "flat",
    batch_size: int = 128,
    shard: Shard | None = None,
    progress: bool = False,
    block_size: int = BLOCK_SIZE,
    tokens: TokenIds | None = None,
) -> tuple[TopK | None, dict[str, float]]:
    """(the top min(top_k, |corpus|) per query, timings); None on a rank > 0 of a sharded search.

    `shard=(rank, world, gather_fn)`: `gather_fn(obj) -> [obj of rank 0, ..., rank world-1]`, called
    once by every rank (`trainables.train.ddp.eval_shard`: the device-placed `all_gather`); it carries one `TopK` per rank.
    `tokens`: the corpus's token ids (row = corpus position): its passages are encoded from them, not tokenised.
    Timings: `encode_corpus_s`, `index_s` (approximate indexes only), `search_s` (blocks, exchange, merge).
    """
    rank, world, gather_fn = shard if shard is not None else (0, 1, None)
    blocks = retrieval.encoded_blocks(student, corpus, block_size, batch_size, (rank, world), progress and rank == 0,
                                      tokens)
    timings = {"encode_corpus_s": 0.0, "index_s": 0.0, "search_s": 0.0}
    if index_kind == "flat":
        running = RunningTopK(query_emb, top_k)
        while True:
            start = time.perf_counter()
            block = next(blocks, None)
            timings["encode_corpus_s"] += time.perf_counter() - start
            if block is None:
                break
            start = time.perf_counter()
            running.add(*block)
            timings["search_s"] += time.perf_counter() - start
        local = running.result()
    else:
        local = _search_approximate(blocks, query_emb, top_k, index_kind, timings)
    start = time.perf_counter()
    if gather_fn is not None:
        parts = gather_fn(local)
        if rank != 0:
            timings["search_s"] += time.perf_counter() - start
            return None, timings
        local = merge_topk(parts, top_k)
    timings["search_s"] += time.perf_counter() - start
    return local, timings


def _search_approximate(blocks, query_emb: np.ndarray, top_k: int, index_kind: str,
                        timings: dict[str, float]) -> TopK:
    """One `index_kind` index over the whole shard; the slots it leaves empty (-1) rank last, unnamed."""
    start = time.perf_counter()
    encoded = list(blocks)
    timings["encode_corpus_s"] += time.perf_counter() - start
    if not encoded:
        return TopK.empty(len(query_emb))
    positions = np.concatenate([b[0] for b in encoded])
    doc_ids = np.asarray([d for b in encoded for d in b[1]], dtype=object)
    start = time.perf_counter()
    index = retrieval.build_index(np.concatenate([b[2] for b in encoded]), kind=index_kind)
    timings["index_s"] += time.perf_counter() - start
    start = time.perf_counter()
    scores, idx = retrieval.search(index, query_emb, min(top_k, len(doc_ids)))
    found = idx >= 0
    top = TopK(np.where(found, scores, -np.inf).astype(np.float32),
               np.where(found, positions[idx], np.iinfo(np.int64).max),
               np.where(found, doc_ids[idx], None))
    timings["search_s"] += time.perf_counter() - start
    return top
