"""Dense retrieval: stream-encode a corpus (optionally one shard of it) in blocks, index it with faiss, search.

All indexes use inner product, which is the bi-encoder's score (cosine when embeddings are unit norm).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import faiss
import numpy as np

from trainables.data.types import Corpus
from trainables.progress import progress_bar
from trainables.models.student import BiEncoder

if TYPE_CHECKING:
    from trainables.data.token_ids import TokenIds

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw")


def encode_corpus(
    encoder: BiEncoder,
    corpus: Corpus,
    batch_size: int = 128,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    chunk_size: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """(doc_ids, np.float32 [n, d]) of the passages in shard `rank` of `world` (every world-th one).

    The corpus iterator is consumed in chunks of `chunk_size` texts (default 64 batches), so only the
    embeddings and one chunk of text are ever held; each chunk is length-sorted inside `encode`.
    """
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    chunk_size = chunk_size or batch_size * 64
    total = len(corpus)
    mine = total // world + (1 if rank < total % world else 0)
    doc_ids: list[str] = []
    blocks: list[np.ndarray] = []
    ids, texts = [], []
    bar = progress_bar(mine, f"encode corpus{'' if world == 1 else f' shard {rank}/{world}'}", "doc",
                       enabled=progress)

    def flush() -> None:
        blocks.append(encode_passages(encoder, texts, batch_size))
        doc_ids.extend(ids)
        bar.update(len(ids))
        ids.clear()
        texts.clear()

    for position, (doc_id, text) in enumerate(corpus):
        if position % world != rank:
            continue
        ids.append(doc_id)
        texts.append(text)
        if len(texts) >= chunk_size:
            flush()
    if texts:
        flush()
    bar.close()
    emb = np.concatenate(blocks) if blocks else np.zeros((0, encoder.dim), dtype=np.float32)
    return doc_ids, emb


def encode_passages(encoder: BiEncoder, texts: list[str], batch_size: int, tokens: TokenIds | None = None,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """np.float32 [n, d] passage embeddings: the one place evaluation encodes passages.

    With `tokens` (the corpus's token ids, tokenised once per study: `eval_tokens.corpus_tokens`), the
    passages are its `rows` (their corpus positions), padded without a tokenizer call; `texts` is unused.
    """
    if tokens is not None:
        return encoder.encode_token_ids(tokens, rows, batch_size=batch_size)
    return encoder.encode(texts, is_query=False, batch_size=batch_size)


def encoded_blocks(
    encoder: BiEncoder,
    corpus: Corpus,
    block_size: int,
    batch_size: int = 128,
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
    tokens: TokenIds | None = None,
) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
    """(corpus positions int64 [b], doc ids, embeddings np.float32 [b, d]) of shard `rank` of `world`, b ≤ block_size.

    A passage belongs to shard `position % world`; only one block of text and embeddings is held.
    With `tokens` (the corpus's token ids, row = corpus position) a block is encoded from its rows,
    and no text is kept.
    """
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    total = len(corpus)
    bar = progress_bar(total // world + (1 if rank < total % world else 0),
                       f"encode corpus{'' if world == 1 else f' shard {rank}/{world}'}", "doc", enabled=progress)
    positions: list[int] = []
    ids: list[str] = []
    texts: list[str] = []
    for position, (doc_id, text) in enumerate(corpus):
        if position % world != rank:
            continue
        positions.append(position)
        ids.append(doc_id)
        if tokens is None:
            texts.append(text)
        if len(ids) >= block_size:
            rows = np.asarray(positions, dtype=np.int64)
            yield rows, ids, encode_passages(encoder, texts, batch_size, tokens, rows)
            bar.update(len(ids))
            positions, ids, texts = [], [], []
    if ids:
        rows = np.asarray(positions, dtype=np.int64)
        yield rows, ids, encode_passages(encoder, texts, batch_size, tokens, rows)
        bar.update(len(ids))
    bar.close()


def gpu_available() -> bool:
    """faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    emb: np.ndarray,
    kind: str = "flat",
    use_gpu: bool | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 256,
) -> faiss.Index:
    """An inner-product faiss index holding `emb` (row i = id i).

    flat: exact (IndexFlatIP). ivf: IndexIVFFlat, nlist ≈ 4·√n clipped so each list trains on ≥ 39
    points, nprobe default nlist/8 (≥ 1). hnsw: IndexHNSWFlat(M=hnsw_m), efSearch=ef_search, CPU only.
    `use_gpu=None` moves flat/ivf to GPU when faiss has one; True without a GPU is an error.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}: expected one of {INDEX_KINDS}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {emb.shape}")
    n, dim = emb.shape
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
        index.nprobe = nprobe or max(1, nlist // 8)
        index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search

    want_gpu = gpu_available() if use_gpu is None else use_gpu
    if want_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss sees no GPU (install faiss-gpu, e.g. `pip install kd-study[gpu]`)")
    if want_gpu and kind == "hnsw":
        log.info("faiss has no GPU HNSW; keeping the HNSW index on CPU")
        want_gpu = False
    if want_gpu:
        resources = faiss.StandardGpuResources()
        cpu_index = index
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        index.referenced_objects = [resources, cpu_index]  # the GPU index must not outlive them
    if n:
        index.add(emb)
    return index


def search(index: faiss.Index, query_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [nq, k] float32, idx [nq, k] int64), best first; idx -1 where the index holds fewer than k."""
    query_emb = np.ascontiguousarray(query_emb, dtype=np.float32)
    if query_emb.ndim != 2:
        raise ValueError(f"query embeddings must be [nq, d], got shape {query_emb.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, idx = index.search(query_emb, k)
    return scores, idx
