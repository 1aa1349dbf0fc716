"""Open a text file that may be gzipped, decided by its first bytes (not its name): streamed, never read whole."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from trainables.data.types import DataError

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_binary(path: str | Path, what: str = "file") -> IO[bytes]:
    """`path` as a binary stream, decompressed on the fly when it is gzip; DataError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what}")
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def open_text(path: str | Path, what: str = "file") -> IO[str]:
    """`path` as a UTF-8 text stream, gunzipped on the fly when it is gzip."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what}")
    return gzip.open(path, "rt", encoding="utf-8") if is_gzip(path) else open(path, encoding="utf-8")


def base_suffix(path: str | Path) -> str:
    """The suffix that names the layout, `.gz` stripped: `scores.tsv.gz` → `.tsv`."""
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return Path(name).suffix
