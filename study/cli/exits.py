"""How a `kd-study` command ends: its exit codes, the one error line of an interrupted or failed study,
the command that continues it, and SIGTERM handled as Ctrl-C.

Apart from the verbs because every verb ends through these, and the exit codes are a contract with
scripts and cluster schedulers: 2 bad input, 1 failure, 130 Ctrl-C, 143 SIGTERM.
"""
from __future__ import annotations

import argparse
import shlex
import signal
from pathlib import Path

from study.console import console
from study.paths import LOGS_DIR_NAME

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
EXIT_TERMINATED = 128 + signal.SIGTERM   # 143: stopped by SIGTERM, like Ctrl-C otherwise


def finish(outcome, metrics: list[str], args: argparse.Namespace) -> int:
    """Print the outcome; an interrupted study exits 130 (143 after SIGTERM), one with failed trials 1.

    Finished trials are kept either way; the one error line gives the command that continues the study.
    """
    from study.run.outcome import print_outcome

    print_outcome(outcome, metrics)
    resume = command(args, "resume", outcome.name)
    if outcome.interrupted:
        done = len(outcome.finished) + len(outcome.pruned)
        console.error(f"study {outcome.name} {interrupted(args)} with {done} of {outcome.num_samples} trials done; "
                      f"continue it with `{resume}`")
        return EXIT_INTERRUPTED
    if outcome.errored:
        trial_id, reason = outcome.errored[0]
        more = f" (and {len(outcome.errored) - 1} more)" if len(outcome.errored) > 1 else ""
        logs = "" if getattr(args, "verbose", False) else \
            f"; tracebacks in {shown(Path(outcome.dir) / LOGS_DIR_NAME)}/"
        console.error(f"{len(outcome.errored)} of {outcome.num_samples} trials failed; trial {trial_id}: "
                      f"{reason}{more}; {len(outcome.finished)} finished trials are kept (retry the failed ones: "
                      f"{resume}){logs}")
        return EXIT_FAILED
    return 0


def command(args: argparse.Namespace, *words: str) -> str:
    """`kd-study WORDS...` with the global options this run was given (so it finds the same study and store)."""
    from study.track.tracking import redact

    given = (("--root", "root"), ("--ray-address", "ray_address"), ("--num-cpus", "num_cpus"),
             # resume reads the study's own store from its state
             *((("--tracking-uri", "tracking_uri"),) if words[0] != "resume" else ()))
    options = [part for flag, key in given if getattr(args, key, None) is not None
               for part in (flag, str(getattr(args, key)))]
    return redact(shlex.join(["kd-study", *words, *options]))


def interrupted(args: argparse.Namespace) -> str:
    return "stopped by SIGTERM" if getattr(args, "sigterm", None) and args.sigterm.received else "interrupted"


class Sigterm:
    """SIGTERM (what a cluster scheduler sends) handled as Ctrl-C: the SIGINT handler of the moment runs.

    That is Tune's graceful stop during a study's `fit` (the trials as they are, the experiment
    snapshotted), Ray Train's abort during `kd-study train`, else a KeyboardInterrupt. Remembered, so
    the exit status says which signal it was (143).
    """

    def __init__(self):
        self.received = False

    def __call__(self, signum, frame) -> None:
        self.received = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:   # SIG_IGN (a background job) or SIG_DFL: stop all the same
            raise KeyboardInterrupt


def cause(error: BaseException) -> str:
    """The error's one line: its cause as the tracking layer words it, else its type."""
    from study.track.tracking import cause_line

    return cause_line(str(error)) or type(error).__name__


def shown(path: Path) -> str:
    """`path` relative to the working folder when it is below it (shorter lines), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
