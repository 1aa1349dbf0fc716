"""The one error hierarchy of kd-study: what the CLI reports as bad input, and what as a failure.

Every error kd-study raises on purpose derives from `KdStudyError` and carries its exit status:
- `BadInput` (exit 2): the user can fix it (a config key, a data file, a study name, a store URI);
  its message is one line that names the file, key or value.
- `Failure` (exit 1): the input was fine but the work could not be done (a cluster that does not
  answer, trials that crashed); finished trials are kept.
Anything else that escapes (a `ValueError` from numpy, a `KeyError` in our code) is a bug: the CLI
prints its traceback and exits 1, never "bad input". `BadInput` also is a `ValueError` and
`Failure` a `RuntimeError`, so callers that catch the built-in kinds keep working.
"""
from __future__ import annotations


class KdStudyError(Exception):
    """Base of every error kd-study raises on purpose; `exit_code` is the CLI's exit status."""

    exit_code = 1


class BadInput(KdStudyError, ValueError):
    """An input the user can fix; the message is one line naming the file, key or value."""

    exit_code = 2


class Failure(KdStudyError, RuntimeError):
    """Valid input, but the work failed (unreachable service, crashed trials); one line."""

    exit_code = 1


class Diverged(Failure):
    """Training met a non-finite loss or gradient norm: the trial stops before the optimizer step.

    Finishing would leave NaN weights and a bad-but-normal-looking result; stopping makes the trial
    FAILED in Ray, MLflow and Optuna with the step and the cause in one line.
    """


class ConfigError(BadInput):
    """A config file or dict that does not validate; the message names the file and the key."""


class CheckpointError(BadInput):
    """A checkpoint this version cannot read (an older format, or objects a safe load refuses)."""


class DiskFull(BadInput):
    """A write failed because its file system is full (`ENOSPC`, or torch's "unexpected pos" of a cut-short file).

    Exit 2 like bad input: the user frees space (or points `--root`/`cache_dir` elsewhere) and runs
    `kd-study resume`; retrying the write before that only fails again, so Ray Train does not retry it
    (trainables.train.trial). The message names the path and the free space left.
    """
