"""sha256 of a file's bytes, streamed: the one content hash behind cache keys, sidecars and data fingerprints."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file at `path`, read in 4 MiB blocks (no whole-file copy in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
