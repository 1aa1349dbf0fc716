"""Published teacher scores read from a file, so a study distils from them without running a teacher.

Layouts (gzip or not, decided by the file's first bytes; the layout by its name):
- `.parquet`: columns qid, pid, score, as `kd-study convert-scores` writes them from the public
  pickle (trainables/data/scores_parquet.py): read one row group at a time, keeping the pools' pairs.
- `.pkl` / `.pickle`: a pickled `{qid: {pid: score}}` (sentence-transformers' MS MARCO recipe ships
  `cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz`, 160M pairs). Unpickling runs any code the
  file holds, so it is read only when `allow_pickle` is set (`teacher.allow_pickle: true` in a config).
- `.tsv` / `.txt`: `qid pid score` lines (tab or space separated; a header line is skipped).
- `.jsonl`: `{"qid": ..., "pid": ..., "score": ...}` lines.
Ids are compared as strings (the public pickle uses ints).

Memory: the Parquet and text layouts are streamed and only the wanted pairs are kept, as integer keys
and a float each (`wanted_pairs.WantedPairs`; a row group or `BATCH` lines in flight); the pickle layout
is one dict by construction and is held whole while it is read (measured and extrapolated to MS MARCO size in docs/internals.md, "Teacher scores and
negatives from files"; bench/bench_scores_file.py for Parquet): convert it once.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from trainables.config import is_pickle_path
from trainables.data.doc_table import DocTable
from trainables.data.scores_parquet import is_parquet_path, read_parquet_pairs
from trainables.data.textfile import base_suffix, jsonl_records, open_binary, whitespace_rows
from trainables.data.types import DataError
from trainables.data.wanted_pairs import WantedPairs, lists_as_rows

TEXT_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl"}
BATCH = 1 << 16   # lines of a text layout matched at a time


def scores_layout(path: str | Path) -> str:
    """"pickle", "tsv" or "jsonl" from the file name; DataError naming the accepted names otherwise."""
    if is_pickle_path(path):
        return "pickle"
    if is_parquet_path(path):
        return "parquet"
    layout = TEXT_SUFFIXES.get(base_suffix(path))
    if layout is None:
        raise DataError(f"{path}: unknown teacher-scores layout: name it .parquet (kd-study convert-scores), "
                        ".pkl/.pickle ({{qid: {{pid: score}}}}), .tsv/.txt (qid pid score) or .jsonl, optionally .gz")
    return layout


def read_teacher_scores(
    path: str | Path, wanted: Mapping[str, Sequence[str]], *, allow_pickle: bool = False,
) -> dict[str, dict[str, float]]:
    """qid → pid → score for the `wanted` pairs (qid → pids) that the file holds (small inputs: tests, tools)."""
    queries = [str(q) for q in wanted]
    passages = [[str(p) for p in wanted[q]] for q in wanted]
    pairs = WantedPairs.from_lists(queries, passages)
    read_pairs(path, pairs, allow_pickle=allow_pickle)
    found: dict[str, dict[str, float]] = {}
    for qid, pids, score in zip(queries, passages, np.split(pairs.flat(), np.cumsum([len(p) for p in passages])[:-1])):
        for pid, value in zip(pids, score.tolist()):
            if value == value:   # not NaN: the file holds the pair
                found.setdefault(qid, {})[pid] = value
    return found


def read_pairs(path: str | Path, pairs: WantedPairs, *, allow_pickle: bool = False) -> None:
    """Fill `pairs` from the scores file at `path`: streamed, only the wanted pairs kept.

    The pickle layout needs `allow_pickle` (it runs code).
    """
    layout = scores_layout(path)
    if layout == "parquet":
        read_parquet_pairs(path, pairs)
        return
    if layout == "pickle":
        if not allow_pickle:
            raise DataError(f"{path}: a pickle, and unpickling runs any code the file holds: pass allow_pickle "
                            "(teacher.allow_pickle: true) only for a trusted file, or convert it to TSV/JSONL")
        triples = _pickle_pairs(Path(path), pairs.query_index)
    else:
        triples = _tsv_pairs(Path(path)) if layout == "tsv" else _jsonl_pairs(Path(path))
    batch: tuple[list, list, list] = ([], [], [])
    for qid, pid, score in triples:
        if qid in pairs.query_index:
            batch[0].append(qid), batch[1].append(pid), batch[2].append(score)
            if len(batch[0]) == BATCH:
                pairs.fill_strings(*batch)
                batch = ([], [], [])
    pairs.fill_strings(*batch)


def pair_scores(path: str | Path, query_ids: Sequence[str], docs: DocTable, rows: np.ndarray, *,
                allow_pickle: bool = False) -> np.ndarray:
    """float32 [Q, W] teacher scores of the pairs (query_ids[i], rows[i, j]) (rows into `docs`, -1: none, NaN
    there), read from the scores file at `path`.

    Pairs the file lacks are one DataError naming how many are missing and one example (the first in
    row order): distilling from a made-up score (0, the mean) would teach the student something the
    teacher never said.
    """
    if len(query_ids) != rows.shape[0]:
        raise ValueError(f"{len(query_ids)} queries but {rows.shape[0]} rows of passages")
    pairs = WantedPairs(query_ids, docs, rows)
    read_pairs(path, pairs, allow_pickle=allow_pickle)
    scores = pairs.result()
    holes = np.isnan(scores) & (rows >= 0)
    if holes.any():
        first = int(np.flatnonzero(holes.ravel())[0])
        i, j = divmod(first, rows.shape[1])
        raise DataError(f"{path}: {int(holes.sum())} of {len(pairs)} (query, passage) pairs have no teacher score, "
                        f"e.g. query {query_ids[i]!r} passage {docs.strings([rows[i, j]])[0]!r}: use a scores file "
                        "that covers the pools (data.candidates_file from the same source) or a teacher model")
    return scores


def scores_for(
    path: str | Path, queries: Sequence[str], passages: Sequence[Sequence[str]], *, allow_pickle: bool = False,
) -> list[np.ndarray]:
    """One float32 array per query, aligned with its passages (lists of pids): `pair_scores` for small inputs."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")
    docs, rows = lists_as_rows(passages)
    scores = pair_scores(path, queries, docs, rows, allow_pickle=allow_pickle)
    return [scores[i, :len(plist)] for i, plist in enumerate(passages)]


