"""TREC run files: `qid Q0 docid rank score tag`, one retrieved document per line; read and written here.

Read streamed into arrays (`read_run`): per kept line a query index, a docid (bytes, interned into one
sorted table) and a rank, a few MiB of Python objects in flight; pools are built from those rows, never
from a tuple per line (a 100k-query run of 150 candidates is 15M lines).
"""
from __future__ import annotations

import gzip
from collections.abc import Collection
from pathlib import Path

import numpy as np

from trainables.data.doc_table import RankedLists, ranked_lists
from trainables.data.textfile import whitespace_rows
from trainables.data.types import DataError

LAYOUT = "qid Q0 docid rank score tag"
CHUNK = 1 << 16   # lines parsed into Python objects before they become arrays (~10 MiB in flight)


def read_run(path: str | Path, queries: Collection[str] | None = None, depth: int | None = None) -> RankedLists:
    """The ranked docids of `queries` (all when None) in the run at `path`, at most `depth` each; gzip or plain.

    Rank order is the rank column's (ties keep file order). A line without 6 fields, a non-integer
    rank or a non-numeric score raises DataError("<file>:<line>: ..."), as does a docid listed twice
    for a query that is read; blank lines are ignored.
    """
    lines = _RunLines(path, queries)
    return ranked_lists(lines.query_ids, lines.query[lines.order], lines.docid[lines.order], depth)


def read_run_file(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """qid → [(docid, score)] in rank order (`read_run`'s order and checks), with the run's scores: small runs."""
    lines = _RunLines(path, None, keep_scores=True)
    out: dict[str, list[tuple[str, float]]] = {q: [] for q in lines.query_ids}
    for i in lines.order.tolist():
        out[lines.query_ids[lines.query[i]]].append((lines.docid[i].decode("utf-8"), float(lines.scores[i])))
    return out


class _RunLines:
    """The kept lines of a run as arrays (query index, docid bytes, rank, score), checked, and their rank order."""

    def __init__(self, path: str | Path, queries: Collection[str] | None, keep_scores: bool = False):
        self.path = path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such run file")
        self.wanted = None if queries is None else set(queries)
        position: dict[str, int] = {}
        self.query_ids: list[str] = []
        parts: dict[str, list[np.ndarray]] = {"query": [], "docid": [], "rank": [], "score": []}
        chunk: dict[str, list] = {name: [] for name in parts}
        for number, fields in whitespace_rows(path, "run file", LAYOUT):    # gzipped or not
            qid, doc_id, rank_value, score_value = self._parse(number, fields)
            row = position.get(qid)
            if row is None:
                if self.wanted is not None and qid not in self.wanted:
                    continue
                row = position[qid] = len(self.query_ids)
                self.query_ids.append(qid)
            chunk["query"].append(row)
            chunk["docid"].append(doc_id.encode("utf-8"))
            chunk["rank"].append(rank_value)
            if keep_scores:
                chunk["score"].append(score_value)
            if len(chunk["query"]) == CHUNK:
                _flush(chunk, parts)
        _flush(chunk, parts)
        self.query = np.concatenate(parts["query"]) if parts["query"] else np.zeros(0, np.int32)
        self.docid = np.concatenate(parts["docid"]) if parts["docid"] else np.zeros(0, "S1")
        rank = np.concatenate(parts["rank"]) if parts["rank"] else np.zeros(0, np.int64)
        self.scores = np.concatenate(parts["score"]) if parts["score"] else np.zeros(0)
        self._refuse_repeats()
        self.order = np.lexsort((rank, self.query))   # stable: equal ranks keep file order

    def _parse(self, number: int, fields: list[str]) -> tuple[str, str, int, float]:
        qid, _, doc_id, rank, score, _ = fields
        try:
            rank_value = int(rank)
        except ValueError:
            raise DataError(f"{self.path}:{number}: rank must be an integer, got {rank!r}") from None
        try:
            score_value = float(score)
        except ValueError:
            raise DataError(f"{self.path}:{number}: score must be a number, got {score!r}") from None
        return qid, doc_id, rank_value, score_value

    def _refuse_repeats(self) -> None:
        """DataError naming the first line that lists a (query, docid) again."""
        _, rows = np.unique(self.docid, return_inverse=True)
        keys = (self.query.astype(np.int64) << 32) | rows.ravel().astype(np.int64)
        order = np.argsort(keys, kind="stable")
        repeated = order[1:][keys[order][1:] == keys[order][:-1]]
        if not len(repeated):
            return
        first = int(repeated.min())   # the earliest kept line that repeats a pair
        qid, doc_id = self.query_ids[self.query[first]], self.docid[first].decode("utf-8")
        seen = 0
        for number, fields in whitespace_rows(self.path, "run file", LAYOUT):
            if self.wanted is None or fields[0] in self.wanted:
                if seen == first:
                    raise DataError(f"{self.path}:{number}: docid {doc_id!r} listed twice for query {qid!r}")
                seen += 1


def _flush(chunk: dict[str, list], parts: dict[str, list[np.ndarray]]) -> None:
    if not chunk["query"]:
        return
    parts["query"].append(np.array(chunk["query"], dtype=np.int32))
    parts["docid"].append(np.array(chunk["docid"], dtype="S"))
    parts["rank"].append(np.array(chunk["rank"], dtype=np.int64))
    if chunk["score"]:
        parts["score"].append(np.array(chunk["score"], dtype=np.float64))
    for values in chunk.values():
        values.clear()


def write_run_file(path: str | Path, run: dict[str, dict[str, float]], tag: str) -> int:
    """Write `run` (qid → docid → score) as a TREC run, each query's documents by score (ties: docid).

    Standard 6 columns, rank from 1, `tag` in the last column (no whitespace); gzip-compressed when
    `path` ends in `.gz` (ir_measures reads it as is; `zcat` feeds trec_eval). Returns the line count.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be one word, got {tag!r}")
    lines = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.9g} {tag}\n")  # float32-exact
                lines += 1
    return lines
