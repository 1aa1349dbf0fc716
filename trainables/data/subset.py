"""A sub-corpus for fast evaluation: every judged doc plus N seeded random distractors.

Numbers measured on a sub-corpus are not comparable with full-corpus ones: the name gets a
`-subset<N>` suffix and the fingerprint changes (metric keys say so too, see EvalConfig).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator

from trainables.data.types import DataError, DictCorpus, RetrievalData

log = logging.getLogger(__name__)


def subset(data: RetrievalData, n_distractors: int, seed: int) -> RetrievalData:
    """`data` on judged docs + `n_distractors` unjudged docs drawn with `seed` (all when fewer exist).

    One pass over the corpus stream (reservoir sampling), so an 8.8M-passage ir_datasets corpus
    works without being held in memory; only the kept texts are. The result depends on the seed,
    N and the corpus order only. Judged docids missing from the corpus are dropped from the qrels
    (a counted, logged skip, `qrels docid not in corpus`).
    """
    if n_distractors < 0:
        raise ValueError(f"n_distractors must be >= 0, got {n_distractors}")
    judged = {doc_id for graded in data.qrels.values() for doc_id in graded}
    judged_texts: dict[str, str] = {}

    def unjudged() -> Iterator[tuple[str, str]]:
        for doc_id, text in data.corpus:
            if doc_id in judged:
                judged_texts[doc_id] = text
            else:
                yield doc_id, text

    stream = unjudged()
    distractors = reservoir_sample(stream, n_distractors, random.Random(seed))
    deque(stream, maxlen=0)  # finish the pass: judged docs after the last sampled one
    texts = {doc_id: judged_texts[doc_id] for doc_id in sorted(judged_texts)}
    texts.update((doc_id, text) for _, doc_id, text in sorted(distractors))

    skipped = dict(data.skipped)
    qrels = data.qrels
    missing = len(judged) - len(judged_texts)
    if missing:
        skipped["qrels docid not in corpus"] = skipped.get("qrels docid not in corpus", 0) + missing
        log.warning("%s: %d judged docids are not in the corpus; dropped from the qrels", data.name, missing)
        qrels = {q: {d: g for d, g in graded.items() if d in judged_texts} for q, graded in qrels.items()}
    name = f"{data.name}-subset{n_distractors}"
    # the drawn passages depend on the qrels too: two sets share the sub-corpus only when they drew the same ids
    corpus_fingerprint = hashlib.sha256(json.dumps([data.corpus_fingerprint, "subset", list(texts)]).encode()
                                        ).hexdigest() if data.corpus_fingerprint else ""
    return RetrievalData(name=name, corpus=DictCorpus(texts, source=name), queries=dict(data.queries), qrels=qrels,
                         fingerprint=subset_fingerprint(data.fingerprint, n_distractors, seed), skipped=skipped,
                         corpus_fingerprint=corpus_fingerprint)


def subset_fingerprint(fingerprint: str, n_distractors: int, seed: int) -> str:
    """The fingerprint of `subset(data, n_distractors, seed)` from `data`'s: known without drawing the subset."""
    return hashlib.sha256(json.dumps([fingerprint, "subset", n_distractors, seed]).encode()).hexdigest()


HOLDOUT_SEED = 20261123  # fixed: every trial and study sees the same validation queries


def hold_out(data: RetrievalData, n_queries: int, part: str) -> RetrievalData:
    """`data` restricted to N seeded queries with a positive (`part="holdout"`) or to all the others ("rest").

    The draw depends only on the sorted query ids and N, so a training split and its validation
    hold-out never share a query, whatever trial or process builds them.
    """
    if part not in ("holdout", "rest"):
        raise ValueError(f"part must be 'holdout' or 'rest', got {part!r}")
    candidates = sorted(qid for qid in data.queries if data.positives(qid))
    if n_queries >= len(candidates):
        raise DataError(f"{data.name}: holdout={n_queries} leaves no query to train on "
                         f"({len(candidates)} queries have a positive)")
    held = set(random.Random(HOLDOUT_SEED).sample(candidates, n_queries))
    keep = held if part == "holdout" else set(data.queries) - held
    queries = {qid: text for qid, text in data.queries.items() if qid in keep}
    qrels = {qid: graded for qid, graded in data.qrels.items() if qid in keep}
    fingerprint = hashlib.sha256(json.dumps([data.fingerprint, "holdout", n_queries, part]).encode()).hexdigest()
    return RetrievalData(name=f"{data.name}-{part}{n_queries}", corpus=data.corpus, queries=queries, qrels=qrels,
                         fingerprint=fingerprint, skipped=dict(data.skipped),
                         corpus_fingerprint=data.corpus_fingerprint)


def reservoir_sample(items: Iterable[tuple[str, str]], k: int, rng: random.Random) -> list[tuple[int, str, str]]:
    """k items drawn uniformly from a stream of unknown length: (position, *item), Algorithm L.

    Li (1994): skips ahead geometrically, so it draws O(k log(n/k)) random numbers, not n.
    """
    reservoir: list[tuple[int, str, str]] = []
    if k == 0:
        return reservoir
    stream = iter(items)
    for position, (doc_id, text) in enumerate(stream):
        reservoir.append((position, doc_id, text))
        if len(reservoir) == k:
            break
    else:
        return reservoir
    weight = math.exp(math.log(1.0 - rng.random()) / k)
    position = k - 1
    next_pick = position + _skip(weight, rng) + 1
    for doc_id, text in stream:
        position += 1
        if position == next_pick:
            reservoir[rng.randrange(k)] = (position, doc_id, text)
            weight *= math.exp(math.log(1.0 - rng.random()) / k)
            next_pick = position + _skip(weight, rng) + 1
    return reservoir


def _skip(weight: float, rng: random.Random) -> int:
    if weight >= 1.0:
        return 0
    if weight <= 0.0:
        return 2**62
    return int(math.floor(math.log(1.0 - rng.random()) / math.log1p(-weight)))
