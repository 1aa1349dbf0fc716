"""A BEIR `corpus.jsonl` read where it lies: an index of docids and byte offsets, never its texts in memory.

One streaming pass (`index_jsonl`) checks every line as the BEIR loader always did (UTF-8, JSON, an
`_id`), hashes the file's bytes (the corpus digest behind the fingerprints) and records each passage's
docid, byte offset and length in numpy arrays: at MS MARCO's 8.84M passages about 200 MB, where a
dict of the texts took ~5 GB. Lookups (`get_many`) binary-search the sorted docids and read each line
back with `os.pread`; iteration streams the file in file order. A docid given twice keeps its first
passage (the later lines are counted skips), as the dict did.

Reads go through the page cache, not a memory map: mapped file pages count as the process's own
memory, and an evaluation reads the whole corpus. The corpus pickles as its path and arrays
(no texts); the file's size and mtime are checked when it is reopened, so a corpus edited after
it was loaded is an error, not silently different passages.
"""
from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.textfile import json_line, utf8_line
from trainables.data.types import Corpus, DataError

ID_CHUNK = 1 << 16      # docids gathered as bytes objects before they become one numpy array
READ_CHUNK = 1 << 16    # rows per slice of the offset arrays an iteration walks


def passage_text(row: dict[str, Any]) -> str:
    """`title + " " + text` when the title is non-empty, else `text` (the BEIR convention)."""
    title, text = str(row.get("title") or ""), str(row.get("text") or "")
    return f"{title} {text}" if title.strip() else text


def beir_row(path: str | Path, number: int, row: Any) -> dict[str, Any]:
    """A BEIR line's object; DataError naming `file:line` when it is not an object with an `_id`."""
    if not isinstance(row, dict) or "_id" not in row:
        raise DataError(f"{path}:{number}: expected a JSON object with an '_id'")
    return row


def parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
    """The object of one corpus line, None for a blank line; checked as `jsonl_records` checks a line."""
    line = utf8_line(path, number, raw)
    return beir_row(path, number, json_line(path, number, line)) if line.strip() else None


def index_jsonl(path: str | Path) -> tuple[JsonlCorpus, str, int]:
    """(the corpus, the sha256 of the file's bytes, how many lines repeated an earlier `_id`) in one pass."""
    path = Path(path)
    digest = hashlib.sha256()
    offsets, lengths = array("q"), array("I")    # lengths < 4 GiB: a longer line is refused below
    id_chunks: list[np.ndarray] = []
    ids: list[bytes] = []
    offset = 0
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        for number, raw in enumerate(handle, start=1):
            digest.update(raw)
            row = parse_line(path, number, raw)
            if row is not None:
                ids.append(str(row["_id"]).encode("utf-8"))
                if ids[-1].endswith(b"\0") or len(raw) >= 1 << 32:   # numpy's fixed-width bytes drop trailing NULs
                    raise DataError(f"{path}:{number}: an '_id' that ends with a NUL character, or a line of 4 GiB")
                offsets.append(offset)
                lengths.append(len(raw))
                if len(ids) == ID_CHUNK:
                    id_chunks.append(np.array(ids, dtype=bytes))
                    ids = []
            offset += len(raw)
    if ids:
        id_chunks.append(np.array(ids, dtype=bytes))
    del ids
    index, duplicates = _sorted_index(id_chunks, np.frombuffer(offsets, dtype=np.int64),
                                      np.frombuffer(lengths, dtype=np.uint32))
    corpus = JsonlCorpus(path, *index, size_mtime=(stat.st_size, stat.st_mtime_ns))
    return corpus, digest.hexdigest(), duplicates


def _sorted_index(id_chunks: list[np.ndarray], offsets: np.ndarray, lengths: np.ndarray):
    """Sorted unique docids with their row in file order, and the kept rows' offsets and lengths.

    Takes the docids in file order as chunks and empties the list (the arrays go as soon as they are
    joined: peak memory is the index about twice, not three times). A stable sort puts a repeated
    docid's first line first among its equals: that one is kept.
    """
    width = max([1] + [chunk.dtype.itemsize for chunk in id_chunks])
    file_ids = np.concatenate([id_chunks.pop(0).astype(f"S{width}") for _ in range(len(id_chunks))]
                              or [np.zeros(0, dtype="S1")])
    order = np.argsort(file_ids, kind="stable")
    sorted_ids = file_ids[order]
    del file_ids
    row_dtype = np.int32 if len(order) < 1 << 31 else np.int64
    repeat = np.zeros(len(sorted_ids), dtype=bool)
    repeat[1:] = sorted_ids[1:] == sorted_ids[:-1]
    duplicates = int(repeat.sum())
    if not duplicates:                 # the usual case: every line is a passage, in file order
        return (sorted_ids, order.astype(row_dtype), offsets, lengths), 0
    kept_line = np.ones(len(sorted_ids), dtype=bool)
    kept_line[order[repeat]] = False
    row_of_line = np.cumsum(kept_line, dtype=row_dtype) - 1
    rows = row_of_line[order[~repeat]]
    return (sorted_ids[~repeat], rows, offsets[kept_line], lengths[kept_line]), duplicates


