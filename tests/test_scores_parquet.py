"""Teacher scores as Parquet: `kd-study convert-scores` writes the public pickle once; studies read their pairs streamed."""
from __future__ import annotations

import gzip
import pickle
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from study.cli.verbs import main
from trainables.data.scores_parquet import _wanted_groups, convert_pickle, parquet_scores
from trainables.data.teacher_scores import read_teacher_scores, scores_for
from trainables.data.types import DataError

FILLER_PIDS = 250


def public_pickle(path: Path, scores: dict, total_pairs: int, seed: int = 0) -> int:
    """The public layout ({int qid: {int pid: float score}}, gzipped) holding `scores` plus filler queries
    up to `total_pairs` pairs (built with numpy, in seconds); returns the pairs written."""
    rng = np.random.default_rng(seed)
    published = dict(scores)
    held = sum(len(row) for row in published.values())
    first = max(published, default=0) + 1
    n_filler = max(0, -(-(total_pairs - held) // FILLER_PIDS))
    # distinct pids per query, spread over MS MARCO's 8.8M: one draw in each of FILLER_PIDS strata
    pids = (np.arange(FILLER_PIDS) * 35_000 + rng.integers(0, 35_000, size=(n_filler, FILLER_PIDS))).tolist()
    values = rng.normal(size=(n_filler, FILLER_PIDS)).tolist()
    for i in range(n_filler):
        published[first + i] = dict(zip(pids[i], values[i]))
    path.write_bytes(gzip.compress(pickle.dumps(published, protocol=pickle.HIGHEST_PROTOCOL), compresslevel=1))
    return sum(len(row) for row in published.values())


def convert(source: Path, target: Path) -> None:
    """`kd-study convert-scores SOURCE TARGET --trust-pickle`, as a user runs it."""
    assert main(["convert-scores", str(source), str(target), "--trust-pickle"]) == 0


def test_convert_scores_turns_a_million_pair_public_pickle_into_parquet_read_streamed(tmp_path, capsys):
    wanted = {7: {11: 0.5, 12: -1.25}, 8: {11: 3.0}}
    pairs = public_pickle(tmp_path / "ce.pkl.gz", wanted, 1_000_000)
    assert pairs >= 1_000_000

    started = time.perf_counter()
    convert(tmp_path / "ce.pkl.gz", tmp_path / "ce.parquet")
    assert time.perf_counter() - started < 20
    assert "teacher scores written to" in capsys.readouterr().out
    file = pq.ParquetFile(tmp_path / "ce.parquet")
    assert file.metadata.num_rows == pairs and file.num_row_groups == 1
    assert [str(file.schema_arrow.field(c).type) for c in ("qid", "pid", "score")] == ["int64", "int64", "float"]

    scores = scores_for(tmp_path / "ce.parquet", ["7", "8"], [["12", "11"], ["11"]])
    assert [s.tolist() for s in scores] == [[-1.25, 0.5], [3.0]]
    with pytest.raises(DataError, match=r"1 of 2 \(query, passage\) pairs have no teacher score, e.g. query '8' passage '13'"):
        scores_for(tmp_path / "ce.parquet", ["8"], [["11", "13"]])
    assert read_teacher_scores(tmp_path / "ce.parquet", {"7": ["11", "99"]}) == {"7": {"11": 0.5}}


def test_convert_scores_needs_the_trust_flag_and_names_bad_inputs(tmp_path, capsys):
    public_pickle(tmp_path / "ce.pkl", {1: {2: 0.5}}, 1)
    assert main(["convert-scores", str(tmp_path / "ce.pkl"), str(tmp_path / "ce.parquet")]) == 2
    assert "pass --trust-pickle only for a file from a trusted source" in capsys.readouterr().err
    assert not (tmp_path / "ce.parquet").exists()
    assert main(["convert-scores", str(tmp_path / "ce.pkl"), str(tmp_path / "ce.tsv"), "--trust-pickle"]) == 2
    assert "must be named .parquet" in capsys.readouterr().err
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({1: {2: "high"}}))
    assert main(["convert-scores", str(tmp_path / "bad.pkl"), str(tmp_path / "bad.parquet"), "--trust-pickle"]) == 2
    assert "query 1: every score must be a number" in capsys.readouterr().err


def test_string_ids_and_row_groups_without_wanted_queries(tmp_path):
    """Ids that are not plain ints stay strings; row groups whose qid range has no wanted query are skipped."""
    (tmp_path / "s.pkl").write_bytes(pickle.dumps({"q-a": {"d1": 1.0, "d2": 2.0}, "q-b": {"d1": 3.0}, "q-c": {"007": 4.0}}))
    assert convert_pickle(tmp_path / "s.pkl", tmp_path / "s.parquet", trust_pickle=True, rows_per_group=2) == 4
    assert pq.ParquetFile(tmp_path / "s.parquet").num_row_groups == 2
    flat = parquet_scores(tmp_path / "s.parquet", ["q-c", "q-a"], [["007", "7"], ["d2"]])
    np.testing.assert_array_equal(flat, [4.0, np.nan, 2.0])

    (tmp_path / "i.pkl").write_bytes(pickle.dumps({1: {5: 1.0}, 2: {5: 2.0}, 3: {5: 3.0}}))
    convert_pickle(tmp_path / "i.pkl", tmp_path / "i.parquet", trust_pickle=True, rows_per_group=1)
    np.testing.assert_array_equal(parquet_scores(tmp_path / "i.parquet", ["3", "1"], [["5"], ["5"]]), [3.0, 1.0])
    assert list(_wanted_groups(pq.ParquetFile(tmp_path / "i.parquet"), np.array([1, 3]))) == [0, 2]
    # "05" is not the int 5: such ids are compared as strings, as everywhere else
    assert np.isnan(parquet_scores(tmp_path / "i.parquet", ["3"], [["05"]])).all()
