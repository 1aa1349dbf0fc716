"""trainables/data: BEIR folders, ir_datasets (offline), quickstart, run files, subsets — on real data."""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import subprocess
import sys
import zipfile
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.config import DatasetRef
from trainables.data import DataError, DictCorpus, load_data, read_run_file, subset, training_queries
from trainables.data.quickstart import MAX_PASSAGE_CHARS, ensure_cached, load_quickstart
from trainables.data.subset import reservoir_sample


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: str, split: str = "test") -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (root / "qrels" / f"{split}.tsv").write_text(qrels)
    return root


# ---- beir:<folder> on the shared collections ----------------------------------------------------
def test_scifact_has_the_documented_sizes_per_split(shared_data):
    folder = shared_data / "scifact"
    # README: 5,183 docs; 809 train / 300 test queries; train.tsv 919, test.tsv 339 judgments (+ header)
    assert count_lines(folder / "corpus.jsonl") == 5183
    assert count_lines(folder / "qrels" / "train.tsv") - 1 == 919
    assert count_lines(folder / "qrels" / "test.tsv") - 1 == 339
    test = load_data(f"beir:{folder}", "test")
    train = load_data(DatasetRef(id=f"beir:{folder}", split="train"))
    assert len(test.corpus) == len(train.corpus) == 5183
    assert (len(test.queries), sum(map(len, test.qrels.values()))) == (300, 339)
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)
    assert set(test.queries) == set(test.qrels) and not set(test.queries) & set(train.queries)
    assert test.skipped == {} and test.name == "scifact/test"
    assert test.fingerprint != train.fingerprint


def test_beir_passage_is_title_space_text(sample_data):
    folder = sample_data / "scifact_ci"
    row = json.loads((folder / "corpus.jsonl").open().readline())
    data = load_data(f"beir:{folder}")
    assert data.corpus[row["_id"]] == f"{row['title']} {row['text']}"
    with pytest.raises(DataError, match="unknown docid 'no-such-doc'"):
        data.corpus.get_many(["no-such-doc"])


def test_scifact_ci_and_dl19_sample_load_with_graded_qrels(sample_data):
    ci = load_data(DatasetRef(id=f"beir:{sample_data / 'scifact_ci'}"))
    assert (len(ci.corpus), len(ci.queries), sum(map(len, ci.qrels.values()))) == (1000, 50, 60)
    train = load_data(DatasetRef(id=f"beir:{sample_data / 'scifact_ci'}", split="train"))
    assert len(train.queries) == 189 and not set(train.queries) & set(ci.queries)
    dl = load_data(f"beir:{sample_data / 'dl19_sample'}")
    # 5 queries in the file, 4 judged; the qrels file has no header line
    assert (len(dl.corpus), len(dl.queries), sum(map(len, dl.qrels.values()))) == (296, 4, 296)
    assert {g for graded in dl.qrels.values() for g in graded.values()} == {1, 2, 3}
    qid = next(iter(dl.qrels))
    grades = [dl.qrels[qid][d] for d in dl.positives(qid)]
    assert grades == sorted(grades, reverse=True) and len(grades) == len(dl.qrels[qid])
    assert len(dl.positives(qid, min_grade=2)) == sum(g >= 2 for g in dl.qrels[qid].values())


