"""Evaluation of a student: encode → faiss inner-product search → ir_measures, with per-query scores.

Metrics follow science.md §3 and are all computed by `ir_measures` (trec_eval semantics). Their
keys are built once, in `trainables.outputs` (`set_metric_keys`, `eval_metric_keys`); this module maps
each measure name to its measure:

| set            | measure names (outputs.*_MEASURE_NAMES) | measure                            |
|----------------|-----------------------------------------|------------------------------------|
| `eval.dev`     | mrr_at_10, ndcg_at_10, recall_at_1000   | RR@10, nDCG@10, R@1000             |
| `eval.beir[i]` | ndcg_at_10, mrr_at_10 (+ the average    | nDCG@10, RR@10                     |
|                | nDCG@10 over the sets)                  |                                    |
| `eval.dl[i]`   | ndcg_at_10, mrr_at_10, recall_at_1000   | nDCG@10 (graded gains), RR(rel=2)@10, R(rel=2)@1000 |

TREC DL qrels are graded 0–3; nDCG uses the grades as gains, RR and recall count grade ≥ 2 as
relevant (the official DL convention). A judged query that is missing from the run (no text, or
nothing retrieved) scores 0 and is part of every mean: dropping it would inflate the numbers.
R@1000 is computed on a run of depth `eval.top_k` (default 1000), so it is bounded by that depth.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG
from tqdm.auto import tqdm

from trainables import eval_tokens, retrieval
from trainables.config import DatasetRef, EvalConfig
from trainables.data import RetrievalData, corpus_source, load_data, subset
from trainables.outputs import (
    BEIR_AVERAGED_MEASURE, BEIR_MEASURE_NAMES, DEV_MEASURE_NAMES, DL_MEASURE_NAMES, beir_average_key, eval_set_refs,
    set_metric_keys,
)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
GatherFn = Callable[[Any], list[Any]]
Shard = tuple[int, int, GatherFn]

_MEASURES = {"mrr_at_10": RR @ 10, "ndcg_at_10": nDCG @ 10, "recall_at_1000": R @ 1000}
_DL_MEASURES = {**_MEASURES, "mrr_at_10": RR(rel=2) @ 10, "recall_at_1000": R(rel=2) @ 1000}
DEV_MEASURES = {name: _MEASURES[name] for name in DEV_MEASURE_NAMES}
BEIR_MEASURES = {name: _MEASURES[name] for name in BEIR_MEASURE_NAMES}
DL_MEASURES = {name: _DL_MEASURES[name] for name in DL_MEASURE_NAMES}
MEASURES = {"dev": DEV_MEASURES, "beir": BEIR_MEASURES, "dl": DL_MEASURES}


@dataclass(frozen=True)
class EvalResult:
    """Aggregate metrics, `per_query[metric_key] = {qid: value}` (for significance tests) and timings in seconds.

    On a rank other than 0 of a sharded evaluation, `metrics` and `per_query` are empty. Timings:
    `<set>/{load_s, encode_corpus_s, index_s, encode_queries_s, search_s, metrics_s}`, `total_s`, and
    `<set>/corpus_reused_from` (a set name, not seconds) where the set searched another set's encoding.
    """

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    timings: dict[str, float | str] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)   # evaluation set name → its top-`top_k` run


@dataclass(frozen=True)
class EvalSet:
    """One evaluation collection and the metric keys it produces (`key → ir_measures measure`)."""

    kind: str  # "dev" | "beir" | "dl"
    ref: DatasetRef
    measures: dict[str, Any]

    @property
    def name(self) -> str:
        return {"dev": "dev", "beir": f"beir/{self.ref.label}", "dl": self.ref.label}[self.kind]


# ---- pure core ----------------------------------------------------------------------------------
def evaluate_run(
    run: Run, qrels: Qrels, measures: Mapping[str, Any] | Iterable[Any]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score a run against qrels: (aggregate {name: mean}, per_query {name: {qid: value}}).

    `measures` is `{name: ir_measures measure}` or an iterable of measures (named `str(measure)`).
    Every qrels query gets a value (0 when the run lacks it); run queries without qrels are
    ignored. The aggregate is the mean over all qrels queries, which is trec_eval's mean for RR,
    nDCG and R, computed here rather than trusted to each ir_measures provider's missing-query policy.
    """
    named = dict(measures) if isinstance(measures, Mapping) else {str(m): m for m in measures}
    if not named:
        raise ValueError("evaluate_run: no measures given")
    if not qrels:
        raise ValueError("evaluate_run: qrels are empty, there is nothing to evaluate against")
    names_of: dict[Any, list[str]] = {}
    for name, measure in named.items():
        names_of.setdefault(measure, []).append(name)

    per_query = {name: dict.fromkeys(qrels, 0.0) for name in named}
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels}
    for metric in ir_measures.iter_calc(list(names_of), qrels, judged_run):
        if metric.query_id in qrels:
            for name in names_of[metric.measure]:
                per_query[name][metric.query_id] = float(metric.value)
    aggregate = {name: float(np.mean(list(values.values()))) for name, values in per_query.items()}
    return aggregate, per_query


