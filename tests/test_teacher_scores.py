"""Teacher scores and candidates read from files: every public layout, gzip or not, and the errors a user meets."""
from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from trainables.config import ConfigError, TeacherConfig
from trainables.data.candidates_file import read_candidates_file, read_hard_negatives
from trainables.data.runfile import read_run_file
from trainables.data.teacher_scores import read_teacher_scores, scores_for
from trainables.data.types import DataError

# The public layout: int ids (sentence-transformers' cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz).
SCORES = {1: {10: 7.5, 11: -3.25, 12: 0.5}, 2: {20: 1.0, 21: 2.0}, 3: {30: 9.0}}
QUERIES, PASSAGES = ["1", "2"], [["11", "10"], ["21", "20"]]
EXPECTED = [np.array([-3.25, 7.5], np.float32), np.array([2.0, 1.0], np.float32)]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _lines(layout: str) -> bytes:
    rows = [(q, p, s) for q, row in SCORES.items() for p, s in row.items()]
    if layout == "tsv":
        return ("qid\tpid\tscore\n" + "".join(f"{q}\t{p}\t{s}\n" for q, p, s in rows)).encode()
    return "".join(json.dumps({"qid": q, "pid": p, "score": s}) + "\n" for q, p, s in rows).encode()


@pytest.mark.parametrize("name", ["scores.pkl", "scores.pkl.gz", "scores.tsv", "scores.tsv.gz", "scores.jsonl",
                                  "scores.jsonl.gz"])
def test_teacher_scores_from_every_layout_gzip_or_not(tmp_path, name):
    layout = "pickle" if ".pkl" in name else name.split(".")[1]
    path = _write(tmp_path / name, pickle.dumps(SCORES) if layout == "pickle" else _lines(layout))
    got = scores_for(path, QUERIES, PASSAGES, allow_pickle=layout == "pickle")
    for row, expected in zip(got, EXPECTED):
        np.testing.assert_array_equal(row, expected)
        assert row.dtype == np.float32


def test_teacher_scores_keep_only_the_wanted_pairs(tmp_path):
    path = _write(tmp_path / "scores.tsv", _lines("tsv"))
    assert read_teacher_scores(path, {"1": ["10"], "9": ["1"]}) == {"1": {"10": 7.5}}


def test_missing_pairs_are_one_line_naming_how_many_and_an_example(tmp_path):
    path = _write(tmp_path / "scores.jsonl", _lines("jsonl"))
    with pytest.raises(DataError, match=r"2 of 4 \(query, passage\) pairs have no teacher score, e\.g\. "
                                        r"query '1' passage '99'") as error:
        scores_for(path, QUERIES, [["10", "99"], ["21", "98"]])
    assert "\n" not in str(error.value)


def test_a_pickle_is_read_only_with_the_explicit_opt_in(tmp_path):
    path = _write(tmp_path / "scores.pkl.gz", pickle.dumps(SCORES))
    with pytest.raises(DataError, match="unpickling runs any code"):
        scores_for(path, QUERIES, PASSAGES)
    with pytest.raises(ConfigError, match=r"teacher.allow_pickle: true if you trust its source"):
        from trainables.config import TrialConfig

        TrialConfig.from_dict({"teacher": {"scores_file": str(path)}})
    assert TeacherConfig(scores_file=str(path), allow_pickle=True).allow_pickle


def test_teacher_scores_file_errors_name_the_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.tsv", b"1\t10\t7.5\n1\t11\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 3 fields"):
        scores_for(bad, ["1"], [["10"]])
    bad = _write(tmp_path / "bad.jsonl", b'{"qid": 1, "pid": 10, "score": 1}\n{"qid": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected \{\"qid\""):
        scores_for(bad, ["1"], [["10"]])
    with pytest.raises(DataError, match=r"unknown teacher-scores layout"):
        scores_for(_write(tmp_path / "scores.csv", b""), ["1"], [["10"]])
    with pytest.raises(DataError, match="no such teacher scores file"):
        scores_for(tmp_path / "absent.tsv", ["1"], [["10"]])
    not_a_dict = _write(tmp_path / "list.pkl", pickle.dumps([1, 2]))
    with pytest.raises(DataError, match=r"expected a pickled \{qid"):
        scores_for(not_a_dict, ["1"], [["10"]], allow_pickle=True)


# ---- candidates files ------------------------------------------------------------------------------
HARD_NEGATIVES = [
    {"qid": 1, "pos": [10], "neg": {"bm25": [11, 10, 12, 13], "tas-b": [14, 11, 15]}},
    {"qid": 2, "pos": [20], "neg": {"bm25": [21], "tas-b": [22, 23]}},
]


@pytest.mark.parametrize("name", ["hard.jsonl", "hard.jsonl.gz"])
def test_hard_negative_jsonl_interleaves_systems_by_rank_without_positives(tmp_path, name):
    path = _write(tmp_path / name, "".join(json.dumps(r) + "\n" for r in HARD_NEGATIVES).encode())
    assert read_candidates_file(path).as_dict() == {"1": ["11", "14", "12", "15", "13"], "2": ["21", "22", "23"]}
    assert read_candidates_file(path, queries={"2"}, depth=2).as_dict() == {"2": ["21", "22"]}
    assert read_hard_negatives(path, systems=["tas-b"]).as_dict() == {"1": ["14", "11", "15"], "2": ["22", "23"]}
    with pytest.raises(DataError, match=r"none of data.candidates_systems \['bm26'\] is in the file \(it has: bm25, tas-b\)"):
        read_hard_negatives(path, systems=["bm26"])


def test_hard_negative_jsonl_errors_name_the_line(tmp_path):
    path = _write(tmp_path / "hard.jsonl", b'{"qid": 1, "pos": [], "neg": {}}\n{"qid": 2, "pos": [1]}\n')
    with pytest.raises(DataError, match=r"hard.jsonl:2: expected \{\"qid\""):
        read_candidates_file(path)


@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_trec_runs_as_candidates_gzip_or_not(tmp_path, name):
    path = _write(tmp_path / name, b"q1 Q0 d2 2 0.5 r\nq1 Q0 d1 1 0.9 r\nq2 Q0 d3 1 0.1 r\n")
    assert read_run_file(path)["q1"] == [("d1", 0.9), ("d2", 0.5)]
    assert read_candidates_file(path, queries={"q1"}).as_dict() == {"q1": ["d1", "d2"]}
    with pytest.raises(DataError, match="candidates_systems applies to a hard-negative JSONL"):
        read_candidates_file(path, systems=["bm25"])
