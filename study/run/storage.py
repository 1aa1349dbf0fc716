"""One storage root for a study on a cluster, and the check that every Ray node sees it.

`--storage PATH` (or `study.storage` in a space) is a folder every node mounts at the same path
(NFS, a parallel file system). It holds everything a node other than the driver's reads or writes:

    <storage>/kd-studies/<NAME>/   the study folder: Tune's experiment, trials' checkpoints (Ray's storage path)
    <storage>/.kd-cache/           the asset cache (`cache_dir`: pools, teacher scores, models)

Without it a study keeps today's local folders (`--root`, the config's `cache_dir`), which is right
on one machine. On a cluster a folder the driver wrote and a worker cannot see fails late and
obscurely, so before any asset or trial work one Ray task on every alive node reads the driver's
marker in each shared folder and writes its own back: a node that cannot is a one-line error
naming the node and the folder.

Only filesystem paths (or `file://` URIs) are supported: the study folder is read as a folder by
resume, reports and checkpoints alike.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import urlparse

from trainables.config import TrialConfig
from trainables.errors import BadInput

STUDIES_DIR = "kd-studies"
CACHE_DIR = ".kd-cache"
MARKER_DIR = ".kd-storage-check"


class StorageError(BadInput):
    """The storage root is not usable by every node (exit 2: fix the mount or the path); one line."""


def storage_root(value: str | None) -> Path | None:
    """The storage root named by `--storage` / `study.storage` (a path or a file:// URI), absolute; None if unset."""
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme == "file":
        value = parsed.path
    elif parsed.scheme and len(parsed.scheme) > 1:   # one letter: a Windows drive, a path
        raise StorageError(f"storage {value!r}: only a shared filesystem path (or file:// URI) is supported, "
                         f"not {parsed.scheme}://; mount it on every node and give its path")
    return Path(os.path.expanduser(value)).resolve()


def studies_root(storage: Path) -> Path:
    """Where the study folders live under a storage root."""
    return storage / STUDIES_DIR


def on_storage(space, opts):
    """`space` with its base's cache_dir / output_dir inside the storage root (`opts.storage`, else the
    space's `study.storage`), and `opts.root` defaulted to the root's studies folder; unchanged without one."""
    storage = storage_root(opts.storage or space.study.storage)
    if storage is None:
        return space
    opts.storage = str(storage)
    opts.root = opts.root or str(studies_root(storage))
    return dataclasses.replace(space, base=under_storage(space.base, storage))


def under_storage(cfg: TrialConfig, storage: Path) -> TrialConfig:
    """`cfg` with its relative `cache_dir` and `output_dir` placed under `storage`; an absolute one must be inside it.

    The driver makes these absolute and the workers read them wherever they run: outside the
    shared root a worker on another node would see an empty (or another) folder.
    """
    update = {}
    for key, default in (("cache_dir", CACHE_DIR), ("output_dir", None)):
        value = getattr(cfg, key)
        if not os.path.isabs(os.path.expanduser(value)):
            update[key] = str(storage / (default if default and value == TrialConfig.model_fields[key].default
                                         else value))
        elif not Path(os.path.expanduser(value)).resolve().is_relative_to(storage):
            raise StorageError(f"{key} {value} is outside the storage root {storage}: a Ray worker on another node "
                             f"would not see it; leave {key} relative or put it under the storage root")
    return cfg.model_copy(update=update)


def check_nodes_see(ray, folders: list[Path]) -> None:
    """Every alive Ray node reads the driver's marker in each of `folders` and writes its own beside it.

    One task per node, pinned to it (NodeAffinity, hard), taking no CPU so a busy node still runs
    it. A node that cannot see a folder stops the study: StudyError naming the node and the folder.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    markers = []
    for folder in folders:
        marker_dir = Path(folder) / MARKER_DIR / token
        marker_dir.mkdir(parents=True, exist_ok=True)
        (marker_dir / "driver").write_text(token)
        markers.append(str(marker_dir))

    def probe(marker_dirs: list[str], token: str, node_id: str) -> tuple[int, str] | None:
        """(index of the folder, what went wrong) for the first folder this node cannot use; None if it sees them all."""
        import pathlib

        for position, marker_dir in enumerate(marker_dirs):
            try:
                if (pathlib.Path(marker_dir) / "driver").read_text() != token:
                    return position, "the driver's marker there holds something else"
                (pathlib.Path(marker_dir) / node_id).write_text(token)
            except OSError as error:
                return position, f"the driver's marker: {error.strerror or error}"
        return None

    task = ray.remote(num_cpus=0, max_retries=0)(probe)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    try:
        pending = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(markers, token, node["NodeID"]) for node in nodes]
        for node, problem in zip(nodes, ray.get(pending, timeout=300)):
            if problem is None:
                unseen = [i for i, m in enumerate(markers) if not (Path(m) / node["NodeID"]).is_file()]
                problem = (unseen[0], "the driver cannot see the marker the node wrote") if unseen else None
            if problem is not None:
                position, reason = problem
                raise StorageError(f"Ray node {node_label(node)} cannot see the shared storage {folders[position]} "
                                   f"({reason}); give --storage a folder every node mounts at the same path")
    finally:
        for folder in folders:
            shutil.rmtree(Path(folder) / MARKER_DIR / token, ignore_errors=True)


def check_study_storage(ray, remote: bool, folders: list[Path]) -> None:
    """`check_nodes_see` on a joined cluster or one of several nodes; a local one-node Ray shares the driver's disk."""
    if not remote and sum(1 for node in ray.nodes() if node.get("Alive")) <= 1:
        return
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
    check_nodes_see(ray, folders)


def node_label(node: dict) -> str:
    """A Ray node as a person finds it: its id (short), address and its own custom resources."""
    own = sorted(k for k in node.get("Resources", {}) if k not in ("CPU", "GPU", "memory", "object_store_memory")
                 and not k.startswith(("node:", "accelerator_type:")))
    extra = f", resources {', '.join(own)}" if own else ""
    return f"{node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')}{extra})"
