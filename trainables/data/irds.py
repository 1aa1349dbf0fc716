"""`irds:<ir_datasets id>`: a collection read through the real `ir_datasets` API.

The id names one split (`beir/scifact/test`, `msmarco-passage/dev/small`). Queries and qrels are
read into dicts (small); the corpus is an `IrdsCorpus` that streams `docs_iter()` and looks texts
up with `docs_store().get_many()`, so an 8.8M-passage corpus is never a Python list or dict.
Only judged queries belong to the split; a judged query without text is a counted, logged skip
(`RetrievalData.skipped["judged query without text"]`). Qrels docids are trusted (checking them
would read the whole corpus).

Offline: ir_datasets downloads on first use into `IR_DATASETS_HOME` (default `~/.ir_datasets`).
A download that fails becomes a one-line DataError naming IR_DATASETS_HOME, where the files can be
placed by hand. ir_datasets binds its download and cache paths when it is first imported (each
dataset module's `_init()` calls `ir_datasets.util.home_path()` at import; only `docs_store()`
reads it later), so set IR_DATASETS_HOME before anything imports it (Ray workers: through the
runtime_env). `ir_datasets` is imported lazily, here, for the same reason.

The fingerprint is a sha256 over the id, the ir_datasets version and the queries and qrels
contents (the corpus is fixed by the id); the corpus fingerprint over the id of the collection whose
docs the split uses (`ir_datasets.docs_parent_id`) and the version.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from trainables.data.types import Corpus, DataError, RetrievalData

log = logging.getLogger(__name__)

# what ir_datasets raises when its files are missing and cannot be downloaded (requests errors are
# OSErrors; "All download sources failed" is a RuntimeError; a zip without the expected member a KeyError)
_DOWNLOAD_ERRORS = (OSError, RuntimeError, KeyError, zipfile.BadZipFile)


def load_irds(dataset_id: str) -> RetrievalData:
    """Queries and qrels of the ir_datasets split `dataset_id`, with a streamed corpus."""
    dataset = _load_dataset(dataset_id)
    for part in ("docs", "queries", "qrels"):
        if not getattr(dataset, f"has_{part}")():
            raise DataError(f"irds:{dataset_id}: this ir_datasets id has no {part}; name a split that has docs, "
                            "queries and qrels, e.g. beir/scifact/test")
    with _download_errors(dataset_id, "qrels"):
        qrels: dict[str, dict[str, int]] = {}
        for qrel in dataset.qrels_iter():
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    with _download_errors(dataset_id, "queries"):
        all_queries = {query.query_id: query_text(query) for query in dataset.queries_iter()}

    queries = {qid: all_queries[qid] for qid in qrels if all_queries.get(qid, "").strip()}
    skipped = {"judged query without text": len(qrels) - len(queries)} if len(queries) < len(qrels) else {}
    for reason, count in skipped.items():
        log.warning("irds:%s: skipped %d (%s)", dataset_id, count, reason)
    qrels = {qid: qrels[qid] for qid in queries}

    import ir_datasets

    digest = hashlib.sha256(json.dumps([f"irds:{dataset_id}", ir_datasets.__version__, sorted(queries.items()),
                                        sorted((q, sorted(j.items())) for q, j in qrels.items())]).encode())
    # the splits of a collection share its docs (`docs_parent_id`: beir/scifact/test → beir/scifact)
    corpus_digest = hashlib.sha256(json.dumps(["irds-docs", ir_datasets.docs_parent_id(dataset_id),
                                               ir_datasets.__version__]).encode())
    return RetrievalData(name=dataset_id, corpus=IrdsCorpus(dataset_id), queries=queries, qrels=qrels,
                         fingerprint=digest.hexdigest(), skipped=skipped, corpus_fingerprint=corpus_digest.hexdigest())


class IrdsCorpus(Corpus):
    """The docs of an ir_datasets id: streamed from `docs_iter()`, looked up in its docstore.

    Pickles as its id alone (Ray workers reopen the dataset from their own IR_DATASETS_HOME).
    """

    def __init__(self, dataset_id: str):
        self.dataset_id = dataset_id
        self._dataset: Any = None
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dataset_id"])

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = _load_dataset(self.dataset_id)
        return self._dataset

    def _docstore(self) -> Any:
        if self._store is None:
            self._store = self.dataset.docs_store()
        return self._store

    def __len__(self) -> int:
        with _download_errors(self.dataset_id, "docs"):
            store = self._docstore()
            # a built store counts what is on disk; the registry metadata counts the official release
            if callable(getattr(store, "built", None)) and store.built() and callable(getattr(store, "count", None)):
                return int(store.count())
            count = self.dataset.docs_count()
            return int(count) if count is not None else sum(1 for _ in self.dataset.docs_iter())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with _download_errors(self.dataset_id, "docs"):
            for doc in self.dataset.docs_iter():
                yield doc.doc_id, doc_text(doc)

    def get_many(self, doc_ids: Sequence[str]) -> list[str]:
        with _download_errors(self.dataset_id, "docs"):
            found = self._docstore().get_many(list(doc_ids))
        missing = [d for d in doc_ids if d not in found]
        if missing:
            raise DataError(f"irds:{self.dataset_id}: unknown docid {missing[0]!r} ({len(missing)} missing)")
        return [doc_text(found[d]) for d in doc_ids]


def doc_text(doc: Any) -> str:
    """`title + " " + text` when the doc has a non-empty title, its text, else ir_datasets' default text."""
    text = getattr(doc, "text", None)
    if not isinstance(text, str):
        return doc.default_text()
    title = getattr(doc, "title", None)
    return f"{title} {text}" if isinstance(title, str) and title.strip() else text


def query_text(query: Any) -> str:
    text = getattr(query, "text", None)
    return text if isinstance(text, str) else query.default_text()


def _load_dataset(dataset_id: str) -> Any:
    try:
        import ir_datasets
    except ImportError as error:
        raise DataError(f"irds:{dataset_id}: ir_datasets is not installed ({error})") from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(f"unknown ir_datasets id {dataset_id!r}") from None


@contextlib.contextmanager
def _download_errors(dataset_id: str, what: str) -> Iterator[None]:
    """Turn ir_datasets' failure to find or download its files into a one-line DataError."""
    try:
        yield
    except _DOWNLOAD_ERRORS as error:
        home = os.environ.get("IR_DATASETS_HOME") or os.path.join("~", ".ir_datasets")
        cause = (str(error).splitlines() or [""])[0][:300]
        raise DataError(f"irds:{dataset_id}: could not read its {what}: ir_datasets found no local copy and the "
                        f"download failed ({type(error).__name__}: {cause}); offline, place its files under "
                        f"IR_DATASETS_HOME={home}") from None