# ---- retrieval ----------------------------------------------------------------------------------
def retrieve(
    student,
    data: RetrievalData,
    top_k: int = 1000,
    index_kind: str = "flat",
    batch_size: int = 128,
    progress: bool = True,
    shard: Shard | None = None,
) -> Run | None:
    """Dense retrieval of the judged queries over the whole corpus: {qid: {docid: score}}, depth min(top_k, |corpus|).

    With `shard=(rank, world, gather_fn)` each rank encodes its slice of the corpus and
    `gather_fn(obj) -> [obj of rank 0, ..., obj of rank world-1]` (every rank calls it once,
    e.g. `torch.distributed.all_gather_object`) collects the slices; only rank 0 searches and
    returns the run, the other ranks return None.
    """
    run, _ = _retrieve_timed(student, data, top_k, index_kind, batch_size, progress, shard)
    return run


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus encoded for search: its doc ids and the faiss index over them (None on ranks > 0).

    `owner` is the evaluation set that encoded it; a later set with the same corpus fingerprint
    searches it instead of encoding the corpus again.
    """

    owner: str
    doc_ids: list[str] | None
    index: Any


def _encode_and_index(student, data: RetrievalData, index_kind, batch_size, progress, shard, owner: str,
                      cache_dir: str | None = None) -> tuple[EncodedCorpus, dict[str, float]]:
    """Encode `data`'s corpus (sharded: every rank its slice, gathered on rank 0) and index it on rank 0;
    with `cache_dir`, from its token ids (`eval_tokens`: tokenised once per study)."""
    timings: dict[str, float] = {}
    rank, world, gather_fn = shard if shard is not None else (0, 1, None)
    start = time.perf_counter()
    tokenised = eval_tokens.corpus_tokens(student, data, cache_dir) if cache_dir else None
    if tokenised is not None:
        rows, doc_emb = eval_tokens.encode_corpus_tokens(student, tokenised[1], batch_size, (rank, world),
                                                         progress and rank == 0)
        doc_ids = [tokenised[0][row] for row in rows.tolist()]
    else:
        doc_ids, doc_emb = retrieval.encode_corpus(
            student, data.corpus, batch_size, progress and rank == 0, shard=(rank, world)
        )
    if gather_fn is not None:
        parts = gather_fn((list(doc_ids), np.asarray(doc_emb, dtype=np.float32)))
        if rank != 0:
            timings["encode_corpus_s"] = time.perf_counter() - start
            return EncodedCorpus(owner, None, None), timings
        doc_ids = [d for part_ids, _ in parts for d in part_ids]
        doc_emb = np.concatenate([emb for ids, emb in parts if len(ids)] or [np.asarray(doc_emb)])
    timings["encode_corpus_s"] = time.perf_counter() - start
    start = time.perf_counter()
    index = retrieval.build_index(doc_emb, kind=index_kind) if len(doc_ids) else None
    timings["index_s"] = time.perf_counter() - start
    return EncodedCorpus(owner, list(doc_ids), index), timings


def _retrieve_timed(student, data: RetrievalData, top_k, index_kind, batch_size, progress, shard,
                    encodings: dict[str, EncodedCorpus] | None = None, set_name: str = "",
                    cache_dir: str | None = None) -> tuple[Run | None, dict[str, float | str]]:
    """`retrieve` with its timings; `encodings` (corpus fingerprint → encoding) is read and filled.

    A set whose corpus fingerprint is in `encodings` searches that encoding: its `encode_corpus_s`
    and `index_s` are 0 and `corpus_reused_from` names the set that encoded it. Every rank of a
    sharded evaluation takes the same decision (the fingerprints are the same everywhere), so every
    rank calls the gather the same number of times.
    """
    timings: dict[str, float | str] = {}
    key = data.corpus_fingerprint
    corpus = encodings.get(key) if encodings is not None and key else None
    if corpus is None:
        corpus, encode_timings = _encode_and_index(student, data, index_kind, batch_size, progress, shard, set_name,
                                                   cache_dir)
        timings.update(encode_timings)
        if encodings is not None and key:
            encodings[key] = corpus
    else:
        timings.update({"encode_corpus_s": 0.0, "index_s": 0.0, "corpus_reused_from": corpus.owner})
    if corpus.doc_ids is None:  # a rank > 0 of a sharded evaluation: its part is done
        return None, timings

    start = time.perf_counter()
    qids = [qid for qid in data.qrels if qid in data.queries]  # unjudged queries cannot move a metric
    tokens = eval_tokens.query_tokens(student, data, qids, cache_dir) if cache_dir and qids else None
    query_emb = student.encode_token_ids(tokens, batch_size=batch_size) if tokens is not None else student.encode(
        [data.queries[qid] for qid in qids], is_query=True, batch_size=batch_size, progress=progress
    )  # both encode in eval mode (no dropout) and without grad
    timings["encode_queries_s"] = time.perf_counter() - start

    start = time.perf_counter()
    run: Run = {}
    doc_ids = corpus.doc_ids
    if qids and doc_ids:
        scores, idx = retrieval.search(corpus.index, query_emb, min(top_k, len(doc_ids)))
        for qid, row_scores, row_idx in zip(qids, scores.tolist(), idx.tolist()):
            # faiss pads with -1 when an approximate index finds fewer than k neighbours
            run[qid] = {doc_ids[j]: s for j, s in zip(row_idx, row_scores) if j >= 0}
    timings["search_s"] = time.perf_counter() - start
    return run, timings


# ---- a student on the configured sets -----------------------------------------------------------
def eval_sets(eval_cfg: EvalConfig) -> list[EvalSet]:
    """The configured sets with their final metric keys; duplicate keys (two sets, one label) are an error."""
    suffix = eval_cfg.metric_suffix
    sets = [
        EvalSet(kind, ref, {key: MEASURES[kind][name] for name, key in set_metric_keys(kind, ref.label, suffix).items()})
        for kind, ref in eval_set_refs(eval_cfg)
    ]
    seen: dict[str, str] = {}
    for eval_set in sets:
        for key in eval_set.measures:
            if key in seen:
                raise ValueError(
                    f"eval: metric key {key!r} is produced by both {seen[key]!r} and {eval_set.ref.id!r}; "
                    "give one of them a distinct `name`"
                )
            seen[key] = eval_set.ref.id
    return sets


def evaluate_student(
    student,
    eval_cfg: EvalConfig,
    seed: int,
    progress: bool = True,
    shard: Shard | None = None,
    cache_dir: str | None = None,
) -> EvalResult:
    """Evaluate a student (a BiEncoder, not its DDP wrapper) on every set of `eval_cfg`.

    `cache_dir`: encode from token ids tokenised once per study (`eval_tokens`), not from texts.

    In subset mode (`eval_cfg.subset_distractors = N`) each set is reduced to its judged docs plus
    N distractors drawn with `seed`, and every key carries `eval_cfg.metric_suffix`.
    `shard`: see `retrieve`; every rank must call this, only rank 0 gets metrics.

    Sets that search the same corpus (`RetrievalData.corpus_fingerprint`: SciFact's validation
    hold-out of the train split and its test split) share one encoding and faiss index: the corpus
    is encoded once per call (`<set>/corpus_reused_from` in the timings says which set did it). An
    encoding is kept only while a later set comes from the same source (`corpus_source`), so
    distinct large corpora are not held side by side. Subset mode draws one sub-corpus per set:
    shared only when two sets drew the same passages.
    """
    total_start = time.perf_counter()
    rank = shard[0] if shard is not None else 0
    metrics: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    timings: dict[str, float | str] = {}
    runs: dict[str, Run] = {}
    beir_ndcg = []
    encodings: dict[str, EncodedCorpus] = {}   # corpus fingerprint → its encoding
    held: dict[str, str] = {}                  # corpus fingerprint → the source it was loaded from
    sets = eval_sets(eval_cfg)
    sources = [corpus_source(eval_set.ref) for eval_set in sets]
    for position, eval_set in enumerate(tqdm(sets, desc="evaluate", unit="set", disable=not progress or rank != 0)):
        start = time.perf_counter()
        data = load_data(eval_set.ref)
        if eval_cfg.subset_distractors is not None:
            data = subset(data, eval_cfg.subset_distractors, seed)
        timings[f"{eval_set.name}/load_s"] = time.perf_counter() - start

        run, set_timings = _retrieve_timed(
            student, data, eval_cfg.top_k, eval_cfg.index, eval_cfg.batch_size, progress, shard, encodings,
            eval_set.name, cache_dir,
        )
        if data.corpus_fingerprint:
            held.setdefault(data.corpus_fingerprint, sources[position])
        for key in [key for key, source in held.items() if source not in sources[position + 1:]]:
            encodings.pop(key, None)  # no later set comes from its source: free the index now
            del held[key]
        timings.update({f"{eval_set.name}/{k}": v for k, v in set_timings.items()})
        if run is None:  # a rank > 0 of a sharded evaluation: its part is done
            continue

        start = time.perf_counter()
        aggregate, set_per_query = evaluate_run(run, data.qrels, eval_set.measures)
        timings[f"{eval_set.name}/metrics_s"] = time.perf_counter() - start
        metrics.update(aggregate)
        per_query.update(set_per_query)
        runs[eval_set.name] = run
        if eval_set.kind == "beir":
            averaged = set_metric_keys("beir", eval_set.ref.label, eval_cfg.metric_suffix)[BEIR_AVERAGED_MEASURE]
            beir_ndcg.append(aggregate[averaged])
    if beir_ndcg:
        metrics[beir_average_key(eval_cfg.metric_suffix)] = float(np.mean(beir_ndcg))
    timings["total_s"] = time.perf_counter() - total_start
    return EvalResult(metrics=metrics, per_query=per_query, timings=timings, runs=runs)
