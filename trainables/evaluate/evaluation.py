"""Evaluation of a student: streamed, sharded exact search (`sharded_search`) → ir_measures, with per-query scores.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG
from tqdm.auto import tqdm

from trainables.evaluate import eval_tokens
from trainables.config import DatasetRef, EvalConfig
from trainables.data import RetrievalData, corpus_source, load_data, subset
from trainables.evaluate.sharded_search import BLOCK_SIZE, Shard, search_corpus
from trainables.outputs import (
    BEIR_AVERAGED_MEASURE, BEIR_MEASURE_NAMES, DEV_MEASURE_NAMES, DL_MEASURE_NAMES, beir_average_key, eval_set_refs,
    set_metric_keys,
)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

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
    `<set>/corpus_reused_from` (a set name, not seconds) where another set's pass over the same corpus served it.
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
    block_size: int = BLOCK_SIZE,
) -> Run | None:
    """Dense retrieval of the judged queries over the whole corpus: {qid: {docid: score}}, depth min(top_k, |corpus|).

    With `shard=(rank, world, gather_fn)` each rank searches its slice of the corpus and
    `gather_fn(obj) -> [obj of rank 0, ..., obj of rank world-1]` (every rank calls it once,
    `trainables.train.ddp.eval_shard`: the device-placed `all_gather`) collects the slices' top-k lists; only rank 0
    merges them and returns the run, the other ranks return None (`trainables.evaluate.sharded_search`).
    """
    runs, _ = _search_sets(student, [data], top_k, index_kind, batch_size, progress, shard, block_size)
    return runs[0] if runs is not None else None


def _search_sets(student, sets: list[RetrievalData], top_k, index_kind, batch_size, progress, shard, block_size,
                 cache_dir: str | None = None) -> tuple[list[Run] | None, dict[str, float]]:
    """One pass over the corpus that `sets` share (their `corpus_fingerprint`) for all their queries.

    Every rank encodes every set's judged queries (unjudged ones cannot move a metric); returns one
    run per set on rank 0, None on the other ranks of a sharded search. With `cache_dir`, queries and
    passages are encoded from their token ids (`eval_tokens`: tokenised once per study), not their texts.
    """
    start = time.perf_counter()
    progress = progress and (shard is None or shard[0] == 0)
    qids = [[qid for qid in data.qrels if qid in data.queries] for data in sets]
    query_emb = np.concatenate([eval_tokens.encode_queries(student, data, ids, batch_size, progress, cache_dir)
                                for data, ids in zip(sets, qids)])
    timings = {"encode_queries_s": time.perf_counter() - start}
    tokens = eval_tokens.corpus_tokens(student, sets[0], cache_dir) if cache_dir else None
    top, search_timings = search_corpus(student, sets[0].corpus, query_emb, top_k, index_kind, batch_size, shard,
                                        progress, block_size, tokens)
    timings.update(search_timings)
    if top is None:
        return None, timings
    rows = iter(top.rows())
    return [{qid: next(rows) for qid in ids} for ids in qids], timings


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
    hold-out of the train split and its test split) are searched in one pass over it with all
    their queries: the corpus is encoded once per call (`<set>/corpus_reused_from` in the timings
    says which set's pass served it). Sets are loaded one corpus source (`corpus_source`) at a
    time, so distinct large corpora are not held side by side. Subset mode draws one sub-corpus
    per set: shared only when two sets drew the same passages.
    """
    total_start = time.perf_counter()
    timings: dict[str, float | str] = {}
    runs: dict[str, Run] = {}
    qrels: dict[str, Qrels] = {}
    sets = eval_sets(eval_cfg)
    by_source: dict[str, list[int]] = {}
    for position, eval_set in enumerate(sets):
        by_source.setdefault(corpus_source(eval_set.ref), []).append(position)
    bar = tqdm(total=len(sets), desc="evaluate", unit="set", disable=not progress or (shard is not None and shard[0]))
    for positions in by_source.values():
        loaded: dict[int, RetrievalData] = {}
        for position in positions:
            start = time.perf_counter()
            data = load_data(sets[position].ref)
            if eval_cfg.subset_distractors is not None:
                data = subset(data, eval_cfg.subset_distractors, seed)
            loaded[position] = data
            timings[f"{sets[position].name}/load_s"] = time.perf_counter() - start
        same_corpus: dict[str, list[int]] = {}
        for position, data in loaded.items():
            same_corpus.setdefault(data.corpus_fingerprint or f"#{position}", []).append(position)
        for members in same_corpus.values():
            set_runs, set_timings = _search_sets(student, [loaded[p] for p in members], eval_cfg.top_k,
                                                 eval_cfg.index, eval_cfg.batch_size, progress, shard,
                                                 eval_cfg.block_size, cache_dir)
            owner = sets[members[0]].name
            timings.update({f"{owner}/{k}": v for k, v in set_timings.items()})
            for p in members[1:]:
                timings.update({f"{sets[p].name}/encode_corpus_s": 0.0, f"{sets[p].name}/index_s": 0.0,
                                f"{sets[p].name}/corpus_reused_from": owner})
            for p, run in zip(members, set_runs or []):   # None on a rank > 0 of a sharded evaluation
                runs[sets[p].name] = run
                qrels[sets[p].name] = loaded[p].qrels
            bar.update(len(members))
        del loaded
    bar.close()

    metrics: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    beir_ndcg = []
    for eval_set in [eval_set for eval_set in sets if eval_set.name in runs]:
        start = time.perf_counter()
        aggregate, set_per_query = evaluate_run(runs[eval_set.name], qrels[eval_set.name], eval_set.measures)
        timings[f"{eval_set.name}/metrics_s"] = time.perf_counter() - start
        metrics.update(aggregate)
        per_query.update(set_per_query)
        if eval_set.kind == "beir":
            averaged = set_metric_keys("beir", eval_set.ref.label, eval_cfg.metric_suffix)[BEIR_AVERAGED_MEASURE]
            beir_ndcg.append(aggregate[averaged])
    if beir_ndcg:
        metrics[beir_average_key(eval_cfg.metric_suffix)] = float(np.mean(beir_ndcg))
    timings["total_s"] = time.perf_counter() - total_start
    return EvalResult(metrics=metrics, per_query=per_query, timings=timings, runs=runs)
