"""Faults a test injects into a training run, as one explicit object: production passes none.

`TrainHooks` travels with the run: `run_trial(..., hooks=)` / `build_trainer(..., hooks=)` put it in the loop
config that Ray pickles to every worker, and a study passes it from `StudyOptions.hooks` to each trial
(`only` picks the trials it applies to, by their config values). Without hooks the loop runs as always.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trainables.config import get_dotted


@dataclass(frozen=True)
class TrainHooks:
    fail_once_at_step: int | None = None   # before this step (1-based) every worker raises once...
    fail_marker: str | None = None         # ...unless this file exists (rank 0 creates it, so the retry passes)
    nan_loss_at_step: int | None = None    # this step's teacher scores are NaN, so its loss is (every attempt)
    only: Mapping[str, Any] = field(default_factory=dict)   # dotted config key → value: the trials they apply to

    def for_trial(self, cfg: Any) -> TrainHooks | None:
        """These hooks when `cfg` (a TrialConfig) matches `only`, else None."""
        raw = cfg.model_dump(mode="json")
        for dotted, wanted in self.only.items():
            try:
                value = get_dotted(raw, dotted)
            except (KeyError, TypeError):
                return None
            if value != wanted:
                return None
        return self

    def nan_loss(self, step: int) -> bool:
        return self.nan_loss_at_step == step

    def before_step(self, step: int, rank: int, world: int, device: Any = "cpu") -> None:
        """At `fail_once_at_step` every rank raises once; all read the marker before rank 0 creates it."""
        if self.fail_once_at_step != step or self.fail_marker is None:
            return
        fired = os.path.exists(self.fail_marker)
        if world > 1:
            from trainables.train.ddp import barrier

            barrier(world, device)
        if fired:
            return
        if rank == 0:
            Path(self.fail_marker).parent.mkdir(parents=True, exist_ok=True)
            Path(self.fail_marker).touch()
        raise RuntimeError(f"fault injected before step {step} (TrainHooks.fail_once_at_step)")
