"""Rows of a mapped training-set array read with pread: the same values as indexing, and nothing mapped in."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from trainables.data.mapped import MappedStrings, map_npz, read_range, read_rows


def resident_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) > 5 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"scores": rng.normal(size=(4000, 150)).astype(np.float32), "idx": rng.integers(-1, 9, (4000, 3)),
              "ends": rng.integers(0, 10**9, 4000)}   # 1-d, like a MappedStrings' offsets
    np.savez(tmp_path / "set.npz", **arrays)
    return tmp_path / "set.npz", arrays


def test_rows_read_equal_indexing_for_any_rows(mapped):
    path, arrays = mapped
    z = map_npz(path)
    rows = np.array([3999, 0, 17, 17, -1, 2048])
    for name, array in arrays.items():
        assert np.array_equal(read_rows(z[name], rows), array[rows]) and read_rows(z[name], rows).dtype == array.dtype
        assert np.array_equal(read_range(z[name], 3990, 4100), array[3990:])
        assert read_range(z[name], 50, 40).shape == array[50:40].shape          # empty, the array's row shape
    assert np.array_equal(read_rows(z["scores"][10:], [0]), arrays["scores"][[10]])   # a view: indexed as is
    assert np.array_equal(read_rows(arrays["idx"], rows), arrays["idx"][rows])         # in memory: indexed
    assert read_rows(z["idx"], np.zeros(0, dtype=np.int64)).shape == (0, 3)
    with pytest.raises(IndexError, match="rows 4000..4000 of an array of 4000"):
        read_rows(z["scores"], [4000])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_scattered_rows_read_leave_no_page_of_the_file_mapped(mapped):
    """A fault maps 64 KiB around each row (fault-around); a worker reading a step's rows must not."""
    path, _ = mapped
    z = map_npz(path)
    rows = np.random.default_rng(1).integers(0, 4000, 64)
    read_rows(z["scores"], rows)
    read_range(z["scores"], 0, 4000)
    assert resident_kib(path) == 0
    z["scores"][rows]                                          # what indexing the map does
    assert resident_kib(path) > 64 * 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_mapped_strings_chunks_are_the_strings_in_order_and_map_no_page(tmp_path):
    """Tokenise-once walks every passage text of a training set: in chunks read from the file, none mapped."""
    texts = ["", "a", "héllo wörld", "x" * 5000, "", "last"] * 40
    encoded = [t.encode("utf-8") for t in texts]
    np.savez(tmp_path / "s.npz", t_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),
             t_offsets=np.cumsum([len(e) for e in encoded]).astype(np.int64))
    z = map_npz(tmp_path / "s.npz")
    strings = MappedStrings(z["t_utf8"], z["t_offsets"])
    for size in (1, 2, 5, 239, 240, 1000):
        chunks = list(strings.chunks(size))
        assert [s for chunk in chunks for s in chunk] == texts and max(map(len, chunks)) <= size
    assert resident_kib(tmp_path / "s.npz") == 0
    assert strings[3] == "x" * 5000                            # indexing decodes through the map, as before
