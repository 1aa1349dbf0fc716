"""Teacher scores as a columnar Parquet file: converted once from the public pickle, then read streamed.

The public MS MARCO file is a pickled `{qid: {pid: score}}` of 160M pairs (16.5 GiB as a dict):
`kd-study convert-scores IN.pkl[.gz] OUT.parquet --trust-pickle` holds it once, and writes the
columns `qid`, `pid` (int64 when every id in the pickle is an int, as in the public file; else
string) and `score` (float32, what the assets keep) in row groups of `ROWS_PER_GROUP` pairs, in the
pickle's order (grouped by query). A study then reads the file one row group at a time, skips the
row groups whose qid range holds no wanted query (Parquet statistics), and keeps only the pools'
pairs: memory grows with the pools, not with the file.
"""
from __future__ import annotations

import numbers
import os
import pickle
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainables.data.textfile import open_binary
from trainables.data.types import DataError
from trainables.data.wanted_pairs import WantedPairs

ROWS_PER_GROUP = 1 << 20
COLUMNS = ("qid", "pid", "score")
_POOL = pa.default_memory_pool()


def convert_pickle(src: str | Path, dst: str | Path, *, trust_pickle: bool, rows_per_group: int = ROWS_PER_GROUP) -> int:
    """Write the pickled `{qid: {pid: score}}` at `src` as Parquet at `dst` (atomically); the number of pairs.

    Unpickling runs any code the file holds: `trust_pickle` must say the source is trusted.
    """
    if not trust_pickle:
        raise DataError(f"{src}: a pickle, and unpickling runs any code the file holds: pass --trust-pickle "
                        "only for a file from a trusted source")
    with open_binary(src, "teacher scores file") as handle:
        try:
            scores = pickle.load(handle)   # noqa: S301 - opted in (trust_pickle)
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise DataError(f"{src}: not a readable pickle ({error})") from None
    if not isinstance(scores, Mapping):
        raise DataError(f"{src}: expected a pickled {{qid: {{pid: score}}}} dict, got {type(scores).__name__}")
    for qid, row in scores.items():
        if not isinstance(row, Mapping):
            raise DataError(f"{src}: query {qid!r}: expected {{pid: score}}, got {type(row).__name__}")
    int_ids = all(_is_int(q) for q in scores) and all(_is_int(p) for row in scores.values() for p in row)
    id_type = pa.int64() if int_ids else pa.string()
    schema = pa.schema([("qid", id_type), ("pid", id_type), ("score", pa.float32())],
                       metadata={"kd-study": "teacher scores {qid: {pid: score}}"})
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    pairs = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in _tables(src, scores, schema, int_ids, rows_per_group):
                writer.write_table(table, row_group_size=rows_per_group)
                pairs += table.num_rows
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return pairs


def is_parquet_path(path: str | Path) -> bool:
    return str(path).lower().endswith(".parquet")


