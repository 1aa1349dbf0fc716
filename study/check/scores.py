"""The evidence `kd-study check` reads besides the space: training-query count and a sample of scores.

Scores, in order of preference (`--scores auto`):
- `cache`: the study's teacher scores and pools, when the content-addressed cache already holds
  them (`trainables.prepare.assets.asset_keys` of the base config: exact, nothing scored);
- `sample`: a few seeded training queries whose pools come from the initial student over a seeded
  sub-corpus (their positives + `n_passages` others) and are scored by the teacher: the same code
  as the real build (`build_pools`, `build_teacher`), at a fraction of the cost, but pools drawn
  from a smaller corpus are easier than the real ones (say so when reading the entropies);
- `none`: the derivations that need no scores only (no model is loaded).
Data that cannot be loaded (no network for `irds:`) leaves `data.max_train_queries` as the query
count and no scores; the derivations say n/a.
"""
from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from trainables.config import TrialConfig
from trainables.data.types import DictCorpus, RetrievalData
from trainables.errors import BadInput

from study.check.evidence import Evidence, ScoreSample, evidence_for
from study.space.schema import SearchSpace

log = logging.getLogger(__name__)

ScoresMode = Literal["auto", "cache", "sample", "none"]
MAX_QUERIES = 2048        # cached scores: a seeded subset of queries is plenty for the measures
SAMPLE_QUERIES = 8
SAMPLE_PASSAGES = 500


def gather_evidence(space: SearchSpace, scores: ScoresMode = "auto", *, data: RetrievalData | None = None,
                    n_queries: int = SAMPLE_QUERIES, n_passages: int = SAMPLE_PASSAGES) -> Evidence:
    """Load the training data (unless given), count the training queries, and find scores by `scores`."""
    cfg = space.base
    if data is None:
        try:
            from trainables.data import load_data

            data = load_data(cfg.data.train)
        except (BadInput, OSError) as error:   # no network, no folder: the static derivations still run
            limit = cfg.data.max_train_queries
            why = f"training data not loaded: {_first_line(error)}"
            return evidence_for(space, n_queries=limit, n_queries_source=(
                f"≤ data.max_train_queries ({why})" if limit else why), scores_note=why)
    count = training_query_count(cfg, data)
    source = f"{data.name}: {count:,} training queries with a positive"
    sample, note = None, "scores not read (--scores none)"
    if scores in ("auto", "cache"):
        sample = cached_scores(cfg, data)
        note = "no cached teacher scores for this base config" if sample is None else sample.source
    if sample is None and scores in ("auto", "sample"):
        try:
            sample = sampled_scores(cfg, data, n_queries, n_passages)
            note = sample.source
        except (BadInput, OSError) as error:
            note = f"teacher scores not sampled: {_first_line(error)}"
    return evidence_for(space, n_queries=count, n_queries_source=source, scores=sample, scores_note=note)


def training_query_count(cfg: TrialConfig, data: RetrievalData) -> int:
    """Queries a trial trains on: those with a positive, capped by `data.max_train_queries` (as the assets are)."""
    from trainables.data import training_queries

    count = len(training_queries(data))
    return count if cfg.data.max_train_queries is None else min(count, cfg.data.max_train_queries)


def cached_scores(cfg: TrialConfig, data: RetrievalData, seed: int = 0) -> ScoreSample | None:
    """The study's own teacher scores and initial student scores, when the cache holds them."""
    from pathlib import Path

    from trainables.prepare.assets import asset_keys, training_queries

    queries, _ = training_queries(data, cfg.data.max_train_queries)
    keys = asset_keys(cfg, data, queries)
    return scores_from_cache(Path(cfg.cache_dir), keys, seed)


def scores_from_cache(cache_dir, keys: dict[str, str], seed: int = 0) -> ScoreSample | None:
    """A ScoreSample from the cache entries `keys` names (`assets.json` of a study), or None when absent."""
    from pathlib import Path

    from trainables.data.training_set import load_npz_checked

    teacher_path = Path(cache_dir) / "teacher" / f"{keys['teacher']}.npz"
    pool_path = Path(cache_dir) / "pools" / f"{keys['pools']}.npz"
    teacher, _ = load_npz_checked(teacher_path)
    pools, _ = load_npz_checked(pool_path)
    if teacher is None or pools is None:
        return None
    rows = np.arange(teacher["pool_scores"].shape[0])
    if rows.size > MAX_QUERIES:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, MAX_QUERIES, replace=False))
    return ScoreSample(
        teacher_positive=teacher["positive_scores"][rows].astype(np.float64),
        teacher_pool=teacher["pool_scores"][rows].astype(np.float64),
        student_positive=_width(pools["student_positive_scores"][rows], teacher["positive_scores"].shape[1]),
        student_pool=_width(pools["student_scores"][rows], teacher["pool_scores"].shape[1]),
        source=f"cached teacher scores ({rows.size:,} of {teacher['pool_scores'].shape[0]:,} queries, {teacher_path.name})",
    )