class JsonlCorpus(Corpus):
    """The passages of a JSONL corpus file, read by byte offset (see the module docstring).

    `ids` (sorted, fixed-width UTF-8) and `rows` (each id's position in file order) find a docid;
    `offsets` and `lengths` (per position) find its line.
    """

    def __init__(self, path: str | Path, ids: np.ndarray, rows: np.ndarray, offsets: np.ndarray,
                 lengths: np.ndarray, size_mtime: tuple[int, int]):
        self.path = Path(path)
        self.ids, self.rows, self.offsets, self.lengths = ids, rows, offsets, lengths
        self.size_mtime = size_mtime
        self._fd: int | None = None
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("path", "ids", "rows", "offsets", "lengths", "size_mtime")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __len__(self) -> int:
        return len(self.offsets)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and bool(self._positions([doc_id])[0] >= 0)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with open(self.path, "rb") as handle:
            self._check_unchanged(handle.fileno())
            position = 0
            for start in range(0, len(self.offsets), READ_CHUNK):
                chunk = zip(self.offsets[start:start + READ_CHUNK].tolist(),
                            self.lengths[start:start + READ_CHUNK].tolist())
                for offset, length in chunk:
                    if offset != position:          # a blank or repeated line between two passages
                        handle.seek(offset)
                    row = self._row(handle.read(length), offset)
                    position = offset + length
                    yield str(row["_id"]), passage_text(row)

    def doc_ids(self) -> Sequence[str]:
        return DocIds(self.ids, self.rows)

    def get_many(self, doc_ids: Sequence[str]) -> list[str]:
        positions = self._positions(doc_ids)
        if positions.size and positions.min() < 0:
            missing = [d for d, p in zip(doc_ids, positions.tolist()) if p < 0]
            raise DataError(f"{self.path}: unknown docid {missing[0]!r}")
        fd = self._open()
        offsets, lengths = self.offsets[positions], self.lengths[positions].tolist()
        texts: list[str] = [""] * len(positions)
        # in file order: neighbouring passages share the page cache's pages and the disk's read-ahead
        for i in np.argsort(offsets, kind="stable").tolist():
            offset = int(offsets[i])
            texts[i] = passage_text(self._row(os.pread(fd, lengths[i], offset), offset))
        return texts

    def _positions(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Each docid's position in file order, -1 where the corpus has none."""
        keys = [str(d).encode("utf-8") for d in doc_ids]
        if not keys:
            return np.zeros(0, dtype=np.int64)
        width = self.ids.dtype.itemsize
        fits = np.array([len(k) <= width and not k.endswith(b"\0") for k in keys], dtype=bool)
        wanted = np.array(keys, dtype=f"S{width}")        # a longer key is cut here, and refused by `fits`
        at = np.minimum(np.searchsorted(self.ids, wanted), max(len(self.ids) - 1, 0))
        found = fits & (self.ids[at] == wanted) if len(self.ids) else np.zeros(len(keys), dtype=bool)
        return np.where(found, self.rows[at] if len(self.ids) else 0, -1).astype(np.int64)

    def _open(self) -> int:
        if self._fd is None or self._pid != os.getpid():   # a forked child opens its own descriptor
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._check_unchanged(fd)
            except DataError:
                os.close(fd)
                raise
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def _check_unchanged(self, fd: int) -> None:
        stat = os.fstat(fd)
        if (stat.st_size, stat.st_mtime_ns) != tuple(self.size_mtime):
            raise DataError(f"{self.path}: the corpus file changed after it was loaded (size or mtime); "
                            "load the data set again")

    def _row(self, raw: bytes, offset: int) -> dict[str, Any]:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:   # the file was checked at load and its size and mtime are unchanged
            raise DataError(f"{self.path}: byte {offset} is no longer the JSON line it was at load; "
                            "load the data set again") from None


class DocIds(Sequence[str]):
    """A corpus's docids by position in file order, decoded from the index one at a time (no list of str)."""

    def __init__(self, ids: np.ndarray, rows: np.ndarray):
        self._ids = ids
        self._sorted_at = np.empty(len(rows), dtype=rows.dtype)   # position in file order → position in `ids`
        self._sorted_at[rows] = np.arange(len(rows), dtype=rows.dtype)

    def __len__(self) -> int:
        return len(self._sorted_at)

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        return self._ids[self._sorted_at[position]].decode("utf-8")
