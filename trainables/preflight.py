"""Everything a trial will touch, checked before any work starts: data sets, model specs, folders.

Run by `kd-study run` (on the space's base config, in `--dry-run` too) and `kd-study train` before
Ray starts, so a typo costs seconds, not a trial (on a sweep: every trial). Light: it loads the data
sets (streamed where they are large) but no model and no torch.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trainables.config import ConfigError, TrialConfig
from trainables.data.check import CheckedSet, check_datasets
from trainables.data.types import RetrievalData
from trainables.errors import BadInput
from trainables.models.specs import spec_kind


@dataclass
class Preflight:
    """What the checks found: the loaded training data (reuse it: it is not read twice) and one line per set."""

    train: RetrievalData
    sets: list[CheckedSet] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{s.role}: {s.ref.id} ({s.ref.split}) — {s.queries} queries with a positive"
                + (f", {s.docs} docs" if s.docs is not None else "") for s in self.sets]


def preflight(cfg: TrialConfig, *, source: str = "") -> Preflight:
    """One line (ConfigError, DataError or ModelError) on the first problem; else what was checked."""
    prefix = f"{source}: " if source else ""
    for key, spec in (("student.model", cfg.student.model), ("teacher.model", cfg.teacher.model)):
        try:
            spec_kind(spec)
        except BadInput as error:  # a ModelError: name the file and key
            raise type(error)(f"{prefix}{key}: {error}") from None
    for key, path in (("data.candidates_file", cfg.data.candidates_file), ("teacher.scores_file", cfg.teacher.scores_file)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{prefix}{key}: {path}: no such file")
    for key, folder in (("cache_dir", cfg.cache_dir), ("output_dir", cfg.output_dir)):
        check_writable(Path(folder), f"{prefix}{key}")
    train, sets = check_datasets(cfg, source=source)
    return Preflight(train, sets)


def check_writable(folder: Path, what: str) -> None:
    """`folder` exists or can be made, and a file can be written in it (nothing is left behind)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{what}: {folder} is not a folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: {folder} cannot be created or written ({existing} is not writable)")
    if folder.is_dir():
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise ConfigError(f"{what}: cannot write in {folder} ({error.strerror or error})") from None
