"""A study's shared assets: built once from the base config (pools, teacher scores, training set).

Recorded in the study folder (`StudyPaths.assets`) so that trials, `resume` and the MLflow parent
run name the same content-addressed cache entries; every K the study can try must fit the pools.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, TypedDict

from trainables.data.types import RetrievalData
from trainables.samplers import check_k_fits_pool

from study.paths import StudyPaths
from study.space.schema import SearchSpace


class AssetsRecord(TypedDict):
    training_set_path: str     # the .npz every trial reads
    keys: dict[str, str]       # part → cache key (pools, teacher scores, training set)
    stats: dict[str, Any]      # build statistics: training queries, smallest pool, pairs scored
    references: dict[str, float]   # untrained student and teacher on the dev set (trainables.prepare.references)


def prepare_study_assets(space: SearchSpace, paths: StudyPaths, say: Callable[[str], None], *,
                         data: RetrievalData | None = None) -> AssetsRecord:
    """`data`: the base config's training data when the caller already loaded it (the preflight)."""
    from trainables.prepare.assets import prepare_assets
    from trainables.prepare.references import reference_metrics

    warm = ", warm start" if space.base.init.start == "warmup" else ""
    check_space_for(space, paths, data)
    say(f"kd-study: preparing shared assets (pools, teacher scores{warm}) in {space.base.cache_dir} ...")
    assets = prepare_assets(space.base, data=data, on_teacher_progress=teacher_progress(say))   # bars on a terminal, plain lines in a log
    stats = {k: v for k, v in assets.stats.items() if isinstance(v, (int, float, str, bool)) or v is None}
    check_pool_sizes(space, stats)
    check_space_for(space, paths, data, assets_built=True)
    references = reference_metrics(space.base)   # the learning curves' floor and ceiling
    info = AssetsRecord(training_set_path=assets.training_set_path, keys=assets.keys, stats=stats,
                        references=references)
    tmp = paths.assets.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, paths.assets)
    say(assets_line(stats))
    return info


def teacher_progress(say: Callable[[str], None]) -> Callable[[Any], None]:
    """The console's line per teacher shard written (trainables.prepare.teacher_shards.ShardProgress): shards, pairs/s, ETA."""
    return lambda progress: say(f"kd-study: {progress.line()}")


def check_space_for(space: SearchSpace, paths: StudyPaths, data: RetrievalData | None, *,
                    assets_built: bool = False) -> None:
    """Free space before the assets (the cache) and before the trials (their checkpoints in the study folder).

    Estimates (trainables.disk): a study that cannot fit stops in one line now, not at its first
    checkpoint. Only the trials still to run count: a resumed study's finished trials hold their space.
    """
    from study.run.trainable import RESULT_MARKER
    from trainables.disk import asset_bytes, check_free_space, checkpoint_bytes

    base = space.base
    if not assets_built:
        queries = len(data.queries) if data is not None else (base.data.max_train_queries or 0)
        if base.data.max_train_queries:
            queries = min(queries, base.data.max_train_queries)
        check_free_space(base.cache_dir, asset_bytes(base, queries), "the shared assets (pools, teacher scores)")
        return
    done = len(list(paths.trials_dir.glob(f"*/{RESULT_MARKER}"))) if paths.trials_dir.is_dir() else 0
    left = max(space.num_trials - done, 0)
    check_free_space(paths.dir, left * checkpoint_bytes(base), f"the checkpoints of {left} trials")


def assets_line(stats: dict[str, Any]) -> str:
    scored, read = stats.get("teacher_pairs_scored"), stats.get("teacher_pairs_read")
    hit = f"{read} teacher scores read from the scores file" if read else (
        "cache hit" if scored == 0 else f"{scored} teacher pairs scored")
    shards, done = stats.get("teacher_shards"), stats.get("teacher_shards_scored")
    if scored and shards and done is not None and done < shards:
        hit += f" ({done} of {shards} shards; the others were cached by an interrupted build)"
    warm = stats.get("warm_start_cache_status")
    if warm is not None:
        trained = stats.get("warm_start_steps_trained")
        hit += ", warm start " + ("reused" if warm == "hit" else f"trained ({trained} steps)")
    return f"kd-study: assets ready ({stats.get('n_train_queries')} training queries, {hit})"


def check_pool_sizes(space: SearchSpace, stats: dict[str, Any]) -> None:
    """Every K the study can try must fit the smallest real pool, before any trial (unless clipped)."""
    smallest = stats.get("pool_size_min")
    ks = [space.base.sampler.k]
    on_small_pool = space.base.sampler.on_small_pool
    for param in space.params:
        if param.name == "sampler.k":
            ks += [int(v) for v in param.spec.extremes()]
        if param.name == "sampler.on_small_pool":
            on_small_pool = "error"  # some trials may use it
    check_k_fits_pool(max(ks), smallest, on_small_pool, where=f"{space.source}: sampler.k",
                      pool=f"the smallest candidate pool ({smallest} candidates; "
                           f"data.pool_depth={space.base.data.pool_depth})")
