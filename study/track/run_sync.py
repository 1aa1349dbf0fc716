"""A trial's MLflow run kept whole: its history back-filled from the trial folder, each step once.

The trial folder's report log (`trials/<id>/train_log.jsonl`, written by the Ray Train controller
for every report of every attempt: trainables.train.trial.TrainLogCallback) is the record; the MLflow run
is its copy. Two ways the copy falls behind, both mended from the log by `backfill`:
- a resumed trial: the reports of the steps before the interruption that the killed driver had not
  yet logged (issue 27, item 8);
- a tracking server that went away: while it does not answer, trials keep training and nothing is
  lost (the log keeps it); once it answers again (`ServerLink`) each waiting run gets the missing
  steps, and its start or end if those were missed.
A retried step (a worker restarted from its checkpoint re-reports the steps after it) is logged once:
the first value, which a deterministic retry repeats.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from study.track.tracking import numeric_metrics, redact

PROBE_S = 5.0          # while the server is away, ask it again this often (a GET of /health)
WAIT_AT_END_S = 300.0  # at the end of a study, how long to wait for it before stopping in one line
# MLflow retries a refused request 7 times with exponential backoff (minutes); here a few seconds
# suffice, since a missed write is made good from the trial folder.
_HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

Pair = tuple[str, int]   # (metric key, step)


def report_log_metrics(records: Iterable[dict[str, Any]]) -> dict[Pair, float]:
    """The metrics of a trial's reports by (key, step), first value kept, as `log_trial_result` logs them."""
    out: dict[Pair, float] = {}
    for record in records:
        step = int(record.get("step", 0) or 0)
        for key, value in numeric_metrics(record).items():
            if not math.isinf(value):
                out.setdefault((key[:250], step), value)
    return out


def read_report_log(path: str | Path) -> list[dict[str, Any]]:
    """Every report in `path` (a line cut short by a kill is skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def logged_pairs(mlflow_client, run_id: str) -> set[Pair]:
    """The (key, step) pairs a run already holds (one history request per metric key)."""
    keys = mlflow_client.get_run(run_id).data.metrics
    return {(key, m.step) for key in keys for m in mlflow_client.get_metric_history(run_id, key)}


def backfill(mlflow_client, run_id: str, report_log: str | Path, logged: set[Pair]) -> int:
    """Log the report log's (key, step) pairs the run lacks; `logged` is updated. How many were sent."""
    from mlflow.entities import Metric

    missing = {pair: value for pair, value in report_log_metrics(read_report_log(report_log)).items()
               if pair not in logged}
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for (key, step), value in sorted(missing.items(), key=lambda kv: kv[0][1])]
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + 1000])
    logged.update(missing)
    return len(metrics)


class ServerLink:
    """Whether the tracking server answers: an http(s) store can go away and come back; sqlite cannot.

    `lost(error)` after a failed MLflow call says whether the server is gone (the call's own errors,
    such as an invalid key, are not); `usable()` is True while it answers, and asks it again at most
    every PROBE_S while it does not. One line each way on the console.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.remote = uri.startswith(("http://", "https://"))
        self.down_since: float | None = None
        self._next_probe = 0.0
        if self.remote:
            for key, value in _HTTP_RETRIES.items():
                os.environ.setdefault(key, value)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def answers(self, timeout: float = 2.0) -> bool:
        import requests

        try:
            return requests.get(self.uri.rstrip("/") + "/health", timeout=timeout).ok
        except requests.RequestException:
            return False

    def lost(self, error: BaseException) -> bool:
        if not self.remote or self.answers():
            return False
        if self.down_since is None:
            self.down_since = time.monotonic()
            _say(f"MLflow server {redact(self.uri)} does not answer; trials keep training, their logs are kept in "
                 "their folders and sent when it is back")
        self._next_probe = time.monotonic() + PROBE_S
        return True

    def usable(self) -> bool:
        if self.down_since is None:
            return True
        if time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + PROBE_S
        if not self.answers():
            return False
        _say(f"MLflow server {redact(self.uri)} is back after {time.monotonic() - self.down_since:.0f} s; "
             "sending what the trials logged meanwhile")
        self.down_since = None
        return True

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the server to answer again (the end of a study with logs still to send)."""
        deadline = time.monotonic() + seconds
        while not self.usable():
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)
        return True


def _say(message: str) -> None:
    print(f"kd-study: {message}", file=sys.stderr, flush=True)
