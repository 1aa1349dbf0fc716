"""What every bench script sets before it imports kd-study, and the checkout its tables name.

Scripts run as `python bench/NAME.py`, so this folder is on `sys.path` and they `import _env` first:
models load offline, tokenisers stay single-threaded under Ray, Ray sends no usage stats and a slow
2-core machine gets time to start a worker group.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
}
for _name, _value in ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def commit() -> str:
    """The checkout's short commit, `-dirty` when tracked files have uncommitted changes."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("-dirty" if git("status", "--porcelain", "-uno") else "")
