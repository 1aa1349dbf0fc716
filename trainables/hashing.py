"""sha256 of a file's bytes, streamed: the one content hash behind cache keys, sidecars and data fingerprints;
and the quick digest (size + ends) that a cache file's sidecar carries for cheap checks at load time."""
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


QUICK_SPAN = 1 << 16


def quick_digest(path: str | Path) -> str:
    """Hex sha256 of a file's size, first and last 64 KiB: the load-time check of a cache file whose full
    hash was taken when it was written (a `.npz`'s zip directory, which ends the file, lists every member's
    size and CRC-32). Milliseconds at any size, where the full hash reads GBs on every worker's load."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        digest.update(str(size).encode())
        handle.seek(0)
        digest.update(handle.read(QUICK_SPAN))
        handle.seek(max(0, size - QUICK_SPAN))
        digest.update(handle.read(QUICK_SPAN))
    return digest.hexdigest()
