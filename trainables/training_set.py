"""The distillation training set a trial reads: queries, positives, candidate pools, teacher scores.

Built once per study by `trainables.assets.prepare_assets` and stored as one `.npz` file plus a
JSON sidecar, so Ray workers load only the passages they train on, never the whole corpus.
Padding: docid index -1, score NaN.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainables.hashing import file_sha256


@dataclass
class TrainingSet:
    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]                      # the passages referenced by positives and pools
    doc_texts: list[str]
    positive_doc_idx: np.ndarray            # [Q, P] int64 indices into doc_ids, -1 padded
    pool_doc_idx: np.ndarray                # [Q, N] int64, first-stage rank order, -1 padded
    teacher_positive_scores: np.ndarray     # [Q, P] float32, NaN padded
    teacher_pool_scores: np.ndarray         # [Q, N] float32, NaN padded
    student_positive_scores: np.ndarray     # [Q, P] float32: initial student, for β's first ranks
    student_pool_scores: np.ndarray         # [Q, N] float32

    def __post_init__(self) -> None:
        q = len(self.query_ids)
        for name in ("positive_doc_idx", "teacher_positive_scores", "student_positive_scores"):
            if getattr(self, name).shape[0] != q or getattr(self, name).shape[1] != self.positive_doc_idx.shape[1]:
                raise ValueError(f"TrainingSet.{name} has shape {getattr(self, name).shape}, expected [{q}, P]")
        for name in ("pool_doc_idx", "teacher_pool_scores", "student_pool_scores"):
            if getattr(self, name).shape[0] != q or getattr(self, name).shape[1] != self.pool_doc_idx.shape[1]:
                raise ValueError(f"TrainingSet.{name} has shape {getattr(self, name).shape}, expected [{q}, N]")

    def __len__(self) -> int:
        return len(self.query_ids)

    def pool_sizes(self) -> np.ndarray:
        """Number of real (unpadded) candidates per query."""
        return (self.pool_doc_idx >= 0).sum(axis=1)

    # ---- storage ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write `path` (.npz) atomically with a sha256 sidecar so a partial file is never used."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            query_ids=np.array(self.query_ids, dtype=object),
            query_texts=np.array(self.query_texts, dtype=object),
            doc_ids=np.array(self.doc_ids, dtype=object),
            doc_texts=np.array(self.doc_texts, dtype=object),
            positive_doc_idx=self.positive_doc_idx,
            pool_doc_idx=self.pool_doc_idx,
            teacher_positive_scores=self.teacher_positive_scores,
            teacher_pool_scores=self.teacher_pool_scores,
            student_positive_scores=self.student_positive_scores,
            student_pool_scores=self.student_pool_scores,
        )
        digest = file_sha256(tmp)
        tmp.replace(path)
        path.with_suffix(".sha256").write_text(digest)

    @classmethod
    def load(cls, path: str | Path) -> "TrainingSet":
        path = Path(path)
        if not is_complete(path):
            raise ValueError(f"{path}: missing or corrupt training set (checksum mismatch)")
        with np.load(path, allow_pickle=True) as z:
            return cls(
                query_ids=list(z["query_ids"]), query_texts=list(z["query_texts"]),
                doc_ids=list(z["doc_ids"]), doc_texts=list(z["doc_texts"]),
                positive_doc_idx=z["positive_doc_idx"], pool_doc_idx=z["pool_doc_idx"],
                teacher_positive_scores=z["teacher_positive_scores"], teacher_pool_scores=z["teacher_pool_scores"],
                student_positive_scores=z["student_positive_scores"], student_pool_scores=z["student_pool_scores"],
            )


def is_complete(path: str | Path) -> bool:
    """True when `path` exists and matches the checksum written beside it."""
    path = Path(path)
    sidecar = path.with_suffix(".sha256")
    return path.is_file() and sidecar.is_file() and sidecar.read_text().strip() == file_sha256(path)


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts: the address of a cached asset."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Assets:
    """Where a prepared TrainingSet lives, its content keys and build statistics (`assets.prepare_assets`).

    Defined here, not in assets.py, so that a Tune trial actor can name it without importing the
    asset builders (transformers, faiss, torch.compile machinery: ~9 s of imports per trial on 2 CPUs).
    """

    training_set_path: str
    keys: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