def sampled_scores(cfg: TrialConfig, data: RetrievalData, n_queries: int = SAMPLE_QUERIES,
                   n_passages: int = SAMPLE_PASSAGES, seed: int = 0) -> ScoreSample:
    """Pools and teacher scores of `n_queries` seeded training queries over a seeded sub-corpus."""
    import torch

    from trainables.prepare.assets import training_queries
    from trainables.data.candidates import build_pools
    from trainables.models.student import BiEncoder
    from trainables.models.teacher import build_teacher

    queries, _ = training_queries(data, cfg.data.max_train_queries)
    rng = np.random.default_rng(seed)
    chosen = [queries[i] for i in sorted(rng.choice(len(queries), min(n_queries, len(queries)), replace=False))]
    n_docs = len(data.corpus)
    picks = sorted(rng.choice(n_docs, min(n_passages, n_docs), replace=False).tolist())
    doc_ids = data.corpus.doc_ids()                  # by position: an indexed corpus reads only the picks
    picked = [doc_ids[i] for i in picks]
    texts = dict(zip(picked, data.corpus.get_many(picked)))
    positives = [d for _, _, pos in chosen for d in pos if d not in texts]
    texts.update(zip(positives, data.corpus.get_many(positives)))
    wanted = list(texts)
    sub = RetrievalData(name=data.name, corpus=DictCorpus(texts),
                        queries={q: t for q, t, _ in chosen}, qrels={q: data.qrels[q] for q, _, _ in chosen},
                        fingerprint=f"{data.fingerprint}-check-sample")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student = BiEncoder.from_config(cfg.student, cfg.cache_dir).to(device)
    pools = build_pools(sub, chosen, student, min(cfg.data.pool_depth, len(wanted) - 1), None, progress=False,
                        batch_size=cfg.eval.batch_size)
    del student
    teacher = build_teacher(cfg.teacher, cfg.cache_dir, device)
    scores = teacher.score([t for _, t, _ in chosen],
                           [[texts[d] for d in pools.positive_doc_ids(i) + pools.doc_ids(i)] for i in range(len(pools))])
    arrays = {name: np.full(shape, np.nan) for name, shape in
              (("tp", pools.positive_idx.shape), ("tn", pools.pool_idx.shape))}
    arrays["sp"], arrays["sn"] = (a.astype(np.float64) for a in (pools.student_positive_scores, pools.student_scores))
    for i, (n_pos, s) in enumerate(zip((pools.positive_idx >= 0).sum(axis=1).tolist(), scores)):
        arrays["tp"][i, :n_pos], arrays["tn"][i, :len(s) - n_pos] = s[:n_pos], s[n_pos:]
    return ScoreSample(arrays["tp"], arrays["tn"], arrays["sp"], arrays["sn"],
                       source=f"sampled: {len(chosen)} queries, pools from {len(wanted):,} seeded passages "
                              "(easier than the real pools)")


def _width(array: np.ndarray, width: int) -> np.ndarray:
    """Student arrays padded or cut to the teacher arrays' width (both NaN padded)."""
    out = np.full((array.shape[0], width), np.nan)
    keep = min(width, array.shape[1])
    out[:, :keep] = array[:, :keep]
    return out


def _first_line(error: BaseException, limit: int = 160) -> str:
    line = (str(error).splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit - 1] + "…"


def check_for_run(space: SearchSpace, data: RetrievalData, keys: dict[str, str] | None = None):
    """`kd-study run`'s check: the training data the preflight loaded, and the study's own cached scores
    once its assets exist (`keys`, from study.run.assets); before that, the derivations that need none."""
    from study.check.dimensions import check_space

    cfg = space.base
    count = training_query_count(cfg, data)
    scores = scores_from_cache(cfg.cache_dir, keys) if keys else None
    note = scores.source if scores is not None else "before the shared assets: no teacher scores yet"
    evidence = evidence_for(space, n_queries=count, n_queries_source=f"{data.name}: {count:,} training queries",
                            scores=scores, scores_note=note)
    return check_space(space, evidence)
