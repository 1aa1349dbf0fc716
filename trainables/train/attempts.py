"""What happens to a trial when a worker fails or dies: one kd-study line, and no retry that cannot help.

Ray Train decides, in its controller, whether a failed attempt is retried (`FailureConfig.max_failures`)
and says so only in its own logs; the console saw a raw `(raylet) A worker died…` line in colour, naming
no trial (issue 27, item 9). `AttemptPolicy` is Ray Train's default failure policy plus two things:
- every decision prints one line, `kd-study: trial NAME: worker rank R died (…); retried from its
  checkpoint at step S (attempt 2 of 3)` or `…; the trial failed`, which study.console.logs shows on the
  console (a worker output line that starts with `kd-study: `);
- a full disk (trainables.disk) is not retried: the retry would fail writing the same checkpoint.
Ray's private failure-policy classes are used (Ray is capped at the tested release; tests/test_faults.py
checks the names this relies on).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision

from trainables.disk import is_disk_full

LINE_PREFIX = "kd-study: "   # a Ray process's output line with it is meant for the console (study.console.logs)


class AttemptPolicy(DefaultFailurePolicy):
    """Ray Train's default failure policy, saying each decision in one line and never retrying a full disk."""

    def __init__(self, failure_config, name: str, report_log: str):
        super().__init__(failure_config)
        self.name = name
        self.report_log = report_log
        self.attempt = 1

    def make_decision(self, training_failed_error) -> Any:
        full = is_disk_full(training_failed_error)
        decision = FailureDecision.RAISE if full else super().make_decision(training_failed_error)
        if decision == FailureDecision.NOOP:
            return decision
        retried = decision == FailureDecision.RETRY
        print(attempt_line(self.name, training_failed_error, retried=retried, attempt=self.attempt,
                           attempts=self.failure_config.max_failures + 1, step=checkpoint_step(self.report_log),
                           disk_full=full), flush=True)
        self.attempt += retried
        return decision


def attempt_line(name: str, error: BaseException, *, retried: bool, attempt: int, attempts: int,
                 step: int | None, disk_full: bool = False) -> str:
    """`kd-study: trial NAME: <what failed>; <what happens now>` — one line."""
    what = describe(error)
    if retried:
        where = f"its checkpoint at step {step}" if step is not None else "the start (no checkpoint yet)"
        then = f"retried from {where} (attempt {attempt + 1} of {attempts})"
    elif disk_full:
        then = "the trial failed (not retried: free space, then resume)"
    else:
        then = f"the trial failed (attempt {attempt} of {attempts}, no retries left)"
    return f"{LINE_PREFIX}trial {name}: {what}; {then}"


def describe(error: BaseException) -> str:
    """What failed: each failed worker rank and why, short (a death says so; an exception its first line)."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        return _short(error)
    ranks: dict[str, list[int]] = {}   # ranks that failed alike, said once
    for rank, failure in sorted(failures.items()):
        ranks.setdefault(_short(failure), []).append(rank)
    parts = [f"worker rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))} {what}" for what, r in ranks.items()]
    return ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")


def _short(error: BaseException) -> str:
    from ray.exceptions import ActorDiedError, RayActorError

    if isinstance(error, (ActorDiedError, RayActorError)):
        return "died (its process was killed or exited)"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__   # Ray appends the worker's own exception last
    return f"failed: {text[:300]}"


def checkpoint_step(report_log: str) -> int | None:
    """The step of the last checkpoint in the run's report log (trainables.train.trial.TrainLogCallback), or None."""
    step = None
    try:
        lines = Path(report_log).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("checkpoint_path") and "step" in record:
            step = int(record["step"])
    return step