def parquet_scores(path: str | Path, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> np.ndarray:
    """Flat float32 scores of every (queries[i], passages[i][j]) in order, NaN where the file lacks the pair
    (small inputs: tests, tools; the assets use `read_parquet_pairs`)."""
    pairs = WantedPairs.from_lists(queries, passages)
    read_parquet_pairs(path, pairs)
    return pairs.flat()


def read_parquet_pairs(path: str | Path, pairs: WantedPairs) -> None:
    """Fill `pairs` from the Parquet file at `path`, one row group at a time (those whose qid range holds a
    wanted query), matched by integer ids when the file's are int64, else by id strings."""
    file = _open(path)
    if file.schema_arrow.field("qid").type == pa.int64() and file.schema_arrow.field("pid").type == pa.int64():
        _read_int_ids(file, pairs)
    else:
        _read_string_ids(file, pairs)


# ---- conversion ----------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _tables(src, scores: Mapping, schema: pa.Schema, int_ids: bool, rows: int) -> Iterator[pa.Table]:
    chunk: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held, written = 0, False
    for qid, row in scores.items():
        try:
            values = np.fromiter(row.values(), dtype=np.float32, count=len(row))
        except (TypeError, ValueError):
            raise DataError(f"{src}: query {qid!r}: every score must be a number") from None
        if int_ids:
            pids = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            qids = np.full(len(row), qid, dtype=np.int64)
        else:
            pids = np.array([str(p) for p in row], dtype=object)
            qids = np.full(len(row), str(qid), dtype=object)
        chunk.append((qids, pids, values))
        held += len(row)
        if held >= rows:
            yield _table(chunk, schema)
            chunk, held, written = [], 0, True
    if chunk or not written:   # the rest, or an empty file's schema
        yield _table(chunk, schema)


def _table(chunk: list[tuple[np.ndarray, np.ndarray, np.ndarray]], schema: pa.Schema) -> pa.Table:
    if not chunk:
        return schema.empty_table()
    columns = [np.concatenate([c[i] for c in chunk]) for i in range(3)]
    return pa.Table.from_arrays([pa.array(col, type=field.type) for col, field in zip(columns, schema)], schema=schema)


# ---- reading -------------------------------------------------------------------------------------
def _open(path: str | Path) -> pq.ParquetFile:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such teacher scores file")
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    missing = [c for c in COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise DataError(f"{path}: a teacher scores Parquet file needs columns {', '.join(COLUMNS)}; "
                        f"missing {', '.join(missing)} (write it with `kd-study convert-scores`)")
    return file


def _canonical_ints(ids: np.ndarray) -> np.ndarray:
    """int64 of each bytes id that is a non-negative int as `str(int)` writes it, else -1 (such an id cannot
    equal an int64 id of the file: "05" is not 5)."""
    out = np.full(len(ids), -1, dtype=np.int64)
    digits = np.char.isdigit(ids) & (np.char.str_len(ids) <= 18) if len(ids) else np.zeros(0, dtype=bool)
    if digits.any():
        values = ids[digits].astype(np.int64)
        canonical = values.astype("S") == ids[digits]
        out[np.flatnonzero(digits)[canonical]] = values[canonical]
    return out


def _lookup(sorted_values: np.ndarray, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """positions[i] where sorted_values[i] == value, -1 where no entry equals it."""
    if not len(sorted_values):
        return np.full(len(values), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return np.where(sorted_values[at] == values, positions[at], -1)


def _wanted_groups(file: pq.ParquetFile, wanted_qids: np.ndarray | list[str] | None) -> Iterator[int]:
    """Row groups whose qid range (Parquet statistics) holds a wanted query; all of them without statistics.

    `wanted_qids` sorted, of the column's type (None: every row group)."""
    column = file.schema_arrow.names.index("qid")
    for group in range(file.num_row_groups):
        stats = file.metadata.row_group(group).column(column).statistics
        if wanted_qids is None or stats is None or not stats.has_min_max:
            yield group
            continue
        at = np.searchsorted(wanted_qids, stats.min, side="left")
        if at < len(wanted_qids) and wanted_qids[at] <= stats.max:
            yield group


def _read_int_ids(file: pq.ParquetFile, pairs: WantedPairs) -> None:
    """Int64 ids: each row group's qids and pids matched to query indices and docid rows by binary search."""
    query_ints = _canonical_ints(np.array([q.encode("utf-8") for q in pairs.query_index], dtype="S").reshape(-1)
                                 if pairs.query_index else np.zeros(0, "S1"))
    doc_ints = _canonical_ints(pairs.docs.ids)
    queries, docs = (np.flatnonzero(ints >= 0) for ints in (query_ints, doc_ints))
    query_order, doc_order = np.argsort(query_ints[queries]), np.argsort(doc_ints[docs])
    sorted_queries, sorted_docs = query_ints[queries][query_order], doc_ints[docs][doc_order]
    query_at, doc_at = queries[query_order], docs[doc_order]
    if not len(pairs) or not len(sorted_queries):
        return
    for group in _wanted_groups(file, sorted_queries):
        table = file.read_row_group(group, columns=list(COLUMNS))
        pairs.fill(_lookup(sorted_queries, query_at, table["qid"].to_numpy()),
                   _lookup(sorted_docs, doc_at, table["pid"].to_numpy()), table["score"].to_numpy())
        del table
        _POOL.release_unused()   # Arrow's allocator keeps freed row groups for reuse: hand them back


def _read_string_ids(file: pq.ParquetFile, pairs: WantedPairs) -> None:
    wanted_qids = sorted(pairs.query_index)
    value_set = pa.array(wanted_qids, type=pa.string())
    by_range = wanted_qids if file.schema_arrow.field("qid").type == pa.string() else None
    for group in _wanted_groups(file, by_range):
        table = file.read_row_group(group, columns=list(COLUMNS))
        table = table.filter(pc.is_in(table["qid"].cast(pa.string()), value_set=value_set))
        pairs.fill_strings(table["qid"].cast(pa.string()).to_pylist(), table["pid"].cast(pa.string()).to_pylist(),
                           table["score"].to_numpy())
        del table
        _POOL.release_unused()
