"""Open a text file that may be gzipped, decided by its first bytes (not its name): streamed, never read whole."""
from __future__ import annotations

import gzip
from pathlib import Path
import json
from typing import IO, Any, Iterator

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


def text_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """(line number, line) of `path` as UTF-8, gunzipped on the fly when it is gzip.

    A line with bytes that are not UTF-8 raises DataError naming `file:line` (not a UnicodeDecodeError
    traceback from deep inside a loader): it is the user's file.
    """
    with open_binary(path, what) as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, utf8_line(path, number, raw)


def utf8_line(path: str | Path, number: int, raw: bytes) -> str:
    """Line `number` of `path` decoded; DataError naming `file:line` and the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                        f"{error.start + 1}); save the file as UTF-8") from None


def base_suffix(path: str | Path) -> str:
    """The suffix that names the layout, `.gz` stripped: `scores.tsv.gz` → `.tsv`."""
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return Path(name).suffix


def whitespace_rows(path: str | Path, what: str, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line of a whitespace-separated file with `layout`'s field count.

    `layout` names the columns ("qid pid score"); a line with another field count raises
    DataError("<file>:<line>: expected N fields '<layout>', got M: ...").
    """
    width = len(layout.split())
    for number, line in text_lines(path, what):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise DataError(f"{path}:{number}: expected {width} fields {layout!r}, got {len(fields)}: "
                            f"{line.strip()[:80]!r}")
        yield number, fields


def jsonl_records(path: str | Path, what: str) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed value, the line) of each non-blank line of a JSONL file; DataError on bad JSON."""
    for number, line in text_lines(path, what):
        if line.strip():
            yield number, json_line(path, number, line), line


def json_line(path: str | Path, number: int, line: str) -> Any:
    """The JSON value of line `number` of `path`; DataError naming `file:line` when it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{number}: invalid JSON: {error.msg}") from None