def test_beir_bad_input_names_the_path_or_line(tmp_path, sample_data):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "absent"))):
        load_data(f"beir:{tmp_path / 'absent'}")
    with pytest.raises(DataError, match=r"qrels/dev\.tsv.*splits here: test, train"):
        load_data(f"beir:{sample_data / 'scifact_ci'}", "dev")
    docs = [{"_id": "d1", "title": "", "text": "one"}]
    header = "query-id\tcorpus-id\tscore\n"
    bad = write_beir(tmp_path / "bad", docs, [{"_id": "q1", "text": "q"}], header + "q1\td1\t1\nq1\td1\thigh\n")
    with pytest.raises(DataError, match=r"bad/qrels/test\.tsv:3: score must be an integer, got 'high'"):
        load_data(f"beir:{bad}")
    short = write_beir(tmp_path / "short", docs, [{"_id": "q1", "text": "q"}], "q1\td1\n")
    with pytest.raises(DataError, match=r"short/qrels/test\.tsv:1: expected 3 fields"):
        load_data(f"beir:{short}")
    broken = write_beir(tmp_path / "broken", docs, [{"_id": "q1", "text": "q"}], "q1 d1 1\n")
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n{"_id": \n')
    with pytest.raises(DataError, match=r"broken/queries\.jsonl:2: invalid JSON"):
        load_data(f"beir:{broken}")


def test_beir_skips_are_counted_not_fatal(tmp_path):
    corpus = [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "text": "two"}]
    queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "  "}, {"_id": "q3", "text": "third"}]
    # q1: one judged doc missing from the corpus; q2: no text; q3: only a missing doc; q4: not in queries.jsonl
    qrels = "q1 d1 1\nq1 gone 1\nq2 d2 1\nq3 gone2 2\nq4 d2 1\n"
    data = load_data(f"beir:{write_beir(tmp_path / 'c', corpus, queries, qrels)}")
    assert data.queries == {"q1": "first"} and data.qrels == {"q1": {"d1": 1}}
    assert data.corpus.get_many(["d1", "d2"]) == ["T one", "two"]
    assert data.skipped == {"qrels docid not in corpus": 2, "judged query without text": 2,
                            "query with no judged doc in corpus": 1}


def test_beir_fingerprint_follows_content_not_path_or_mtime(tmp_path):
    """A re-provisioned or copied folder (new path, new mtimes) keeps its caches; an edit does not."""
    corpus = [{"_id": "d1", "text": "one"}, {"_id": "d2", "text": "two"}]
    queries = [{"_id": "q1", "text": "first"}]
    first = write_beir(tmp_path / "a", corpus, queries, "q1 d1 1\n")
    copy = write_beir(tmp_path / "b", corpus, queries, "q1 d1 1\n")
    os.utime(copy / "corpus.jsonl", ns=(1, 1))
    edited = write_beir(tmp_path / "c", corpus[:1] + [{"_id": "d2", "text": "two!"}], queries, "q1 d1 1\n")
    fingerprints = [load_data(f"beir:{folder}").fingerprint for folder in (first, copy, edited)]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_corpus_fingerprint_is_shared_by_the_sets_that_search_the_same_passages(tmp_path, sample_data):
    """Splits, hold-outs and copies of one BEIR folder share it; another corpus or a different sub-corpus does not."""
    root = sample_data / "scifact_ci"
    test = load_data(f"beir:{root}", "test")
    train = load_data(f"beir:{root}", "train")
    held = load_data(DatasetRef(id=f"beir:{root}", split="train", holdout=20, part="holdout"))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (copy / name).write_bytes((root / name).read_bytes())
    (copy / "qrels").mkdir()
    (copy / "qrels" / "test.tsv").write_bytes((root / "qrels" / "test.tsv").read_bytes())
    shared = {test.corpus_fingerprint, train.corpus_fingerprint, held.corpus_fingerprint,
              load_data(f"beir:{copy}", "test").corpus_fingerprint}
    assert len(shared) == 1 and "" not in shared
    assert len({test.fingerprint, train.fingerprint, held.fingerprint}) == 3   # the sets themselves differ
    other = load_data(f"beir:{sample_data / 'dl19_sample'}", "test")
    assert other.corpus_fingerprint not in shared
    # a sub-corpus is its judged docs + seeded distractors: shared only when the same passages were drawn
    assert subset(test, 30, 0).corpus_fingerprint == subset(test, 30, 0).corpus_fingerprint
    assert len({subset(test, 30, 0).corpus_fingerprint, subset(test, 30, 1).corpus_fingerprint,
                subset(held, 30, 0).corpus_fingerprint, test.corpus_fingerprint}) == 4


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"unknown dataset id 'hf:scifact'.*'quickstart'.*'beir:<folder>'.*'irds:"):
        load_data("hf:scifact")
    with pytest.raises(DataError, match="unknown dataset id 'beir:'"):
        load_data("beir:")


