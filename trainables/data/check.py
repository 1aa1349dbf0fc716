"""Every data set a trial will touch, checked before any work starts.

A typo in an evaluation set used to surface at a trial's final evaluation, after its training: on a
sweep, in every trial. `check_datasets` loads each set the config names (training data and every
`eval.dev` / `eval.beir` / `eval.dl` set) the way a trial will, and says in one line what is wrong:
a missing folder or split, the first line that does not parse (file:line), a set whose qrels leave no
query with a positive (grade ≥ 1). It returns the loaded training data, so the caller can build the
shared assets from it without reading it twice. (A label that cannot be part of a metric key fails
earlier, when the config loads: DatasetRef's name rule.)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from trainables.config import DatasetRef, TrialConfig
from trainables.data import load_data
from trainables.data.types import DataError, RetrievalData
from trainables.outputs import eval_set_refs

@dataclass(frozen=True)
class CheckedSet:
    role: str            # "data.train", "eval.dev", "eval.beir[0]", "eval.dl[1]"
    ref: DatasetRef
    queries: int         # queries with a positive
    docs: int | None     # corpus size, where known without reading it
    fingerprint: str = ""  # the content hash of the loaded set (RetrievalData.fingerprint)


def eval_refs(cfg: TrialConfig) -> list[tuple[str, DatasetRef]]:
    """(role, ref) of every evaluation set of `cfg`, in the order a trial evaluates them (`eval_set_refs`)."""
    seen: Counter[str] = Counter()
    refs = []
    for kind, ref in eval_set_refs(cfg.eval):
        refs.append(("eval.dev" if kind == "dev" else f"eval.{kind}[{seen[kind]}]", ref))
        seen[kind] += 1
    return refs


def check_datasets(cfg: TrialConfig, *, source: str = "") -> tuple[RetrievalData, list[CheckedSet]]:
    """Load and check the training data and every evaluation set; DataError (one line) on the first problem.

    `source` (the config file) prefixes messages. Returns the training data and a summary per set.
    """
    prefix = f"{source}: " if source else ""
    checked, train = [], None
    for role, ref in [("data.train", cfg.data.train), *eval_refs(cfg)]:
        try:
            data = load_data(ref)
        except DataError as error:
            raise DataError(f"{prefix}{role}: {error}") from None
        with_positive = sum(1 for qid in data.queries if data.positives(qid))
        if not with_positive:
            raise DataError(f"{prefix}{role}: {data.name}: no query has a positive (grade >= 1) in its qrels "
                            f"({len(data.queries)} queries, skipped: {data.skipped or 'none'})")
        checked.append(CheckedSet(role, ref, with_positive, _size(data), data.fingerprint))
        if role == "data.train":
            train = data
    return train, checked


def _size(data: RetrievalData) -> int | None:
    try:
        return len(data.corpus)
    except DataError:  # a streamed corpus whose size needs its files
        return None
