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

ROWS_PER_GROUP = 1 << 20
COLUMNS = ("qid", "pid", "score")
_INT_KEY_LIMIT = 1 << 31   # qid << 32 | pid packs into one int64 below this
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
    """Flat float32 scores of every (queries[i], passages[i][j]) in order, NaN where the file lacks the pair.

    Streams the file by row group and keeps one float per wanted pair (plus their keys while reading).
    """
    file = _open(path)
    lengths = [len(p) for p in passages]
    if file.schema_arrow.field("qid").type == pa.int64() and file.schema_arrow.field("pid").type == pa.int64():
        keys = _int_keys(queries, passages, lengths)
        if keys is not None:
            order = np.argsort(keys, kind="stable")
            keys = keys[order]   # sorted, in place of the unsorted keys
            return _read_int_keys(file, keys, order, np.unique(np.array([int(q) for q in queries], dtype=np.int64)))
    return _read_string_keys(file, queries, passages)


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


def _int_keys(queries: Sequence[str], passages: Sequence[Sequence[str]], lengths: list[int]) -> np.ndarray | None:
    """qid << 32 | pid of every wanted pair, or None when an id is not a plain non-negative int below 2**31."""
    try:
        qids = np.array([int(q) for q in queries], dtype=np.int64)
        pids = np.fromiter((int(p) for plist in passages for p in plist), dtype=np.int64, count=sum(lengths))
    except ValueError:
        return None
    canonical = all(str(q) == str(int(q)) for q in queries) and all(
        str(p) == str(int(p)) for plist in passages for p in plist)
    if not canonical or (qids < 0).any() or (qids >= _INT_KEY_LIMIT).any() or (pids < 0).any() \
            or (pids >= _INT_KEY_LIMIT).any():
        return None
    keys = np.repeat(qids, lengths)
    keys <<= 32
    keys |= pids
    return keys


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


def _read_int_keys(file: pq.ParquetFile, ordered: np.ndarray, order: np.ndarray, wanted_qids: np.ndarray) -> np.ndarray:
    """Scores of the wanted pairs by binary search in their sorted keys (qid << 32 | pid; `ordered` =
    keys[order]): 8 + 8 + 4 + 4 bytes per wanted pair, and one row group in flight."""
    found = np.full(len(ordered), np.nan, dtype=np.float32)
    if len(ordered):
        for group in _wanted_groups(file, wanted_qids):
            table = file.read_row_group(group, columns=list(COLUMNS))
            batch_keys = table["qid"].to_numpy() << 32
            batch_keys |= table["pid"].to_numpy()
            at = np.minimum(np.searchsorted(ordered, batch_keys), len(ordered) - 1)
            hit = ordered[at] == batch_keys
            found[at[hit]] = table["score"].to_numpy()[hit]
            del table, batch_keys, at, hit
            _POOL.release_unused()   # Arrow's allocator keeps freed row groups for reuse: hand them back
        repeated = ordered[1:] == ordered[:-1]
        if repeated.any():   # a pair wanted twice: its later copies take the first one's score
            found = found[np.searchsorted(ordered, ordered, side="left")]
    out = np.empty_like(found)
    out[order] = found
    return out


def _read_string_keys(file: pq.ParquetFile, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> np.ndarray:
    slots: dict[str, dict[str, list[int]]] = {}
    at = 0
    for qid, plist in zip(queries, passages):
        row = slots.setdefault(str(qid), {})
        for pid in plist:
            row.setdefault(str(pid), []).append(at)
            at += 1
    out = np.full(at, np.nan, dtype=np.float32)
    wanted_qids = sorted(slots)
    value_set = pa.array(wanted_qids, type=pa.string())
    by_range = wanted_qids if file.schema_arrow.field("qid").type == pa.string() else None
    for group in _wanted_groups(file, by_range):
        table = file.read_row_group(group, columns=list(COLUMNS))
        table = table.filter(pc.is_in(table["qid"].cast(pa.string()), value_set=value_set))
        for qid, pid, score in zip(table["qid"].cast(pa.string()).to_pylist(),
                                   table["pid"].cast(pa.string()).to_pylist(), table["score"].to_pylist()):
            for slot in slots[qid].get(pid, ()):
                out[slot] = score
        del table
        _POOL.release_unused()
    return out
