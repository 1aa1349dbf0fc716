"""The distillation training set a trial reads: queries, positives, candidate pools, teacher scores.

Built once per study by `trainables.prepare.assets.prepare_assets` and stored as one uncompressed `.npz` file
plus a sha256 sidecar, so Ray workers load only the passages they train on, never the whole corpus.
Workers open it memory-mapped (`load(path, mapped=True)`): arrays and strings stay in the page cache,
shared by concurrent trials; texts are decoded only where read (training steps read token ids,
`trainables.data.token_ids`, not texts). Padding: docid index -1, score NaN.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trainables.hashing import file_sha256, quick_digest
from trainables.data.mapped import MappedStrings, map_npz

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    query_ids: Sequence[str]                # lists when built, `MappedStrings` when loaded
    query_texts: Sequence[str]
    doc_ids: Sequence[str]                  # the passages referenced by positives and pools
    doc_texts: Sequence[str]
    positive_doc_idx: np.ndarray            # [Q, P] int64 indices into doc_ids, -1 padded
    pool_doc_idx: np.ndarray                # [Q, N] int64, first-stage rank order, -1 padded
    teacher_positive_scores: np.ndarray     # [Q, P] float32, NaN padded
    teacher_pool_scores: np.ndarray         # [Q, N] float32, NaN padded
    student_positive_scores: np.ndarray     # [Q, P] float32: initial student, for β's first ranks
    student_pool_scores: np.ndarray         # [Q, N] float32

    def __post_init__(self) -> None:
        q = len(self.query_ids)
        for name in ("positive_doc_idx", "teacher_positive_scores", "student_positive_scores"):
            if getattr(self, name).shape[0] != q or getattr(self, name).shape[1] != self.positive_doc_idx.shape[1]:
                raise ValueError(f"TrainingSet.{name} has shape {getattr(self, name).shape}, expected [{q}, P]")
        for name in ("pool_doc_idx", "teacher_pool_scores", "student_pool_scores"):
            if getattr(self, name).shape[0] != q or getattr(self, name).shape[1] != self.pool_doc_idx.shape[1]:
                raise ValueError(f"TrainingSet.{name} has shape {getattr(self, name).shape}, expected [{q}, N]")

    def __len__(self) -> int:
        return len(self.query_ids)

    def pool_sizes(self) -> np.ndarray:
        """Number of real (unpadded) candidates per query."""
        return (self.pool_doc_idx >= 0).sum(axis=1)

    # ---- storage ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write `path` (.npz, as `np.savez` lays it out) atomically with a sha256 sidecar so a partial file
        is never used.

        Strings are stored as one UTF-8 buffer + offsets, never as pickled object arrays: loading
        a cache file must not be able to run code. They are written `CHUNK` at a time through a
        scratch file (`LazyStrings` fetch them so), so the passages' texts are never held whole.
        """
        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name in _ARRAY_FIELDS:
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(getattr(self, name)), allow_pickle=False)
                for name in _STRING_FIELDS:
                    _write_strings(archive, name, getattr(self, name), tmp)

        write_checksummed(Path(path), write, suffix=".tmp.npz")

    @classmethod
    def load(cls, path: str | Path, mapped: bool = True) -> "TrainingSet":
        """The set at `path`, checked by its sidecar's quick digest; `mapped`: arrays read-only memory maps
        and strings `MappedStrings` (decoded on access), else arrays and lists in memory."""
        path = Path(path)
        if not is_complete(path):
            raise ValueError(f"{path}: missing or corrupt training set (checksum mismatch)")
        if mapped:
            z = map_npz(path)
            strings = {name: MappedStrings(z[f"{name}_utf8"], z[f"{name}_offsets"]) for name in _STRING_FIELDS}
            return cls(**strings, **{name: z[name] for name in _ARRAY_FIELDS})
        with np.load(path, allow_pickle=False) as z:
            strings = {name: _unpack_strings(z[f"{name}_utf8"], z[f"{name}_offsets"]) for name in _STRING_FIELDS}
            return cls(**strings, **{name: z[name] for name in _ARRAY_FIELDS})


_STRING_FIELDS = ("query_ids", "query_texts", "doc_ids", "doc_texts")
_ARRAY_FIELDS = ("positive_doc_idx", "pool_doc_idx", "teacher_positive_scores", "teacher_pool_scores",
                 "student_positive_scores", "student_pool_scores")


CHUNK = 65536   # strings encoded and written at a time


