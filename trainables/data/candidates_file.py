"""Candidate lists read from a file: a TREC run, or a hard-negative JSONL (sentence-transformers' layout).

Hard-negative JSONL (`msmarco-hard-negatives.jsonl.gz`), one query per line:

    {"qid": 867436, "pos": [5238393], "neg": {"bm25": [pid, ...], "msmarco-distilbert-base-tas-b": [...]}}

each system's list in its rank order. A query's candidates are the chosen systems' lists interleaved
by rank (every system's 1st, then every 2nd, ...; systems in the file's order), first occurrence
kept, the line's `pos` removed. Either layout may be gzipped. Streamed: only the queries asked for
are kept, each cut to `depth`, as integer rows into one docid table (`doc_table.RankedLists`).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from trainables.data.doc_table import RankedLists, encode_ids, ranked_lists
from trainables.data.runfile import read_run
from trainables.data.textfile import base_suffix, jsonl_records
from trainables.data.types import DataError


def is_hard_negatives_file(path: str | Path) -> bool:
    """JSONL by name (.jsonl / .json, gzipped or not); anything else is read as a TREC run."""
    return base_suffix(path) in (".jsonl", ".json")


def read_candidates_file(
    path: str | Path, queries: Collection[str] | None = None, depth: int | None = None,
    systems: Sequence[str] | None = None,
) -> RankedLists:
    """Candidate docids in rank order of `queries` (all when None) that the file lists, at most `depth` each."""
    if is_hard_negatives_file(path):
        return read_hard_negatives(path, queries, depth, systems)
    if systems is not None:
        raise DataError(f"{path}: data.candidates_systems applies to a hard-negative JSONL, not a TREC run")
    return read_run(path, queries, depth)


def read_hard_negatives(
    path: str | Path, queries: Collection[str] | None = None, depth: int | None = None,
    systems: Sequence[str] | None = None,
) -> RankedLists:
    """The hard-negative JSONL layout (module docstring) → per query its interleaved, deduplicated negatives."""
    wanted = None if queries is None else {str(q) for q in queries}
    found_systems: set[str] = set()
    out: dict[str, np.ndarray] = {}   # qid → its docids as bytes (a repeated qid: the last line's)
    for number, record, line in jsonl_records(path, "candidates file"):
        try:
            qid, positives, negatives = str(record["qid"]), record.get("pos", []), record["neg"]
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{path}:{number}: expected {{\"qid\": ..., \"pos\": [...], \"neg\": "
                            f"{{system: [pids]}}}}, got {line.strip()[:80]!r}") from None
        if not isinstance(negatives, dict):
            raise DataError(f"{path}:{number}: \"neg\" must map system names to pid lists")
        found_systems.update(negatives)
        if wanted is not None and qid not in wanted:
            continue
        lists = [negatives.get(s, []) for s in systems] if systems is not None else list(negatives.values())
        excluded = {str(p) for p in positives}
        ranked: list[str] = []
        for rank in range(max((len(x) for x in lists), default=0)):
            for ids in lists:
                if rank < len(ids):
                    pid = str(ids[rank])
                    if pid not in excluded:
                        excluded.add(pid)
                        ranked.append(pid)
        out[qid] = encode_ids(ranked[:depth])
    if systems is not None and found_systems and not set(systems) & found_systems:
        raise DataError(f"{path}: none of data.candidates_systems {list(systems)} is in the file "
                        f"(it has: {', '.join(sorted(found_systems))})")
    lists = list(out.values())
    line_query = np.repeat(np.arange(len(lists), dtype=np.int32), [len(x) for x in lists])
    return ranked_lists(list(out), line_query, np.concatenate(lists) if lists else np.zeros(0, "S1"))
