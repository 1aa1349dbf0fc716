"""What a study run is given (`StudyOptions`: the CLI's flags) and what its Tuner works in (`StudyContext`).

Their own module so the runner, which builds them, and the tuner, which reads them, import them from
one place instead of from each other.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from study.paths import StudyPaths
from study.run.assets import AssetsRecord
from study.space.schema import SearchSpace


@dataclass
class StudyOptions:
    root: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    optuna_storage: str | None = None
    experiment: str | None = None
    log_models: bool = False
    report: bool = True
    num_cpus: int | None = None
    storage: str | None = None   # shared storage root (study.storage): studies, checkpoints, asset cache
    verbose: int = 1
    hooks: Any = None            # a test's trainables.train.hooks.TrainHooks (faults in chosen trials); None
    # called with a one-line status message (the CLI prints them)
    say: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))


@dataclass(frozen=True)
class StudyContext:
    """Everything a running study's Tuner and its ending need, fixed once the parent run exists."""

    space: SearchSpace           # base paths absolute
    paths: StudyPaths
    assets: AssetsRecord
    opts: StudyOptions
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage_url: str             # the Optuna RDB storage
    datasets: list[dict[str, Any]] = field(default_factory=list)   # study.track.dataset_inputs records