class LazyStrings(Sequence):
    """n strings fetched on demand, `fetch(start, stop)` at a time (docids from a table, texts from a corpus):
    what a training set is built from without a Python string per passage."""

    def __init__(self, n: int, fetch: Callable[[int, int], list[str]]):
        self.n, self.fetch = n, fetch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n)
            return self.fetch(start, stop)[::step] if start < stop else []
        index = index + self.n if index < 0 else index
        if not 0 <= index < self.n:
            raise IndexError(f"string {index} of {self.n}")
        return self.fetch(index, index + 1)[0]

    def chunks(self, size: int) -> Iterator[list[str]]:
        for start in range(0, self.n, size):
            yield self.fetch(start, min(start + size, self.n))


def _write_strings(archive: zipfile.ZipFile, name: str, strings: Sequence[str], beside: Path) -> None:
    """Members `<name>_utf8` (uint8 UTF-8 bytes) and `<name>_offsets` (int64 end offsets) of `strings`,
    encoded `CHUNK` at a time into a scratch file beside `beside`, then copied into the archive."""
    scratch = beside.with_name(f"{beside.name}.{name}.raw")
    ends, total = [], 0
    try:
        with open(scratch, "wb") as raw:
            chunks = strings.chunks(CHUNK) if hasattr(strings, "chunks") else \
                (strings[start:start + CHUNK] for start in range(0, len(strings), CHUNK))
            for chunk in chunks:
                encoded = [text.encode("utf-8") for text in chunk]
                lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
                ends.append(total + np.cumsum(lengths))
                total += int(lengths.sum())
                raw.write(b"".join(encoded))
        with archive.open(f"{name}_utf8.npy", "w", force_zip64=True) as member, open(scratch, "rb") as raw:
            np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": (total,)})
            shutil.copyfileobj(raw, member, 1 << 22)
    finally:
        scratch.unlink(missing_ok=True)
    offsets = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    with archive.open(f"{name}_offsets.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, offsets, allow_pickle=False)


def _unpack_strings(buffer: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = buffer.tobytes()
    starts = np.concatenate([[0], offsets[:-1]]) if len(offsets) else offsets
    return [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), offsets.tolist())]


# ---- checksummed cache files -------------------------------------------------------------------
def write_checksummed(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """`write(tmp)` to a unique temp file, rename it to `path`, then its sidecar the same way.

    The one writer of checksummed cache files: `is_complete` trusts `path` only when both renames
    happened, so a killed writer leaves a miss, never a half file that looks whole. The sidecar holds
    the full sha256 (taken here, once: the file's content address, `full_digest`) and the quick
    digest that loads check.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(tmp)
        digest = f"{file_sha256(tmp)}\nquick {quick_digest(tmp)}\n"
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar_tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.sha256")
    try:
        sidecar_tmp.write_text(digest)
        sidecar_tmp.replace(path.with_suffix(".sha256"))
    finally:
        sidecar_tmp.unlink(missing_ok=True)


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` of `arrays` at `path` as a checksummed cache file (`write_checksummed`)."""
    write_checksummed(path, lambda tmp: np.savez(tmp, **arrays), suffix=".tmp.npz")


def load_npz_checked(path: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """(arrays, "hit"), or (None, "miss") when absent, or (None, "corrupt") when it fails its checksum."""
    if not path.exists():
        return None, "miss"
    if not is_complete(path):
        log.warning("%s: corrupt or partial (checksum mismatch or missing sidecar); rebuilding", path)
        return None, "corrupt"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}, "hit"
    except Exception as error:  # noqa: BLE001 - a checksummed file that still does not parse: rebuild, never use
        log.warning("%s: unreadable (%s); rebuilding", path, error)
        return None, "corrupt"


def is_complete(path: str | Path, full: bool = False) -> bool:
    """True when `path` exists and matches the sidecar written beside it: its quick digest (size and
    ends, milliseconds at GB sizes), or the full sha256 with `full` or for a sidecar older than quick digests."""
    path = Path(path)
    sidecar = path.with_suffix(".sha256")
    if not (path.is_file() and sidecar.is_file()):
        return False
    lines = sidecar.read_text().split("\n")
    quick = next((line.split(" ", 1)[1] for line in lines[1:] if line.startswith("quick ")), None)
    if quick is not None and not full:
        return quick == quick_digest(path)
    return lines[0].strip() == file_sha256(path)


def full_digest(path: str | Path) -> str:
    """The sha256 of a checksummed cache file as its writer recorded it: a content address, read not recomputed."""
    return Path(path).with_suffix(".sha256").read_text().split("\n")[0].strip()


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts: the address of a cached asset."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Assets:
    """Where a prepared TrainingSet lives, its content keys and build statistics (`assets.prepare_assets`).

    Defined here, not in assets.py, so that a Tune trial actor can name it without importing the
    asset builders (transformers, faiss, torch.compile machinery: ~9 s of imports per trial on 2 CPUs).
    """

    training_set_path: str
    keys: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