def test_training_queries_keep_queries_with_a_positive(tmp_path, sample_data):
    dl = load_data(f"beir:{sample_data / 'dl19_sample'}")
    queries = training_queries(dl)
    assert len(queries) == 4 and all(positives == dl.positives(qid) for qid, _, positives in queries)
    corpus = [{"_id": "d1", "text": "one"}, {"_id": "d2", "text": "two"}]
    queries_rows = [{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}]
    folder = write_beir(tmp_path / "g", corpus, queries_rows, "q1 d1 0\nq1 d2 0\nq2 d1 0\nq2 d2 2\n")
    data = load_data(f"beir:{folder}")
    assert training_queries(data) == [("q2", "b", ["d2"])]


# ---- irds:<id>, the real ir_datasets code path, offline ------------------------------------------
@pytest.fixture
def irds_home(tmp_path, monkeypatch):
    """An empty IR_DATASETS_HOME with ir_datasets freshly imported against it.

    ir_datasets reads IR_DATASETS_HOME when it is first imported: each dataset module's `_init()`
    binds its download and cache paths through `ir_datasets.util.home_path()` at import (only
    `docs_store()` calls it later). Setting the variable is therefore not enough once this process
    has imported it: the modules are dropped from sys.modules, re-imported (lazily, by
    trainables.data.irds) under the temporary home, and the originals are restored afterwards.
    """
    home = tmp_path / "ir_datasets_home"
    home.mkdir()
    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    ours = lambda name: name == "ir_datasets" or name.startswith("ir_datasets.")  # noqa: E731
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    yield home
    for name in [name for name in sys.modules if ours(name)]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_irds_beir_scifact_test_offline_streams_the_corpus(irds_home, sample_data):
    # ir_datasets cannot download here. Its beir module looks for the archive it would download at
    # $IR_DATASETS_HOME/beir/scifact/source.zip (downloads.json cache_path; no checksum of a present
    # file) and reads scifact/{corpus,queries}.jsonl and scifact/qrels/<split>.tsv inside it, so we
    # pre-populate exactly that file, here with the shipped sample of the same BEIR release.
    archive = irds_home / "beir" / "scifact" / "source.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
            handle.write(sample_data / "scifact_ci" / name, f"scifact/{name}")

    data = load_data("irds:beir/scifact/test", split="ignored-for-irds")
    assert data.name == "beir/scifact/test" and data.skipped == {}
    assert (len(data.queries), sum(map(len, data.qrels.values()))) == (50, 60)
    assert not isinstance(data.corpus, DictCorpus)
    first = list(islice(data.corpus, 3))
    assert len(first) == 3 and all(isinstance(d, str) and t for d, t in first)
    assert sum(1 for _ in data.corpus) == 1000
    # the same collection through the BEIR reader: identical queries, qrels and passage texts
    beir = load_data(f"beir:{sample_data / 'scifact_ci'}", "test")
    assert data.queries == beir.queries and data.qrels == beir.qrels
    judged = sorted({d for graded in data.qrels.values() for d in graded})
    assert data.corpus.get_many(judged) == beir.corpus.get_many(judged)
    with pytest.raises(DataError, match="unknown docid 'no-such-doc'"):
        data.corpus.get_many(["no-such-doc"])
    # a streamed corpus pickles as its id (Ray workers reopen it), not as 1,000 passages
    assert len(pickle.dumps(data.corpus)) < 500 and sum(1 for _ in pickle.loads(pickle.dumps(data.corpus))) == 1000
    small = subset(data, 40, seed=0)
    assert set(judged) <= {d for d, _ in small.corpus} and len(small.corpus) == len(judged) + 40
    # its train split reads the same docs (ir_datasets' docs_parent_id): an evaluation encodes them once
    assert load_data("irds:beir/scifact/train").corpus_fingerprint == data.corpus_fingerprint != ""


