"""Read-only memory maps of cached arrays, and strings decoded one at a time from a mapped UTF-8 buffer.

Workers open the training set and the token ids this way: the bytes stay in the page cache, shared
by every trial on the node, and a worker holds only the pages it touches, never a Python string per
passage. `np.savez` stores members uncompressed (ZIP_STORED), so each `.npy` member of a `.npz` is
one contiguous byte range that `np.memmap` can map in place.
"""
from __future__ import annotations

import mmap
import os
import struct
import zipfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, overload

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")   # a zip local file header: 30 bytes


def map_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every member of the uncompressed `.npz` at `path` as a read-only `np.memmap` (no copy, no pickle)."""
    path = Path(path)
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: member {info.filename} is compressed; only np.savez files map")
            handle.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
            name_length, extra_length = fields[-2], fields[-1]
            handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects; refusing to map it")
            name = info.filename.removesuffix(".npy")
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype=dtype)
                continue
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                                     order="F" if fortran else "C")
    return arrays


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array[rows]` along the first axis; a file-mapped array's rows are read with `os.pread`, not faulted in.

    A page fault on a mapping maps the neighbouring pages too (fault-around, 64 KiB): a step's 32
    scattered rows of a [100k, 150] array would map 2 MiB into the process, and an epoch the whole
    array, counted in every worker's unique memory. A read copies the row from the page cache, which
    concurrent trials share, and keeps nothing mapped.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if _backing_file(array) is None:
        return np.asarray(array[rows])
    if rows.size and (rows.min() < -len(array) or rows.max() >= len(array)):
        raise IndexError(f"rows {rows.min()}..{rows.max()} of an array of {len(array)}")
    offset, row_bytes = array.offset, _row_bytes(array)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    with _open_backing(array) as fd:
        for i, row in enumerate(rows.tolist()):
            data = os.pread(fd, row_bytes, offset + (row % len(array)) * row_bytes)
            out[i] = np.frombuffer(data, array.dtype).reshape(array.shape[1:])
    return out


def read_range(array: np.ndarray, start: int, stop: int, fd: int | None = None) -> np.ndarray:
    """`array[start:stop]` along the first axis; a file-mapped array is read with one `os.pread` (see
    `read_rows`): a sequential pass over a mapped buffer would otherwise leave every page it read mapped,
    counted in the reader's unique memory (a training set's passage texts: GBs at MS MARCO scale).
    `fd`: an open descriptor of the array's file, for callers that read many ranges of it."""
    if _backing_file(array) is None:
        return np.asarray(array[start:stop])
    if fd is None:
        with _open_backing(array) as own:
            return read_range(array, start, stop, own)
    start, stop = max(start, 0), max(min(stop, len(array)), max(start, 0))
    row_shape, row_bytes = array.shape[1:], _row_bytes(array)
    if stop == start:
        return np.zeros((0, *row_shape), dtype=array.dtype)
    data = os.pread(fd, (stop - start) * row_bytes, array.offset + start * row_bytes)
    return np.frombuffer(data, array.dtype).reshape(stop - start, *row_shape).copy()


def _row_bytes(array: np.ndarray) -> int:
    """Bytes of one row (one index of the first axis) of a C-ordered array."""
    return int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize


def _backing_file(array: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of element 0) of a C-ordered `np.memmap` as `map_npz` opens it; None for anything else."""
    if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename
            and array.ndim >= 1 and array.flags.c_contiguous):
        return None                                    # a view of a map (a slice) keeps its parent's offset
    return array.filename, array.offset


@contextmanager
def _open_backing(array: np.ndarray) -> Iterator[int | None]:
    """An open descriptor of a mapped array's file for `read_range`, closed on exit; None for an in-memory array."""
    file = _backing_file(array)
    if file is None:
        yield None
        return
    fd = os.open(file[0], os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


class MappedStrings(Sequence):
    """A read-only sequence of strings stored as one UTF-8 buffer + int64 end offsets; decodes on access.

    Holding one costs two mapped arrays, not a Python object per string, so a worker that never
    reads the texts never pays for them.
    """

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray):
        self.buffer, self.offsets = buffer, offsets

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"string {index} of {len(self)}")
        start = int(self.offsets[index - 1]) if index else 0
        return bytes(self.buffer[start:int(self.offsets[index])]).decode("utf-8")

    def chunks(self, size: int) -> Iterator[list[str]]:
        """The strings in order, `size` at a time: one chunk of Python strings alive at once, its bytes and
        offsets read from the file (`read_range`), so a pass over every text maps none of them."""
        with _open_backing(self.offsets) as offsets_fd, _open_backing(self.buffer) as buffer_fd:
            for start in range(0, len(self), size):
                stop = min(start + size, len(self))
                ends = read_range(self.offsets, start - 1 if start else 0, stop, offsets_fd)
                first = int(ends[0]) if start else 0
                ends = ends[1:] if start else ends
                data = read_range(self.buffer, first, int(ends[-1]), buffer_fd).tobytes()
                starts = np.concatenate([[first], ends[:-1]]) - first
                yield [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), (ends - first).tolist())]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None   # mutable-looking sequence semantics, like list

    def __repr__(self) -> str:
        return f"MappedStrings({len(self)} strings, {int(self.offsets[-1]) if len(self) else 0} bytes)"
