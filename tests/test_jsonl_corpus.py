"""trainables/data/jsonl_corpus.py: a BEIR corpus read by offset gives what the in-memory dict gave."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import re
from pathlib import Path

import pytest

from trainables.data import DataError, DictCorpus, load_data
from trainables.data.beir import corpus_fingerprint
from trainables.data.jsonl_corpus import JsonlCorpus, index_jsonl
from trainables.hashing import file_sha256


def dict_reference(path: Path) -> tuple[dict[str, str], int]:
    """What the BEIR loader built before the on-disk corpus: first passage per `_id`, title + " " + text."""
    texts: dict[str, str] = {}
    duplicates = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        doc_id = str(row["_id"])
        if doc_id in texts:
            duplicates += 1
            continue
        title, text = str(row.get("title") or ""), str(row.get("text") or "")
        texts[doc_id] = f"{title} {text}" if title.strip() else text
    return texts, duplicates


def write_messy_corpus(root: Path, n: int = 600, seed: int = 0) -> Path:
    """Repeated ids (the later passage differs), integer ids, titles blank or not, blank lines, non-ASCII
    text escaped and raw, ids of different widths: every case the index must keep as the dict did."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        row: dict = {"_id": rng.choice([f"d{rng.randrange(n // 2)}", str(rng.randrange(50)), f"long-id-{i:09d}"]),
                     "text": f"passage {i} café ☃"}
        if i % 3 == 0:
            row["title"] = f"Title {i}"
        elif i % 5 == 0:
            row["title"] = "   "
        if i % 7 == 0:
            row["_id"] = rng.randrange(50)
        lines.append(json.dumps(row, ensure_ascii=i % 2 == 0) + ("\n\n" if i % 11 == 0 else "\n"))
    root.mkdir(parents=True)
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n"
                                                for i in range(20)))
    (root / "qrels" / "test.tsv").write_text("".join(f"q{i}\td{rng.randrange(n)}\t1\n" for i in range(20)
                                                     for _ in range(3)))
    return root


@pytest.fixture(params=["scifact_ci", "dl19_sample", "messy"])
def beir_folder(request, sample_data, tmp_path) -> Path:
    if request.param == "messy":
        return write_messy_corpus(tmp_path / "messy")
    return sample_data / request.param


def test_same_passages_in_the_same_order_with_the_same_skips_and_fingerprint(beir_folder):
    texts, duplicates = dict_reference(beir_folder / "corpus.jsonl")
    data = load_data(f"beir:{beir_folder}")
    assert isinstance(data.corpus, JsonlCorpus)
    assert list(data.corpus) == list(texts.items())    # file order of each id's first line: rows of token ids
    assert len(data.corpus) == len(texts)
    ids = list(texts)
    random.Random(1).shuffle(ids)
    assert data.corpus.get_many(ids + ids[:3]) == [texts[d] for d in ids + ids[:3]]
    assert data.skipped.get("duplicate corpus _id", 0) == duplicates
    assert data.corpus_fingerprint == corpus_fingerprint(file_sha256(beir_folder / "corpus.jsonl"))
    judged = {d for graded in data.qrels.values() for d in graded}
    assert judged <= set(texts)


def test_the_messy_corpus_has_what_the_comparison_needs(tmp_path):
    texts, duplicates = dict_reference(write_messy_corpus(tmp_path / "m") / "corpus.jsonl")
    data = load_data(f"beir:{tmp_path / 'm'}")
    assert duplicates > 50 and any(t.startswith("Title") for t in texts.values())
    assert data.skipped["qrels docid not in corpus"] > 0     # qrels docids not in the corpus are dropped, counted
    assert "3" in data.corpus and "d0" not in data.corpus.get_many(["3"])


def test_a_missing_docid_raises_naming_the_file(tmp_path):
    root = write_messy_corpus(tmp_path / "m")
    corpus = load_data(f"beir:{root}").corpus
    for missing in ("no-such-doc", "long-id-0000000001-and-longer-than-every-id", "d0\0", ""):
        with pytest.raises(DataError, match=re.escape(f"{root / 'corpus.jsonl'}: unknown docid {missing!r}")):
            corpus.get_many([next(iter(corpus))[0], missing])
        assert missing not in corpus