def test_irds_unknown_id_and_split_less_id(irds_home):
    with pytest.raises(DataError, match=r"^unknown ir_datasets id 'no-such/dataset'$"):
        load_data("irds:no-such/dataset")
    with pytest.raises(DataError, match="irds:beir/scifact: this ir_datasets id has no qrels"):
        load_data("irds:beir/scifact")


def test_irds_download_failure_is_one_line_naming_the_home(irds_home, monkeypatch):
    # no archive in the empty home: ir_datasets tries to download. A proxy that refuses connections
    # makes that fail at once and never touches the network, wherever the test runs.
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("IR_DATASETS_DL_TRIES", "1")
    with pytest.raises(DataError, match=rf"IR_DATASETS_HOME={re.escape(str(irds_home))}") as caught:
        load_data("irds:beir/scifact/test")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("irds:beir/scifact/test: could not read")


# ---- run files ------------------------------------------------------------------------------------
def test_read_run_file_returns_rank_order(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d2 2 9.5 bm25\nq1 Q0 d1 1 10.0 bm25\n\nq2 Q0 d7 1 3 bm25\nq1 Q0 d3 3 1e-2 bm25\n")
    assert read_run_file(run) == {"q1": [("d1", 10.0), ("d2", 9.5), ("d3", 0.01)], "q2": [("d7", 3.0)]}


def test_read_run_file_errors_name_file_and_line(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 1.0 tag\nq1 d2 2 0.5 tag\n")
    with pytest.raises(DataError, match=r"run\.trec:2: expected 6 fields 'qid Q0 docid rank score tag', got 5"):
        read_run_file(run)
    run.write_text("q1 Q0 d1 first 1.0 tag\n")
    with pytest.raises(DataError, match=r"run\.trec:1: rank must be an integer"):
        read_run_file(run)
    run.write_text("q1 Q0 d1 1 1.0 tag\nq1 Q0 d1 2 0.5 tag\n")
    with pytest.raises(DataError, match=r"run\.trec:2: docid 'd1' listed twice"):
        read_run_file(run)
    with pytest.raises(DataError, match="no such run file"):
        read_run_file(tmp_path / "absent.trec")


# ---- subset ---------------------------------------------------------------------------------------
def test_subset_keeps_every_judged_doc_and_is_seed_deterministic(sample_data):
    data = load_data(f"beir:{sample_data / 'scifact_ci'}")
    judged = {d for graded in data.qrels.values() for d in graded}
    small = subset(data, 100, seed=7)
    ids = [d for d, _ in small.corpus]
    assert judged <= set(ids) and len(ids) == len(set(ids)) == len(judged) + 100
    assert all(small.corpus[d] == data.corpus[d] for d in ids)
    assert small.queries == data.queries and small.qrels == data.qrels
    assert small.name == "scifact_ci/test-subset100"
    assert ids == [d for d, _ in subset(data, 100, seed=7).corpus]
    assert set(ids) != {d for d, _ in subset(data, 100, seed=8).corpus}
    assert len({small.fingerprint, subset(data, 100, 8).fingerprint, subset(data, 50, 7).fingerprint,
                data.fingerprint}) == 4
    assert len(subset(data, 10**6, seed=0).corpus) == len(data.corpus)
    assert len(subset(data, 0, seed=0).corpus) == len(judged)


def test_holdout_splits_a_training_split_into_disjoint_train_and_validation_queries(sample_data):
    root = sample_data / "scifact_ci"
    held = load_data(DatasetRef(id=f"beir:{root}", split="train", holdout=100, part="holdout"))
    rest = load_data(DatasetRef(id=f"beir:{root}", split="train", holdout=100))
    full = load_data(DatasetRef(id=f"beir:{root}", split="train"))
    assert len(held.queries) == 100 and all(held.positives(q) for q in held.queries)
    assert not set(held.queries) & set(rest.queries)
    assert set(held.queries) | set(rest.queries) == set(full.queries)
    assert set(held.qrels) <= set(held.queries) and set(rest.qrels) <= set(rest.queries)
    again = load_data(DatasetRef(id=f"beir:{root}", split="train", holdout=100, part="holdout"))
    assert again.queries == held.queries and again.fingerprint == held.fingerprint
    assert len({held.fingerprint, rest.fingerprint, full.fingerprint}) == 3
    with pytest.raises(ValueError, match="leaves no query to train on"):
        load_data(DatasetRef(id=f"beir:{root}", split="train", holdout=10_000, part="holdout"))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(0, 50), seed=st.integers(0, 2**32))
def test_reservoir_sample_draws_k_distinct_items_of_the_stream(n, k, seed):
    items = [(f"d{i}", f"text {i}") for i in range(n)]
    sample = reservoir_sample(iter(items), k, random.Random(seed))
    positions = [p for p, _, _ in sample]
    assert len(sample) == min(k, n) and len(set(positions)) == len(positions)
    assert all(items[p] == (d, t) for p, d, t in sample)


def test_reservoir_sample_is_roughly_uniform():
    counts = [0] * 20
    for seed in range(2000):
        for position, _, _ in reservoir_sample(((str(i), "") for i in range(20)), 5, random.Random(seed)):
            counts[position] += 1
    # each position is kept with probability 5/20: 500 expected per position, sd ~19
    assert all(400 < c < 600 for c in counts)


# ---- quickstart -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def quickstart_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kd_study_cache")


@pytest.mark.parametrize("source, low, high", [("quickstart", 1500, 4000), ("quickstart-numpy", 500, 1500)])
def test_quickstart_splits_sizes_and_queries(quickstart_cache, source, low, high):
    train = load_quickstart(source, "train", quickstart_cache)
    test = load_quickstart(source, "test", quickstart_cache)
    n = len(train.queries) + len(test.queries)
    assert low <= n <= high
    assert len(test.queries) == round(0.2 * n) and not set(train.queries) & set(test.queries)
    assert len(train.corpus) == len(test.corpus) == n  # the corpus is every passage of both splits
    assert train.fingerprint != test.fingerprint
    assert train.corpus_fingerprint == test.corpus_fingerprint != ""   # one corpus: encoded once per evaluation
    for data in (train, test):
        assert data.qrels == {qid: {qid: 1} for qid in data.queries}
        for api, query in data.queries.items():
            name = api.rsplit(".", 1)[-1]
            assert not re.search(rf"\b{re.escape(name)}\b", query, re.IGNORECASE), (api, query)
            assert len(query.split()) >= 3
    passages = [text for _, text in train.corpus]
    assert all(0 < len(p) <= MAX_PASSAGE_CHARS for p in passages) and len(set(passages)) == n
    assert len({q.lower() for q in [*train.queries.values(), *test.queries.values()]}) == n


def test_quickstart_build_is_deterministic_across_processes(quickstart_cache, tmp_path):
    # a fresh interpreter (different imported modules, hash seed) must produce the same bytes
    script = ("import sys; from trainables.data.quickstart import ensure_cached; "
              "[ensure_cached(s, sys.argv[1]) for s in ('quickstart', 'quickstart-numpy')]")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120,
                   env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    for source in ("quickstart", "quickstart-numpy"):
        here = ensure_cached(source, quickstart_cache)
        there = ensure_cached(source, tmp_path)
        assert here.name == there.name and here.read_bytes() == there.read_bytes()
        assert load_quickstart(source, "test", quickstart_cache).fingerprint == \
            load_quickstart(source, "test", tmp_path).fingerprint


def test_quickstart_through_load_data_uses_kd_study_cache(quickstart_cache, monkeypatch):
    monkeypatch.setenv("KD_STUDY_CACHE", str(quickstart_cache))
    data = load_data(DatasetRef(id="quickstart", split="train"))
    cached = ensure_cached("quickstart", quickstart_cache)
    assert cached.parent == quickstart_cache / "quickstart" and data.name == "quickstart/train"
    assert data.queries == load_quickstart("quickstart", "train", quickstart_cache).queries
    with pytest.raises(DataError, match=r"quickstart: unknown split 'dev'"):
        load_data("quickstart", "dev")


def test_quickstart_rebuilds_a_corrupt_cache_file(tmp_path):
    path = ensure_cached("quickstart-numpy", tmp_path)
    good = path.read_bytes()
    path.write_text('{"id": "x", "split": "tr')
    assert ensure_cached("quickstart-numpy", tmp_path).read_bytes() == good
    assert not list(path.parent.glob("*.tmp"))


# ---- checking every set a trial touches, before the work ----------------------------------------
def _broken_sets(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name → (dataset id for eval.dev, the message check_datasets must give)."""
    docs = [{"_id": "d1", "title": "", "text": "one"}, {"_id": "d2", "text": "two"}]
    queries = [{"_id": "q1", "text": "first"}]
    corrupt = write_beir(tmp_path / "corrupt", docs, queries, "q1 d1 1\n")
    with (corrupt / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d3", "text": \n')
    absent_docs = write_beir(tmp_path / "absent_docs", docs, queries, "q1 gone 1\n")
    no_queries = write_beir(tmp_path / "no_queries", docs, queries, "q1 d1 1\n")
    (no_queries / "queries.jsonl").unlink()
    return {
        "missing folder": (f"beir:{tmp_path / 'nowhere'}", r"eval\.dev: beir:.*nowhere: no such folder"),
        "corrupt corpus line": (f"beir:{corrupt}", r"eval\.dev: .*corrupt/corpus\.jsonl:3: invalid JSON"),
        "qrels naming absent docs": (f"beir:{absent_docs}", r"eval\.dev: absent_docs/test: no query has a positive"),
        "missing queries.jsonl": (f"beir:{no_queries}", r"eval\.dev: beir:.*no such file .*queries\.jsonl"),
        "unknown irds id": ("irds:not/a/dataset", r"eval\.dev: unknown ir_datasets id 'not/a/dataset'"),
    }


@pytest.mark.parametrize("case", ["missing folder", "corrupt corpus line", "qrels naming absent docs",
                                  "missing queries.jsonl", "unknown irds id"])
def test_check_datasets_names_the_broken_evaluation_set(tmp_path, sample_data, case):
    from trainables.config import TrialConfig
    from trainables.data.check import check_datasets

    dataset_id, message = _broken_sets(tmp_path)[case]
    cfg = TrialConfig.from_dict({"data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "train"}},
                                 "eval": {"dev": {"id": dataset_id, "split": "test"}}})
    with pytest.raises(DataError, match=message) as caught:
        check_datasets(cfg, source="trial.yaml")
    assert str(caught.value).startswith("trial.yaml: ") and "\n" not in str(caught.value)


def test_a_label_that_is_not_a_name_fails_when_the_config_loads(tmp_path):
    """The label becomes metric keys and artifact paths: the one name rule, before any data is read."""
    from trainables.config import ConfigError, TrialConfig

    with pytest.raises(ConfigError, match=r"eval\.dev: the label 'scifact\(v2\)' derived from id .* give the set a `name`"):
        TrialConfig.from_dict({"eval": {"dev": {"id": f"beir:{tmp_path / 'scifact(v2)'}"}}})
    with pytest.raises(ConfigError, match=r"eval\.beir\.0\.name: expected letters.*got '\.\./\.\./x'"):
        TrialConfig.from_dict({"eval": {"beir": [{"id": "quickstart-numpy", "name": "../../x"}]}})


def test_check_datasets_returns_the_training_data_and_a_line_per_set(sample_data):
    from trainables.config import TrialConfig
    from trainables.data.check import check_datasets

    cfg = TrialConfig.from_dict({
        "data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "train"}},
        "eval": {"dev": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"},
                 "dl": [{"id": f"beir:{sample_data / 'dl19_sample'}", "split": "test"}], "beir": []}})
    train, checked = check_datasets(cfg)
    assert train.name == "scifact_ci/train" and len(train.queries) == 189
    assert [(c.role, c.queries, c.docs) for c in checked] == [
        ("data.train", 189, 1000), ("eval.dev", 50, 1000), ("eval.dl[0]", 4, 296)]
