"""Where a command's study lives: its folder, its state, its tracking store, and --storage applied.

Apart from the verbs because run, resume, confirm, report and export all find a study the same way,
and report/export must read one without creating a folder or a store.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trainables.config import ConfigError


def apply_storage(args: argparse.Namespace, space=None) -> None:
    """--storage (else a space's `study.storage`): the studies live under it unless --root names a folder."""
    from study.run.storage import storage_root, studies_root

    if getattr(args, "storage", None) is None and space is not None and space.study.storage:
        args.storage = space.study.storage
    storage = storage_root(getattr(args, "storage", None))
    if storage is not None and getattr(args, "root", None) is None:
        args.root = str(studies_root(storage))


def study_dir(name: str, args: argparse.Namespace) -> Path:
    from study.paths import StudyPaths

    return StudyPaths.of(name, getattr(args, "root", None)).dir


def state_or_empty(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from study.paths import StudyPaths

    paths = StudyPaths.of(name, getattr(args, "root", None))
    return paths.read_state() if paths.exists() else {}


def tracking_uri(args: argparse.Namespace, state: dict[str, Any], *, create: bool = True) -> str:
    from study.track.tracking import check_tracking, resolve_tracking_uri

    uri = resolve_tracking_uri(getattr(args, "tracking_uri", None)) if getattr(args, "tracking_uri", None) \
        else state.get("tracking_uri") or resolve_tracking_uri(None)
    check_tracking(uri, create=create)
    return uri


def find_study(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(study state or {}, tracking URI) of a study to read (report, export); creates no folder and no store."""
    from study.track.tracking import NoStoreError, redact, resolve_tracking_uri

    state = state_or_empty(name, args)
    if state.get("status") in ("preparing", "running"):   # its driver may be gone: no run left RUNNING
        from study.paths import StudyPaths
        from study.track.stale import close_dead_driver

        close_dead_driver(StudyPaths.of(name, getattr(args, "root", None)), lambda line: print(line, file=sys.stderr))
        state = state_or_empty(name, args)
    try:
        return state, tracking_uri(args, state, create=False)
    except NoStoreError:
        if state:
            raise
        uri = resolve_tracking_uri(getattr(args, "tracking_uri", None))
        raise ConfigError(f"no study named {name!r}: not in {study_dir(name, args).parent}, and no MLflow store "
                          f"at {redact(uri)}") from None
