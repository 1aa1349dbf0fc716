"""A full disk, said in one line: the write that failed, its path and the space left; and a check before work.

Two ways a full file system shows up: `OSError` with `ENOSPC` (or `EDQUOT`) from a plain write, and
torch's `RuntimeError: [enforce fail at inline_container.cc:…] . unexpected pos 17280 vs 17174` (or
"PytorchStreamWriter failed writing file") when `torch.save`'s zip writer is cut short. `writing(path)`
turns either into `DiskFull` naming the path; a torch error on a disk with room is left as it is.

`check_free_space` runs before the assets and before the trials (study.run.assets, study.run.runner):
free bytes against `asset_bytes` and `checkpoint_bytes` — estimates from the config (pool sizes, the
student's parameter count), so a study that cannot fit stops in seconds instead of at its first
checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trainables.errors import DiskFull

if TYPE_CHECKING:
    from trainables.config import TrialConfig

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# torch's zip writer when a write comes up short (a full disk is the usual cause; checked against free space)
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed")
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")   # the last: sqlite
_ALMOST_FULL = 1 << 20     # under 1 MiB free: a short write is a full disk
_MARGIN = 64 << 20         # room kept beyond the estimates (logs, Tune's snapshots, lease files)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system of `path` (its nearest existing folder)."""
    folder = Path(path).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def is_disk_full(error: BaseException, path: str | Path | None = None) -> bool:
    """Whether `error` (or an error it wraps) is a write that failed for lack of space."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return True
        text = str(error)
        if any(marker in text.lower() for marker in _FULL_TEXTS):
            return True
        for failure in (getattr(error, "worker_failures", None) or {}).values():   # Ray Train's WorkerGroupError
            if is_disk_full(failure, path):
                return True
        if isinstance(error, RuntimeError) and any(marker in text for marker in _TORCH_SHORT_WRITE):
            return path is None or free_bytes(path) < _ALMOST_FULL
        error = error.__cause__ or error.__context__
    return False


def disk_full(path: str | Path, error: BaseException | None = None) -> DiskFull:
    """The one line for a write to `path` that found no space (the path the error names, if any)."""
    named = getattr(error, "filename", None)
    if named is None and error is not None:   # a wrapped error (Ray's) keeps the path only in its text
        found = (re.search(r"No space left on device: '([^']+)'", str(error))
                 or re.search(r"no space left on device writing (\S+) \(", str(error)))   # a worker's DiskFull
        named = found.group(1) if found else None
    named = named or path
    return DiskFull(f"no space left on device writing {named} ({size_text(free_bytes(named))} free there); "
                    "free some space and run the command again (a study continues with `kd-study resume NAME`)")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Writes to `path` inside: a full disk becomes `DiskFull` naming it; other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as error:
        if is_disk_full(error, path):
            raise disk_full(path, error) from None
        raise


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """`DiskFull` (one line) when `folder`'s file system has less than `needed` bytes (+ a margin) free."""
    free = free_bytes(folder)
    if free < needed + _MARGIN:
        raise DiskFull(f"not enough free space in {folder}: {size_text(free)} free, about "
                       f"{size_text(needed + _MARGIN)} needed for {what}; free some space or choose another folder")


# ---- expected sizes ----------------------------------------------------------------------------------
def asset_bytes(cfg: TrialConfig, n_queries: int) -> int:
    """Pools and teacher scores of `n_queries` training queries (ids, scores, a first stage), generously."""
    depth = max(cfg.data.pool_depth, cfg.data.first_stage_depth or 0) + cfg.data.random_additions
    return n_queries * depth * 64 + (4 << 20)


def checkpoint_bytes(cfg: TrialConfig) -> int:
    """One trial's checkpoints on disk: 2 training states kept (weights + Adam's two moments) + the final student."""
    params = student_parameters(cfg)
    return 0 if params is None else params * 4 * (2 * 3 + 1 + 3)   # + one staged copy while it is written


def student_parameters(cfg: TrialConfig) -> int | None:
    """The student's parameter count from its config.json (BERT-like encoders), without loading weights."""
    from trainables.models.encoders import TINY_BERT_CONFIG, resolve_model_path

    try:
        if cfg.student.model == "tiny:bert":
            config = {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, **TINY_BERT_CONFIG}
        else:
            config = json.loads(Path(resolve_model_path(cfg.student.model, cfg.cache_dir), "config.json").read_text())
        h, inner = int(config["hidden_size"]), int(config["intermediate_size"])
        layers = int(config["num_hidden_layers"])
        if cfg.student.num_layers:
            layers = min(layers, int(cfg.student.num_layers))
        embeddings = (int(config["vocab_size"]) + int(config.get("max_position_embeddings", 512))
                      + int(config.get("type_vocab_size", 2))) * h
        per_layer = 4 * h * h + 2 * h * inner + 9 * h + inner
        return embeddings + layers * per_layer
    except (OSError, KeyError, TypeError, ValueError):
        return None
