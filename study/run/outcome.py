"""What a study run ended with: each trial finished, pruned, errored or interrupted, and the best."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.console import console
from study import compat
from study.paths import StudyPaths
from study.space.schema import SearchSpace
from study.track.tracking import FINAL_METRIC_MARKER, trial_error_line


@dataclass
class StudyOutcome:
    name: str
    dir: Path
    num_samples: int
    finished: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    errored: list[tuple[str, str]] = field(default_factory=list)   # (trial_id, one-line cause)
    unfinished: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)       # per trial: id, status, params, metrics
    best: dict[str, Any] | None = None
    pareto: list[str] = field(default_factory=list)                # multi-objective: Pareto-optimal trial ids
    report_path: Path | None = None
    best_config_path: Path | None = None

    @property
    def interrupted(self) -> bool:
        return bool(self.unfinished) or (len(self.finished) + len(self.pruned) + len(self.errored)) < self.num_samples


def collect_outcome(space: SearchSpace, paths: StudyPaths, grid, storage_url: str) -> StudyOutcome:
    """The outcome of `Tuner.fit()`'s ResultGrid (None when the driver was interrupted), read with the Optuna study."""
    from study.report.best import best_position  # pandas: loaded once the trials are done
    from study.run.search import pareto_trial_ids, search_exhausted, trial_states

    outcome = StudyOutcome(space.name, paths.dir, space.num_trials)
    trials = compat.result_grid_trials(grid) if grid is not None else []
    if grid is not None and len(trials) < outcome.num_samples and search_exhausted(storage_url, space.name):
        outcome.num_samples = len(trials)   # every point the sampler finds has run: done, not interrupted
    optuna_states = trial_states(storage_url, space.name)
    for trial in trials:
        last = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": trial.status, **dict(trial.config),
               **{m: last.get(m) for m in space.metrics}}
        if trial.status == "ERROR":
            outcome.errored.append((trial.trial_id, trial_error_line(trial)))
            row["status"] = "ERROR"
        elif trial.status == "TERMINATED" and FINAL_METRIC_MARKER in last:
            outcome.finished.append(trial.trial_id)
            row["status"] = "FINISHED"
        elif trial.status == "TERMINATED" and optuna_states.get(trial.trial_id) == "PRUNED":
            outcome.pruned.append(trial.trial_id)
            row["status"] = "PRUNED"
        else:  # running or paused when the study was interrupted
            outcome.unfinished.append(trial.trial_id)
            row["status"] = "INTERRUPTED"
        outcome.rows.append(row)
    if len(space.metrics) > 1:
        outcome.pareto = pareto_trial_ids(storage_url, space.name)
    done = [r for r in outcome.rows if r["status"] == "FINISHED"]
    position = best_position([r.get(space.metrics[0]) for r in done], space.modes[0])
    outcome.best = done[position] if position is not None else None
    return outcome


def print_outcome(outcome: StudyOutcome, metrics: list[str]) -> None:
    """The trials table (searched params, then `metrics`), the best trial or Pareto front, and the files written."""
    if outcome.rows:
        params = sorted({k for row in outcome.rows for k in row} - {"trial_id", "status", *metrics})
        rows = []
        for row in outcome.rows:
            rows.append([row["trial_id"], row["status"], *[console.fmt(row.get(p)) for p in params],
                         *[console.fmt(row.get(m)) for m in metrics]])
        headers = [console.SHORT_NAMES.get(p, p) for p in params]
        console.table(f"study {outcome.name}", ["trial", "status", *headers, *metrics], rows)
    if outcome.best:
        print(f"best trial: {outcome.best['trial_id']} ({metrics[0]} = {outcome.best[metrics[0]]:.4f})")
    if outcome.pareto:
        print(f"Pareto front ({', '.join(metrics)}): {', '.join(outcome.pareto)}")
    if outcome.report_path:
        print(f"report: {outcome.report_path}")
    if outcome.best_config_path:
        print(f"best config: {outcome.best_config_path}  (kd-study train {outcome.best_config_path})")
    print(f"study folder: {outcome.dir}")
