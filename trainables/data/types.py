"""The one shape every data source yields: corpus, queries, qrels."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from trainables.errors import BadInput


class DataError(BadInput):
    """Bad or missing input data; the message names the source (file and line where known)."""


class Corpus(ABC):
    """docid → passage text, streamable: large corpora are never materialised as Python lists.

    Text is `title + " " + text` when a title exists (the BEIR convention).
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Yield (docid, text) in a stable order."""

    @abstractmethod
    def get_many(self, doc_ids: Sequence[str]) -> list[str]:
        """Texts of the given docids, in order; a missing docid raises DataError."""

    def __getitem__(self, doc_id: str) -> str:
        return self.get_many([doc_id])[0]

    def doc_ids(self) -> Sequence[str]:
        """The docids in iteration order, indexable by position (random corpus passages draw positions).

        This default lists them; a corpus with an index returns a view of it instead of 8.8M strings.
        """
        return [doc_id for doc_id, _ in self]

    def __contains__(self, doc_id: object) -> bool:
        try:
            self.get_many([doc_id])  # type: ignore[list-item]
        except DataError:
            return False
        return True


class DictCorpus(Corpus):
    """A corpus held in memory (small collections: quickstart, test subsets, a gzipped BEIR corpus)."""

    def __init__(self, texts: dict[str, str], source: str = "<memory>"):
        self._texts = texts
        self._source = source

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._texts

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._texts.items())

    def get_many(self, doc_ids: Sequence[str]) -> list[str]:
        try:
            return [self._texts[d] for d in doc_ids]
        except KeyError as missing:
            raise DataError(f"{self._source}: unknown docid {missing.args[0]!r}") from None


@dataclass(frozen=True)
class RetrievalData:
    """A retrieval collection for one split: corpus (docid→text), queries (qid→text), qrels (qid→docid→grade).

    `fingerprint` is a content hash of the inputs (source id, split, file contents or sizes), used to
    address cached assets; any change of the data changes it. `corpus_fingerprint` hashes the corpus
    alone: two sets that carry the same one (two splits of a folder, a hold-out and the rest) search
    the same passages, so an evaluation encodes them once; "" (unknown) is never shared.
    """

    name: str
    corpus: Corpus
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    fingerprint: str
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count of documented, logged skips
    corpus_fingerprint: str = ""

    def positives(self, qid: str, min_grade: int = 1) -> list[str]:
        """Relevant docids of a query (grade ≥ min_grade), highest grade first."""
        graded = self.qrels.get(qid, {})
        return [d for d, g in sorted(graded.items(), key=lambda kv: -kv[1]) if g >= min_grade]