def _pickle_pairs(path: Path, wanted: Mapping[str, object]) -> Iterator[tuple[str, str, float]]:
    with open_binary(path, "teacher scores file") as handle:
        try:
            scores = pickle.load(handle)   # noqa: S301 - opted in (allow_pickle): the layout is a pickle
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise DataError(f"{path}: not a readable pickle ({error})") from None
    if not isinstance(scores, Mapping):
        raise DataError(f"{path}: expected a pickled {{qid: {{pid: score}}}} dict, got {type(scores).__name__}")
    for qid, row in scores.items():
        pids = wanted.get(str(qid))
        if pids is None:
            continue
        if not isinstance(row, Mapping):
            raise DataError(f"{path}: query {qid!r}: expected {{pid: score}}, got {type(row).__name__}")
        for pid, score in row.items():
            yield str(qid), str(pid), float(score)


def _tsv_pairs(path: Path) -> Iterator[tuple[str, str, float]]:
    for number, fields in whitespace_rows(path, "teacher scores file", "qid pid score"):
        try:
            score = float(fields[2])
        except ValueError:
            if number == 1:    # a header line (qid pid score)
                continue
            raise DataError(f"{path}:{number}: score must be a number, got {fields[2]!r}") from None
        yield fields[0], fields[1], score


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str, float]]:
    for number, record, line in jsonl_records(path, "teacher scores file"):
        try:
            yield str(record["qid"]), str(record["pid"]), float(record["score"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}:{number}: expected {{\"qid\": ..., \"pid\": ..., \"score\": number}}, "
                            f"got {line.strip()[:80]!r}") from None
