"""Teacher scoring in shards of queries, each kept in the cache as it finishes, so a killed build resumes.

    cache_dir/teacher/<teacher_key>.shards/q<shard_queries>/<index>.npz   one shard's scores (checksummed)

Shard i holds queries [i * shard_queries, (i + 1) * shard_queries) of the pools, whatever the number
of workers, so a re-run finds the shards a killed driver wrote and scores only the missing ones; the
assembled scores equal an uninterrupted build's. Under Ray (`ray.is_initialized()`: a study,
`kd-study train`) each shard is a Ray task: one per GPU with bf16 autocast, or CPU tasks sized to
the node's cores; the driver writes each shard as its task returns, so the cache needs no file
system shared with the workers. Without Ray, or with a single shard left and no GPU that only Ray
reaches (SciFact: 709 queries, one shard), the shards run in this process with one teacher: no task
start-up (a fresh worker imports torch and transformers: seconds on small machines).

A bi-encoder teacher encodes each unique text once per shard: a passage in the pools of two shards is
encoded twice (MS MARCO-shaped pools overlap little; one shard, as for SciFact, is today's exact work).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainables.config import TeacherConfig
from trainables.train.precision import autocast, autocast_dtype
from trainables.data.training_set import load_npz_checked, save_npz_atomic

log = logging.getLogger(__name__)

CPUS_PER_CPU_TASK = 4   # torch threads of one CPU shard task (fewer where a node has fewer cores)


@dataclass(frozen=True)
class ShardProgress:
    """Where a teacher build stands after a shard finished: what the console prints."""

    shards_done: int
    shards_total: int
    pairs_done: int          # pairs of the shards done, this run's and the cached ones
    pairs_total: int
    pairs_per_s: float       # of the shards scored in this run
    eta_s: float | None      # None until a shard was scored in this run

    def line(self) -> str:
        eta = "" if self.eta_s is None else f", ETA {_duration(self.eta_s)}"
        return (f"teacher scores: {self.shards_done}/{self.shards_total} shards, "
                f"{self.pairs_done:,}/{self.pairs_total:,} pairs, {self.pairs_per_s:,.0f} pairs/s{eta}")


@dataclass
class ShardedScores:
    """Per-query float32 scores aligned with each query's passages, and what this run did to get them."""

    scores: list[np.ndarray]
    shards_total: int
    shards_scored: int       # scored in this run; the others came from the cache
    pairs_scored: int
    forward_passes: int
    where: str               # "in-process", "ray-cpu" or "ray-gpu"


def shard_bounds(n_queries: int, shard_queries: int) -> list[tuple[int, int]]:
    """[start, end) of each shard: fixed by the query count and shard size alone, never by the workers."""
    return [(start, min(start + shard_queries, n_queries)) for start in range(0, n_queries, shard_queries)]


def shard_folder(teacher_path: Path, shard_queries: int) -> Path:
    """Where the shards of the teacher file at `teacher_path` live (the shard size names a folder)."""
    return teacher_path.with_suffix(".shards") / f"q{shard_queries}"


def score_in_shards(
    cfg: TeacherConfig, cache_dir: str, query_ids: list[str], queries: list[str], lengths: np.ndarray,
    passages: Callable[[int, int], list[list[str]]], folder: Path,
    on_progress: Callable[[ShardProgress], None] | None = None, progress: bool = False,
) -> ShardedScores:
    """Teacher scores of every (query, passage) pair, reusing the shards in `folder` and writing the missing ones.

    `lengths[i]`: how many passages query i has; `passages(start, end)`: the texts of queries [start, end),
    read when their shard is about to be scored, so the driver never holds every pool's texts at once
    (15M passages at MS MARCO scale). `on_progress` is called after each shard is written; an exception
    it raises stops the build with the written shards kept (what a killed driver leaves). `progress`:
    the teacher's bars in-process.
    """
    bounds = shard_bounds(len(queries), cfg.shard_queries)
    lengths = np.asarray(lengths, dtype=np.int64)
    results: dict[int, np.ndarray] = {}
    for index, (start, end) in enumerate(bounds):
        arrays, _ = load_npz_checked(folder / f"{index:05d}.npz")
        if arrays is not None and _fits(arrays, query_ids[start:end], lengths[start:end]):
            results[index] = arrays["scores"]
    missing = [i for i in range(len(bounds)) if i not in results]
    tracker = _Tracker(bounds, lengths, set(results), on_progress)
    work = [(i, queries[s:e], partial(passages, s, e)) for i in missing for s, e in [bounds[i]]]

    def keep(index: int, scores: np.ndarray, forward: int) -> None:
        start, end = bounds[index]
        save_npz_atomic(folder / f"{index:05d}.npz", {"query_ids": np.array(query_ids[start:end], dtype=str),
                                                      "lengths": lengths[start:end], "scores": scores})
        results[index] = scores
        tracker.done(index, forward)

    on_ray = work and _ray_ready() and (len(work) > 1 or _gpus_only_on_ray())
    where = _run_ray(cfg, cache_dir, work, keep) if on_ray else _run_here(cfg, cache_dir, work, keep, progress)
    flat = np.concatenate([results[i] for i in range(len(bounds))]) if bounds else np.zeros(0, np.float32)
    cuts = np.cumsum(lengths)[:-1] if len(lengths) else []
    return ShardedScores(scores=np.split(flat, cuts) if len(lengths) else [], shards_total=len(bounds),
                         shards_scored=len(missing), pairs_scored=tracker.pairs_scored,
                         forward_passes=tracker.forward_passes, where=where if work else "cache")


