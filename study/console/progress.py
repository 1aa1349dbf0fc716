"""Per-trial progress lines for a batch log: step/total, loss, queries/s, the latest evaluation, ETA.

Cluster jobs write to files, where the live status line (a terminal's) is not drawn. There each
running trial gets a plain line at most once per `trainables.progress.progress_interval()` seconds
(`KD_PROGRESS_INTERVAL_S`, default 60):

    kd-study: trial 1a2b_00001 step 120/400 (30%), loss 0.4123, 85 queries/s, dev_mrr_at_10 0.2345 at step 100, ETA 3m20s

The reports come from Tune's results on the driver for `kd-study run` (study.run.tuner.TrialLines →
study.console.console.StudyView) and, for `kd-study train`, from the run's train_log.jsonl (`follow_train_log`:
a driver thread; Ray Train hands its reports to its controller actor, not to the driver). ETA: the
steps per second between the first report seen and now, times the steps left (evaluations included).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from trainables.outputs import FINAL_LOSS, QUERIES_PER_SECOND, TRAIN_LOSS
from trainables.progress import duration, progress_interval


class TrialProgress:
    """Which trial is due a progress line, and its text; one instance for all the trials of a command."""

    def __init__(self, eval_keys: Sequence[str], interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.eval_keys = list(dict.fromkeys(eval_keys))   # the first one a report carries is shown
        self.interval = progress_interval() if interval is None else interval
        self.clock = clock
        self._trials: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:   # Tune pickles the callback that holds this
        return {**self.__dict__, "clock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, clock=time.monotonic)

    def started(self, trial: str, total_steps: int | None) -> None:
        self._trials[trial] = {"total": total_steps, "last_line": self.clock(), "first": None, "eval": None}

    def ended(self, trial: str) -> None:
        self._trials.pop(trial, None)

    def result(self, trial: str, metrics: dict[str, Any]) -> str | None:
        """Record one report of `trial`; its progress line (without the `kd-study: ` prefix) when one is due."""
        now = self.clock()
        state = self._trials.get(trial)
        if state is None:   # a trial restored by `resume`: no start seen in this session
            self.started(trial, None)
            state = self._trials[trial]
        step = metrics.get("step")
        if not isinstance(step, (int, float)) or FINAL_LOSS in metrics:   # the final report: its end line follows
            return None
        if state["first"] is None:
            state["first"] = (now, step)
        for key in self.eval_keys:
            if isinstance(metrics.get(key), (int, float)):
                state["eval"] = (key, float(metrics[key]), step)
                break
        if now - state["last_line"] < self.interval:
            return None
        state["last_line"] = now
        return self._line(trial, state, metrics, step, now)

    def _line(self, trial: str, state: dict[str, Any], metrics: dict[str, Any], step: float, now: float) -> str:
        total = state["total"]
        parts = [f"trial {trial} step {int(step)}" + (f"/{total} ({100 * step / total:.0f}%)" if total else "")]
        if isinstance(metrics.get(TRAIN_LOSS), (int, float)):
            parts.append(f"loss {metrics[TRAIN_LOSS]:.4g}")
        if isinstance(metrics.get(QUERIES_PER_SECOND), (int, float)):
            parts.append(f"{metrics[QUERIES_PER_SECOND]:.3g} queries/s")
        if state["eval"] is not None:
            key, value, at = state["eval"]
            parts.append(f"{key} {value:.4f} at step {int(at)}")
        since, first_step = state["first"]
        if total and step > first_step and now > since:
            parts.append(f"ETA {duration((total - step) * (now - since) / (step - first_step))}")
        return ", ".join(parts)


@contextlib.contextmanager
def follow_train_log(path: Path, trial: str, progress: TrialProgress, total_steps: int | None,
                     say: Callable[[str], None], poll_s: float = 1.0) -> Iterator[None]:
    """While the block runs: every report appended to `path` (a run's train_log.jsonl) goes to `progress`,
    whose due lines go to `say`. Reports already there (an earlier attempt's) are skipped."""
    path = Path(path)
    offset = path.stat().st_size if path.is_file() else 0
    stop = threading.Event()
    progress.started(trial, total_steps)

    def read_new() -> None:
        nonlocal offset
        if not path.is_file():
            return
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]   # a line still being written waits for the next poll
        offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            text = progress.result(trial, record) if isinstance(record, dict) else None
            if text:
                say(f"kd-study: {text}")

    def follow() -> None:
        while not stop.wait(poll_s):
            read_new()

    thread = threading.Thread(target=follow, name="kd-study-train-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        progress.ended(trial)


def train_progress(cfg, n_train_queries: int | None, enabled: bool = True) -> contextlib.AbstractContextManager:
    """`kd-study train`: progress lines of its one run on stdout while the block runs (nothing when not `enabled`)."""
    if not enabled:
        return contextlib.nullcontext()
    from trainables.train.epoch_plan import total_steps
    from trainables.outputs import TRAIN_LOG, curve_metric_key, eval_metric_keys

    steps = total_steps(cfg, int(n_train_queries)) if n_train_queries else None
    keys = [k for k in (curve_metric_key(cfg.eval), *eval_metric_keys(cfg.eval)) if k]
    return follow_train_log(Path(cfg.output_dir).resolve() / cfg.name / TRAIN_LOG, cfg.name, TrialProgress(keys),
                            steps, lambda line: print(line, flush=True))
