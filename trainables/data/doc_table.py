"""Docids as one sorted table of UTF-8 bytes, and ranked lists as integer rows into it.

Pools, their scores and the training set index passages by docid. At MS MARCO scale that is ~15M
(query, passage) pairs: as Python lists of docid strings ~60 B per pair, as int32 rows into a table of
the distinct docids 4 B per pair plus the table once (8.8M docids of ≤ 7 bytes: ~60 MiB). The table
is sorted numpy bytes (`S`), so a batch of docids is looked up with one `searchsorted`, and it loads
from a cache file without pickle.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 20   # docids encoded at a time: one chunk of Python strings alive at once


def encode_ids(docids: Iterable[str] | np.ndarray) -> np.ndarray:
    """Docids (str, or bytes already encoded) as a numpy bytes array (UTF-8), `CHUNK` at a time."""
    if isinstance(docids, np.ndarray) and docids.dtype.kind == "S":
        return docids
    parts, chunk = [], []
    for docid in docids:
        chunk.append(docid.encode("utf-8") if isinstance(docid, str) else docid)
        if len(chunk) == CHUNK:
            parts.append(np.array(chunk, dtype="S"))
            chunk = []
    if chunk or not parts:
        parts.append(np.array(chunk, dtype="S") if chunk else np.zeros(0, dtype="S1"))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class DocTable:
    """The distinct docids, sorted (numpy bytes); a passage is its row in the table."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids if len(ids) else np.zeros(0, dtype="S1")

    @classmethod
    def of(cls, *docids: Iterable[str] | np.ndarray) -> DocTable:
        """The table of every docid in `docids` (strings or bytes arrays), each once."""
        arrays = [encode_ids(d) for d in docids]
        return cls(np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype="S1"))

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, docids: Iterable[str] | np.ndarray) -> np.ndarray:
        """int64 rows of `docids` in the table, -1 for a docid it does not hold."""
        wanted = encode_ids(docids)
        if not len(self.ids) or not len(wanted):
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return np.where(self.ids[at] == wanted, at, -1)

    def strings(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The docids at `rows` (all ≥ 0), decoded."""
        return [d.decode("utf-8") for d in self.ids[np.asarray(rows, dtype=np.int64)].tolist()]


@dataclass(frozen=True)
class RankedLists:
    """Ranked docid lists of some queries (a run file's, a hard-negative file's): rows into `docs`, flat.

    Query i's list is `doc_rows[ends[i-1]:ends[i]]`, best first.
    """

    query_ids: list[str]
    docs: DocTable
    ends: np.ndarray          # int64 [n queries] end offsets into doc_rows
    doc_rows: np.ndarray      # int32 rows into docs

    def __len__(self) -> int:
        return len(self.query_ids)

    def rows_of(self, qid: str) -> np.ndarray:
        """Query `qid`'s list (empty when the lists do not hold it)."""
        i = self._position().get(qid)
        if i is None:
            return self.doc_rows[:0]
        return self.doc_rows[(int(self.ends[i - 1]) if i else 0):int(self.ends[i])]

    def as_dict(self) -> dict[str, list[str]]:
        """qid → docids: small lists only (tests, tools)."""
        return {q: self.docs.strings(self.rows_of(q)) for q in self.query_ids}

    def _position(self) -> dict[str, int]:
        position = self.__dict__.get("_positions")
        if position is None:
            position = {q: i for i, q in enumerate(self.query_ids)}
            object.__setattr__(self, "_positions", position)
        return position


def ranked_lists(query_ids: list[str], line_query: np.ndarray, line_docid: np.ndarray,
                 depth: int | None = None) -> RankedLists:
    """RankedLists from one entry per line (query index into `query_ids`, docid bytes), the lines of each
    query in rank order (other queries' lines may come between), each list cut to `depth`."""
    order = np.argsort(line_query, kind="stable")
    counts = np.bincount(line_query, minlength=len(query_ids)).astype(np.int64)
    if depth is not None:
        starts = np.cumsum(counts) - counts
        position = np.arange(len(order), dtype=np.int64) - np.repeat(starts, counts)
        order = order[position < depth]
        counts = np.minimum(counts, depth)
    table, inverse = np.unique(line_docid[order], return_inverse=True)
    return RankedLists(query_ids, DocTable(table), np.cumsum(counts), inverse.astype(np.int32).ravel())


def first_occurrence(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values of `flat` in first-occurrence order, each element's index into them): what
    `dict.fromkeys` over the values gives, without a dict."""
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    position = np.empty(len(values), dtype=np.int64)
    position[order] = np.arange(len(values))
    return values[order], position[inverse.ravel()]
