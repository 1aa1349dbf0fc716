"""Data sources: quickstart, beir:<folder>, irds:<id>, all yielding RetrievalData."""
from __future__ import annotations

import logging
import os

from trainables.config import DatasetRef
from trainables.data.runfile import read_run_file
from trainables.data.subset import hold_out, subset
from trainables.data.types import Corpus, DataError, DictCorpus, RetrievalData

__all__ = ["Corpus", "DataError", "DictCorpus", "RetrievalData", "corpus_source", "hold_out", "load_data",
           "read_run_file", "subset", "training_queries"]

log = logging.getLogger(__name__)

QUICKSTART_IDS = ("quickstart", "quickstart-numpy")
VALID_IDS = "'quickstart', 'quickstart-numpy', 'beir:<folder>' or 'irds:<ir_datasets id>'"


def load_data(ref: DatasetRef | str, split: str | None = None) -> RetrievalData:
    """The collection `ref` names, for `split` (the argument, else the ref's split, else "test").

    `irds:` ids carry their split inside the id; `split` is ignored for them. A ref with `holdout`
    yields only its held-out queries (`part: holdout`) or all the others (`part: rest`).
    """
    data = _load_source(ref, split)
    if isinstance(ref, DatasetRef) and ref.holdout is not None:
        data = hold_out(data, ref.holdout, ref.part)
    return data


def corpus_source(ref: DatasetRef | str) -> str:
    """Where a set's passages come from, known without loading it: the BEIR folder, the ir_datasets
    collection whose docs a split uses, the quickstart source.

    A hint, not an identity (`RetrievalData.corpus_fingerprint` is that): an evaluation keeps a
    corpus encoding only while a later set has the same source.
    """
    source_id = ref.id if isinstance(ref, DatasetRef) else ref
    if source_id.startswith("beir:"):
        return "beir:" + os.path.realpath(os.path.expanduser(source_id[5:]))
    if source_id.startswith("irds:"):
        try:
            import ir_datasets

            return "irds:" + ir_datasets.docs_parent_id(source_id[5:].strip("/"))
        except (ImportError, KeyError):  # unknown id or no ir_datasets: loading the set reports it
            return source_id
    return source_id


def _load_source(ref: DatasetRef | str, split: str | None) -> RetrievalData:
    if isinstance(ref, DatasetRef):
        source_id, split, label = ref.id, split or ref.split, ref.label
    else:
        source_id, split, label = ref, split or "test", None
    if source_id in QUICKSTART_IDS:
        from trainables.data.quickstart import load_quickstart

        return load_quickstart(source_id, split)
    if source_id.startswith("beir:") and source_id[5:]:
        from trainables.data.beir import load_beir

        return load_beir(source_id[5:], split, label)
    if source_id.startswith("irds:") and source_id[5:]:
        from trainables.data.irds import load_irds

        return load_irds(source_id[5:].strip("/"))
    raise DataError(f"unknown dataset id {source_id!r}: expected {VALID_IDS}")


def training_queries(data: RetrievalData) -> list[tuple[str, str, list[str]]]:
    """(qid, text, positive docids with grade ≥ 1, highest first) of the queries that have a positive.

    A query without a positive cannot anchor a distillation example: it is a counted, logged skip.
    """
    queries = [(qid, text, data.positives(qid)) for qid, text in data.queries.items()]
    with_positives = [query for query in queries if query[2]]
    if len(with_positives) < len(queries):
        log.warning("%s: skipped %d queries without a positive (grade >= 1)", data.name,
                    len(queries) - len(with_positives))
    return with_positives
