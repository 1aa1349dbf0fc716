"""TREC run files: `qid Q0 docid rank score tag`, one retrieved document per line; read and written here."""
from __future__ import annotations

import gzip
from pathlib import Path

from trainables.data.textfile import whitespace_rows
from trainables.data.types import DataError


def read_run_file(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """qid → [(docid, score)] in rank order (by the rank column; ties keep file order); gzip or plain.

    A line without 6 fields, a non-integer rank, a non-numeric score or a docid listed twice for a
    query raises DataError("<file>:<line>: ..."); blank lines are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such run file")
    rows: dict[str, list[tuple[int, int, str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for number, fields in whitespace_rows(path, "run file", "qid Q0 docid rank score tag"):    # gzipped or not
        qid, _, doc_id, rank, score, _ = fields
        try:
            rank_value = int(rank)
        except ValueError:
            raise DataError(f"{path}:{number}: rank must be an integer, got {rank!r}") from None
        try:
            score_value = float(score)
        except ValueError:
            raise DataError(f"{path}:{number}: score must be a number, got {score!r}") from None
        if (qid, doc_id) in seen:
            raise DataError(f"{path}:{number}: docid {doc_id!r} listed twice for query {qid!r}")
        seen.add((qid, doc_id))
        rows.setdefault(qid, []).append((rank_value, number, doc_id, score_value))
    return {qid: [(doc_id, score) for _, _, doc_id, score in sorted(ranked)] for qid, ranked in rows.items()}


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
