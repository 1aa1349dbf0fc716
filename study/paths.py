"""Where a study's files live: `kd-studies/<NAME>/` (the root is configurable with --root).

    space.yaml            the space file as given (verbatim copy)
    space.resolved.yaml   the space with its base config inline and absolute paths: what `resume` reads
    study.json            study state: tracking URI, MLflow parent run, Optuna storage, status (mode 0600:
                          the URIs may hold passwords, which resume needs)
    assets.json           shared asset keys, paths and build statistics
    optuna.db             Optuna storage (sqlite) unless --optuna-storage names another RDB
    tune/                 Ray Tune experiment (Tuner.restore reads it)
    trials/<trial_id>/    each trial's Ray Train run: checkpoints, its train log and config (trainables.outputs)
    logs/                 driver.log (Ray, Tune, MLflow, transformers, faiss; tracebacks) and workers.log
                          (what the Ray processes printed): study.console.logs, unless --verbose
    report/               tables and figures (study.report)
    best.yaml             best trial's full config (study.report.export): `kd-study train best.yaml`
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.config import check_name

DEFAULT_ROOT = "kd-studies"
TUNE_DIR_NAME = "tune"
LOGS_DIR_NAME = "logs"   # also beside a `kd-study train` run
STATE_MODE = 0o600   # study.json holds the store URIs, passwords included


@dataclass(frozen=True)
class StudyPaths:
    root: Path
    name: str

    @classmethod
    def of(cls, name: str, root: str | os.PathLike | None = None) -> "StudyPaths":
        """The folders of study `name` under `root`; a name that is not one folder name (`../x`) is a ConfigError."""
        return cls(Path(root or DEFAULT_ROOT).expanduser().resolve(), check_name(name, "study name"))

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def space_copy(self) -> Path:
        return self.dir / "space.yaml"

    @property
    def space_resolved(self) -> Path:
        return self.dir / "space.resolved.yaml"

    @property
    def state(self) -> Path:
        return self.dir / "study.json"

    @property
    def assets(self) -> Path:
        return self.dir / "assets.json"

    @property
    def optuna_db(self) -> Path:
        return self.dir / "optuna.db"

    @property
    def tune_dir(self) -> Path:
        return self.dir / TUNE_DIR_NAME

    @property
    def trials_dir(self) -> Path:
        return self.dir / "trials"

    @property
    def logs_dir(self) -> Path:
        return self.dir / LOGS_DIR_NAME

    @property
    def report_dir(self) -> Path:
        return self.dir / "report"

    @property
    def best(self) -> Path:
        return self.dir / "best.yaml"

    def exists(self) -> bool:
        return self.state.is_file()

    def read_state(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def write_state(self, state: dict[str, Any]) -> None:
        """Atomic write, so a killed driver never leaves a half-written study.json; readable by its owner only.

        The state keeps the real tracking and Optuna storage URIs, passwords included (resume needs
        them); everything that shows a URI shows it through `study.track.tracking.redact`.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_MODE)
        os.fchmod(fd, STATE_MODE)   # also when a stale temp file had a wider mode
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state)

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.read_state() if self.exists() else {}
        state.update(changes)
        self.write_state(state)
        return state
