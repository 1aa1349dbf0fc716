"""trainables/data/training_set.py: the cached TrainingSet round-trips without pickle, and partial files are never used."""
from __future__ import annotations

import numpy as np
import pytest

from trainables.data.training_set import TrainingSet, is_complete


def small_set() -> TrainingSet:
    nan = np.nan
    return TrainingSet(
        query_ids=["q1", "q-é"], query_texts=["what is ß?", ""],
        doc_ids=["d1", "d2", "d3"], doc_texts=["ünïcode ✓", "", "plain"],
        positive_doc_idx=np.array([[0], [1]]), pool_doc_idx=np.array([[1, 2], [0, -1]]),
        teacher_positive_scores=np.array([[0.9], [0.8]], np.float32),
        teacher_pool_scores=np.array([[0.1, 0.2], [0.3, nan]], np.float32),
        student_positive_scores=np.array([[0.5], [0.4]], np.float32),
        student_pool_scores=np.array([[0.1, 0.0], [0.2, nan]], np.float32),
    )


def test_training_set_round_trips_and_loads_without_pickle(tmp_path):
    path = tmp_path / "ts.npz"
    small_set().save(path)
    assert is_complete(path)
    with np.load(path, allow_pickle=False) as z:  # no object arrays: nothing in the file can run code
        assert all(z[name].dtype != object for name in z.files)
    for mapped in (True, False):
        back = TrainingSet.load(path, mapped=mapped)
        for name in ("query_ids", "query_texts", "doc_ids", "doc_texts"):
            assert getattr(back, name) == getattr(small_set(), name)
            assert list(getattr(back, name)) == getattr(small_set(), name)
        np.testing.assert_array_equal(back.pool_doc_idx, small_set().pool_doc_idx)
        np.testing.assert_array_equal(back.teacher_pool_scores, small_set().teacher_pool_scores)
        assert isinstance(back.pool_doc_idx, np.memmap) == mapped
    assert TrainingSet.load(path).doc_texts[0] == "ünïcode ✓" and TrainingSet.load(path).doc_texts[-1] == "plain"
    assert not list(tmp_path.glob(".*tmp*")), "temporary files are cleaned up"


def test_a_truncated_training_set_is_refused(tmp_path):
    path = tmp_path / "ts.npz"
    small_set().save(path)
    path.write_bytes(path.read_bytes()[:-10])
    assert not is_complete(path)
    with pytest.raises(ValueError, match="missing or corrupt training set"):
        TrainingSet.load(path)


def test_loads_check_a_quick_digest_and_the_full_hash_is_recorded_at_build(tmp_path):
    """Size and both ends are checked on load (a truncated or rewritten end is refused); the full sha256 is the
    sidecar's first line, what token ids are addressed by, and `full=True` still recomputes it."""
    from trainables.hashing import file_sha256
    from trainables.data.training_set import full_digest

    path = tmp_path / "ts.npz"
    small_set().save(path)
    assert full_digest(path) == file_sha256(path) and is_complete(path, full=True)
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF                       # the zip directory at the end: sizes and CRCs of the members
    path.write_bytes(bytes(data))
    assert not is_complete(path) and not is_complete(path, full=True)
