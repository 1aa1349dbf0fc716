"""No run left RUNNING by a driver that is gone: the next `kd-study` command on the study closes them.

A driver closes its own runs on every way out it sees (study.run.runner: finished, interrupted, an
error). What it cannot see is its own SIGKILL, an OOM kill or a lost machine: its study.json still
says "preparing" or "running" and MLflow shows its runs RUNNING. The study folder's lease
(trainables.train.checkpoints.FolderLease, `lease.json`) tells a live driver from a dead one: absent,
stale, or held by a process of this host that is gone. `resume`, `report`, `export` and `run` call
`close_dead_driver` first: the parent and trial runs still RUNNING end KILLED with ENDED_BY_TAG
saying why, and study.json's status becomes "interrupted", so `kd-study resume` continues it.
"""
from __future__ import annotations

from typing import Callable

from study.track import tracking
from study.paths import StudyPaths
from study.track.tags import ENDED_BY_TAG, STATE_INTERRUPTED, STATE_TAG

LIVE_STATES = ("preparing", "running")   # study.json statuses a driver writes while it works


def close_dead_driver(paths: StudyPaths, say: Callable[[str], None] | None = None) -> str | None:
    """Close the runs of a study whose driver died without closing them; the reason, or None (nothing to do)."""
    from trainables.train.checkpoints import holder_text, lease_is_live, read_lease

    if not paths.exists():
        return None
    state = paths.read_state()
    if state.get("status") not in LIVE_STATES:
        return None
    held = read_lease(paths.dir)
    if held is not None and lease_is_live(held):
        return None                      # its driver runs: its runs are its own
    reason = ("its driver ended without closing the study"
              + (f" ({holder_text(held)})" if held else " (no lease left)"))
    uri, parent = state.get("tracking_uri"), state.get("parent_run_id")
    closed = 0
    if uri and parent:
        try:
            closed = close_runs(uri, parent, "KILLED", reason)
        except Exception as error:  # noqa: BLE001 - a store that does not answer: the next command tries again
            if say is not None:
                say(f"kd-study: study {paths.name}: {reason}, but its MLflow runs could not be closed "
                    f"({tracking.cause_line(str(error))}); the next command tries again")
            return None
    paths.update_state(status="interrupted", ended_by=reason)
    if say is not None:
        say(f"kd-study: study {paths.name}: {reason}; closed {closed} MLflow run(s) left RUNNING as KILLED "
            "and marked the study interrupted")
    return reason


def close_runs(uri: str, parent_run_id: str, status: str, reason: str) -> int:
    """The parent run and its trial runs still RUNNING, ended as `status` with `reason` (ENDED_BY_TAG); how many."""
    mlflow_client = tracking.client(uri)
    closed = tracking.end_open_trial_runs(uri, parent_run_id, status, reason=reason)
    parent = mlflow_client.get_run(parent_run_id)
    if parent.info.status == "RUNNING":
        mlflow_client.set_tag(parent_run_id, STATE_TAG, STATE_INTERRUPTED if status == "KILLED" else "failed")
        mlflow_client.set_tag(parent_run_id, ENDED_BY_TAG, reason[:5000])
        mlflow_client.set_terminated(parent_run_id, status=status)
        closed += 1
    return closed


def close_on_error(paths: StudyPaths, uri: str, parent_run_id: str, error: BaseException,
                   say: Callable[[str], None]) -> BaseException:
    """The driver is leaving on `error`: no run stays RUNNING, study.json says how; returns the error to raise.

    An interrupt ends the runs KILLED ("interrupted": `resume` continues); anything else (a bug, a
    full disk, a store error after training) FAILED with its cause, state "failed". If the store
    cannot be reached the state stays as it was: the lease the driver releases on its way out marks
    it dead, and the next command closes them (`close_dead_driver`). A full disk met outside the
    checkpoint writers (Tune's snapshot, a log) becomes the one-line `DiskFull`.
    """
    from trainables.disk import disk_full, is_disk_full
    from trainables.errors import DiskFull

    interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
    status = "KILLED" if interrupted else "FAILED"
    cause = tracking.cause_line(str(error)) or type(error).__name__
    reason = "interrupted" if interrupted else f"the driver stopped on an error: {cause}"
    try:
        close_runs(uri, parent_run_id, status, reason)
    except Exception as close_error:  # noqa: BLE001 - the original error is the one to report
        say(f"kd-study: could not close the study's MLflow runs ({tracking.cause_line(str(close_error))}); "
            "the next kd-study command on this study closes them")
    else:
        try:
            paths.update_state(status="interrupted" if interrupted else "failed", ended_by=reason)
        except OSError:   # a full disk: the state says "running" until the next command (close_dead_driver)
            pass
    if not interrupted and not isinstance(error, DiskFull) and is_disk_full(error):
        return disk_full(getattr(error, "filename", None) or paths.dir, error)
    return error