def score_shard(cfg: TeacherConfig, cache_dir: str, queries: list[str], passages: list[list[str]],
                device: str | None = None, threads: int | None = None) -> tuple[np.ndarray, int]:
    """(flat float32 scores of one shard's pairs in query order, forward passes): bf16 autocast on a GPU."""
    from trainables.models.teacher import build_teacher

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    teacher = build_teacher(cfg, cache_dir, device)
    with autocast(device, autocast_dtype("gpu-bf16", device)):
        scores = teacher.score(queries, passages)
    flat = np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)
    return flat, teacher.forward_passes


# ---- where the shards run ------------------------------------------------------------------------
Work = list[tuple[int, list[str], Callable[[], list[list[str]]]]]   # (shard, its queries, its texts when asked)


def _run_here(cfg: TeacherConfig, cache_dir: str, work: Work, keep: Callable[[int, np.ndarray, int], None],
              progress: bool = False) -> str:
    from trainables.models.teacher import build_teacher

    if not work:
        return "cache"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher = build_teacher(cfg, cache_dir, device)   # loaded once for all shards
    for index, queries, texts in work:
        before = teacher.forward_passes
        with autocast(device, autocast_dtype("gpu-bf16", device)):
            scores = teacher.score(queries, texts(), progress=progress)
        keep(index, np.concatenate(scores).astype(np.float32), teacher.forward_passes - before)
    return "in-process"


def _ray_ready() -> bool:
    try:
        import ray
    except ImportError:   # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()


def _gpus_only_on_ray() -> bool:
    """The cluster has GPUs and this process sees none: even one shard is worth a task there."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0 and not torch.cuda.is_available()


def _run_ray(cfg: TeacherConfig, cache_dir: str, work: Work, keep: Callable[[int, np.ndarray, int], None]) -> str:
    """One task per shard, at most as many in flight as the cluster runs at once (their texts are in flight too)."""
    import ray

    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    if gpus:
        options, slots, where = {"num_gpus": 1, "num_cpus": 1}, gpus, "ray-gpu"
    else:
        per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = max(1, min(CPUS_PER_CPU_TASK, int(per_node)))
        options, slots, where = {"num_cpus": cpus}, max(1, int(total.get("CPU", 1)) // cpus), "ray-cpu"
    task = ray.remote(max_retries=2)(score_shard).options(**options)
    threads = None if gpus else options["num_cpus"]
    pending: dict[Any, int] = {}
    queue = list(work)
    try:
        while queue or pending:
            while queue and len(pending) < slots:
                index, queries, texts = queue.pop(0)
                pending[task.remote(cfg, cache_dir, queries, texts(), None, threads)] = index
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            scores, forward = ray.get(ready[0])
            keep(index, scores, forward)
    finally:
        for ref in pending:   # an interrupted driver leaves no task scoring for nobody
            ray.cancel(ref, force=True)
    return where


# ---- bookkeeping ---------------------------------------------------------------------------------
def _fits(arrays: dict[str, np.ndarray], query_ids: list[str], lengths: np.ndarray) -> bool:
    try:
        return (arrays["query_ids"].tolist() == list(query_ids) and np.array_equal(arrays["lengths"], lengths)
                and arrays["scores"].shape == (int(lengths.sum()),))
    except KeyError:
        return False


class _Tracker:
    """Counts this run's work and reports progress after each shard."""

    def __init__(self, bounds: list[tuple[int, int]], lengths: np.ndarray, cached: set[int],
                 on_progress: Callable[[ShardProgress], None] | None):
        self.pairs = [int(lengths[s:e].sum()) for s, e in bounds]
        self.done_shards = set(cached)
        self.pairs_scored = self.forward_passes = 0
        self.started = time.perf_counter()
        self.on_progress = on_progress

    def done(self, index: int, forward: int) -> None:
        self.done_shards.add(index)
        self.pairs_scored += self.pairs[index]
        self.forward_passes += forward
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.pairs_scored / elapsed
        left = sum(self.pairs) - sum(self.pairs[i] for i in self.done_shards)
        progress = ShardProgress(len(self.done_shards), len(self.pairs), sum(self.pairs) - left, sum(self.pairs),
                                 rate, left / rate if rate > 0 else None)
        log.info(progress.line())
        if self.on_progress is not None:
            self.on_progress(progress)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