def test_pickles_as_its_arrays_not_its_texts(sample_data):
    corpus = load_data(f"beir:{sample_data / 'scifact_ci'}").corpus
    text_bytes = sum(len(t.encode()) for _, t in corpus)
    payload = pickle.dumps(corpus)
    assert len(payload) < text_bytes / 20
    clone = pickle.loads(payload)
    assert list(clone) == list(corpus)
    last = list(corpus)[-1]
    assert clone.get_many([last[0]]) == [last[1]]


def test_an_edited_corpus_file_is_an_error_not_other_passages(tmp_path):
    root = write_messy_corpus(tmp_path / "m")
    corpus = load_data(f"beir:{root}").corpus
    with open(root / "corpus.jsonl", "a") as handle:
        handle.write(json.dumps({"_id": "new", "text": "appended"}) + "\n")
    with pytest.raises(DataError, match="changed after it was loaded"):
        list(corpus)
    with pytest.raises(DataError, match="changed after it was loaded"):
        pickle.loads(pickle.dumps(corpus)).get_many(["3"])


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    for body, message in ((b'{"_id": "a", "text": "x"}\n{"_id": \n', "corpus.jsonl:2: invalid JSON"),
                          (b'{"_id": "a"}\n\n{"text": "no id"}\n', "corpus.jsonl:3: expected a JSON object"),
                          (b'{"_id": "a", "text": "caf\xe9"}\n', r"corpus.jsonl:1: not UTF-8 text \(byte 0xe9"),
                          (b'\xef\xbb\xbf{"_id": "a", "text": "bom"}\n', "corpus.jsonl:1: invalid JSON"),
                          (b'{"_id": "a\\u0000", "text": "x"}\n', "corpus.jsonl:1: an '_id' that ends with a NUL")):
        path.write_bytes(body)
        with pytest.raises(DataError, match=message):
            index_jsonl(path)


def test_an_empty_corpus_and_one_without_a_final_newline(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n  \n")
    corpus, digest, duplicates = index_jsonl(path)
    assert (len(corpus), list(corpus), duplicates, digest) == (0, [], 0, file_sha256(path))
    assert "a" not in corpus
    path.write_bytes(b'{"_id": "a", "text": "one"}\n{"_id": "b", "title": "T", "text": "two"}')
    corpus, digest, _ = index_jsonl(path)
    assert list(corpus) == [("a", "one"), ("b", "T two")] and corpus.get_many(["b", "a"]) == ["T two", "one"]


def test_a_gzipped_corpus_is_read_into_memory_with_the_same_passages(tmp_path):
    root = write_messy_corpus(tmp_path / "m")
    plain = load_data(f"beir:{root}")
    passages = list(plain.corpus)
    (root / "corpus.jsonl").write_bytes(gzip.compress((root / "corpus.jsonl").read_bytes()))
    zipped = load_data(f"beir:{root}")
    assert isinstance(zipped.corpus, DictCorpus) and list(zipped.corpus) == passages
    assert zipped.skipped == plain.skipped and zipped.qrels == plain.qrels
    assert zipped.corpus_fingerprint != plain.corpus_fingerprint     # the file's bytes, as before


def test_a_forked_child_reads_through_its_own_descriptor(sample_data):
    corpus = load_data(f"beir:{sample_data / 'dl19_sample'}").corpus
    first = next(iter(corpus))
    assert corpus.get_many([first[0]]) == [first[1]]      # the parent's descriptor is open now
    pid = os.fork()
    if pid == 0:
        ok = corpus.get_many([first[0]]) == [first[1]] and corpus._fd is not None
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_doc_ids_by_position_draw_the_same_random_passages_as_the_list(tmp_path):
    from trainables.data.candidates import random_corpus_passages

    corpus = load_data(f"beir:{write_messy_corpus(tmp_path / 'm')}").corpus
    listed = [doc_id for doc_id, _ in corpus]
    view = corpus.doc_ids()
    assert len(view) == len(listed) and list(view) == listed and view[-1] == listed[-1]
    assert view[3:9] == listed[3:9]
    positives, pools = [[listed[0]], [listed[5], listed[6]]], [listed[1:4], []]
    assert random_corpus_passages(view, positives, pools, 7, seed=3) == \
        random_corpus_passages(listed, positives, pools, 7, seed=3)
