"""`beir:<folder>`: a collection in the BEIR layout on local disk.

Layout: `corpus.jsonl` ({"_id", "title", "text"}), `queries.jsonl` ({"_id", "text"}) and
`qrels/<split>.tsv` (query-id, corpus-id, integer score; tab- or space-separated; the header line
`query-id corpus-id score` is optional). Passage text is `title + " " + text` when the title is
non-empty, else `text`. Only the queries judged in the split's qrels belong to the split
(queries.jsonl holds the queries of every split).

Bad input:
- a missing folder or file, a line that is not JSON or has no `_id`, a qrels line that does not
  parse: `DataError` naming the path (and `file:line`).
- documented, counted and logged skips (`RetrievalData.skipped`, reason → count), because real
  collections have them and one bad judgment should not stop a study:
  `qrels docid not in corpus` (that judgment is dropped), `judged query without text` (the query
  is absent from queries.jsonl or its text is empty: dropped with its judgments),
  `query with no judged doc in corpus` (every judgment of the query was dropped), and
  `duplicate corpus _id` (the first passage is kept).

The corpus is never held as Python strings (`jsonl_corpus.JsonlCorpus`): one pass checks and hashes
corpus.jsonl and records each passage's docid and byte offset; passages are read back by offset. A
gzipped corpus.jsonl has no offsets to read at, so it is read into memory (`DictCorpus`):
decompress a large one.

The fingerprint is a sha256 over the split and the contents of the corpus, queries and qrels files:
not their path or mtime, so a re-provisioned or copied folder keeps its cache (the files are read
in full anyway: the corpus's indexing pass hashes the bytes it reads). The corpus fingerprint hashes
corpus.jsonl alone, so every split of a folder shares it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainables.data.jsonl_corpus import beir_row, index_jsonl, passage_text
from trainables.data.textfile import is_gzip, jsonl_records, text_lines
from trainables.data.types import Corpus, DataError, DictCorpus, RetrievalData
from trainables.hashing import file_sha256

log = logging.getLogger(__name__)

QRELS_HEADER = ("query-id", "corpus-id", "score")


def load_beir(folder: str | Path, split: str, label: str | None = None) -> RetrievalData:
    """The `split` of the BEIR folder: corpus read on disk by offset, queries judged in `qrels/<split>.tsv`."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"beir:{folder}: no such folder {root}")
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path):
        if not path.is_file():
            raise DataError(f"beir:{folder}: no such file {path}")
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DataError(f"beir:{folder}: no such file {qrels_path} (splits here: {', '.join(available) or 'none'})")

    skipped: Counter[str] = Counter()
    qrels = read_qrels(qrels_path)
    corpus, corpus_digest = _open_corpus(corpus_path, skipped)
    all_queries = {_id: str(row.get("text") or "") for _id, row in _read_jsonl(queries_path)}

    queries: dict[str, str] = {}
    kept_qrels: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        text = all_queries.get(qid, "")
        if not text.strip():
            skipped["judged query without text"] += 1
            continue
        in_corpus = {doc_id: grade for doc_id, grade in judged.items() if doc_id in corpus}
        skipped["qrels docid not in corpus"] += len(judged) - len(in_corpus)
        if not in_corpus:
            skipped["query with no judged doc in corpus"] += 1
            continue
        queries[qid] = text
        kept_qrels[qid] = in_corpus

    name = f"{label or root.name}/{split}"
    skips = {reason: count for reason, count in skipped.items() if count}
    for reason, count in skips.items():
        log.warning("%s: skipped %d (%s)", name, count, reason)
    digests = [corpus_digest, file_sha256(queries_path), file_sha256(qrels_path)]
    return RetrievalData(name=name, corpus=corpus, queries=queries,
                         qrels=kept_qrels, fingerprint=fingerprint(split, digests), skipped=skips,
                         corpus_fingerprint=corpus_fingerprint(digests[0]))


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qid → docid → grade from a BEIR qrels TSV; a line that does not parse raises `file:line` DataError."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in text_lines(path, "qrels file"):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and tuple(f.lower() for f in fields) == QRELS_HEADER:
            continue
        if len(fields) != 3:
            raise DataError(f"{path}:{number}: expected 3 fields 'query-id corpus-id score', got {len(fields)}: "
                            f"{line.strip()!r}")
        qid, doc_id, score = fields
        try:
            grade = int(score)
        except ValueError:
            raise DataError(f"{path}:{number}: score must be an integer, got {score!r}") from None
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def fingerprint(split: str, file_digests: list[str]) -> str:
    """sha256 over (split, sha256 of the corpus, queries and qrels files): content, not path or mtime."""
    return hashlib.sha256(json.dumps(["beir", split, *file_digests]).encode()).hexdigest()


def corpus_fingerprint(corpus_digest: str) -> str:
    """sha256 over the corpus file's sha256: the same for every split of the folder (and any copy of it)."""
    return hashlib.sha256(json.dumps(["beir-corpus", corpus_digest]).encode()).hexdigest()


def _open_corpus(path: Path, skipped: Counter[str]) -> tuple[Corpus, str]:
    """(the corpus, the sha256 of corpus.jsonl's bytes): indexed on disk in one pass that also hashes it;
    a gzipped file (no offsets to read a line at) is read into memory."""
    if not is_gzip(path):
        corpus, digest, duplicates = index_jsonl(path)
        skipped["duplicate corpus _id"] += duplicates
        return corpus, digest
    texts: dict[str, str] = {}
    for doc_id, row in _read_jsonl(path):
        if doc_id in texts:
            skipped["duplicate corpus _id"] += 1
            continue
        texts[doc_id] = passage_text(row)
    return DictCorpus(texts, source=str(path)), file_sha256(path)


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`_id`, row) per non-blank line; malformed lines raise a `file:line` DataError."""
    for number, row, _ in jsonl_records(path, "BEIR file"):
        yield str(beir_row(path, number, row)["_id"]), row
