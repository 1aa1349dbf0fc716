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

Memory: the Parquet and text layouts are streamed and only the wanted pairs are kept (a row group or a
few bytes per line in flight); the pickle layout is one dict by construction and is held whole while
it is read (measured and extrapolated to MS MARCO size in docs/internals.md, "Teacher scores and
negatives from files"; bench/bench_scores_file.py for Parquet): convert it once.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from trainables.config import is_pickle_path
from trainables.data.scores_parquet import is_parquet_path, parquet_scores
from trainables.data.textfile import base_suffix, jsonl_records, open_binary, whitespace_rows
from trainables.data.types import DataError

TEXT_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl"}


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
    """qid → pid → score for the `wanted` pairs (qid → pids) that the file holds; other pairs are skipped.

    Text layouts stream line by line; the pickle layout needs `allow_pickle` (it runs code).
    """
    layout = scores_layout(path)
    found: dict[str, dict[str, float]] = {}
    if layout == "parquet":
        queries = [str(q) for q in wanted]
        passages = [[str(p) for p in wanted[q]] for q in wanted]
        flat = iter(parquet_scores(path, queries, passages).tolist())
        for qid, pids in zip(queries, passages):
            for pid, score in zip(pids, flat):
                if score == score:   # not NaN: the file holds the pair
                    found.setdefault(qid, {})[pid] = score
        return found
    wanted_sets = {str(q): {str(p) for p in pids} for q, pids in wanted.items()}
    if layout == "pickle":
        if not allow_pickle:
            raise DataError(f"{path}: a pickle, and unpickling runs any code the file holds: pass allow_pickle "
                            "(teacher.allow_pickle: true) only for a trusted file, or convert it to TSV/JSONL")
        for qid, pid, score in _pickle_pairs(Path(path), wanted_sets):
            found.setdefault(qid, {})[pid] = score
        return found
    lines = _tsv_pairs(Path(path)) if layout == "tsv" else _jsonl_pairs(Path(path))
    for qid, pid, score in lines:
        pids = wanted_sets.get(qid)
        if pids is not None and pid in pids:
            found.setdefault(qid, {})[pid] = score
    return found


def scores_for(
    path: str | Path, queries: Sequence[str], passages: Sequence[Sequence[str]], *, allow_pickle: bool = False,
) -> list[np.ndarray]:
    """One float32 array per query, aligned with its passages, read from the scores file at `path`.

    Pairs the file lacks are one DataError naming how many are missing and one example: distilling
    from a made-up score (0, the mean) would teach the student something the teacher never said.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")
    if scores_layout(path) == "parquet":   # straight into the arrays: no dict of the pairs
        flat = parquet_scores(path, [str(q) for q in queries], passages)
        rows = iter(np.split(flat, np.cumsum([len(p) for p in passages])[:-1]) if len(passages) else [])
    else:
        wanted: dict[str, list[str]] = {}
        for qid, pids in zip(queries, passages):
            wanted.setdefault(str(qid), []).extend(str(p) for p in pids)
        found = read_teacher_scores(path, wanted, allow_pickle=allow_pickle)
        rows = (np.array([found.get(str(q), {}).get(str(p), np.nan) for p in pids], dtype=np.float32)
                for q, pids in zip(queries, passages))
    out, missing, example = [], 0, None
    for (qid, pids), scores in zip(zip(queries, passages), rows):
        holes = np.flatnonzero(np.isnan(scores))
        if holes.size:
            missing += holes.size
            example = example or (qid, pids[holes[0]])
        out.append(scores)
    if missing:
        total = sum(len(p) for p in passages)
        raise DataError(f"{path}: {missing} of {total} (query, passage) pairs have no teacher score, e.g. query "
                        f"{example[0]!r} passage {example[1]!r}: use a scores file that covers the pools "
                        "(data.candidates_file from the same source) or a teacher model")
    return out


def _pickle_pairs(path: Path, wanted: dict[str, set[str]]) -> Iterator[tuple[str, str, float]]:
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
            if str(pid) in pids:
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
