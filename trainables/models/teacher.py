"""Teachers score (query, passage) pairs once per study; trials only read the cached scores.

A bi-encoder teacher (the offline default: the full 6-layer MiniLM) scores <e(q), e(p)> and encodes
each unique text once; a cross-encoder teacher (e.g. ms-marco-MiniLM-L-6-v2 for users with a
network) reads each pair jointly. Both count their work in `pairs_scored` and `forward_passes`, so
a cache hit is checkable: it scores nothing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trainables.config import TeacherConfig
from trainables.models.encoders import ModelError, resolve_model_path, truncate_layers
from trainables.progress import progress_bar
from trainables.models.student import BiEncoder


class Teacher(ABC):
    """Scores each query's passages; `score(queries, passages)[i][j]` = teacher score of passages[i][j]."""

    def __init__(self) -> None:
        self.pairs_scored = 0      # (query, passage) pairs scored since construction
        self.forward_passes = 0    # model forward calls (batches) since construction

    @abstractmethod
    def score(self, queries: list[str], passages: list[list[str]], progress: bool = False) -> list[np.ndarray]:
        """One np.float32 array per query, aligned with that query's passages."""

    @staticmethod
    def _check(queries: list[str], passages: list[list[str]]) -> None:
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")


class BiEncoderTeacher(Teacher):
    """A BiEncoder as teacher: every unique query and passage text is encoded exactly once."""

    def __init__(self, encoder: BiEncoder, batch_size: int = 64):
        super().__init__()
        self.encoder = encoder
        self.batch_size = batch_size

    def score(self, queries: list[str], passages: list[list[str]], progress: bool = False) -> list[np.ndarray]:
        self._check(queries, passages)
        unique_q = list(dict.fromkeys(queries))
        unique_p = list(dict.fromkeys(p for plist in passages for p in plist))
        q_emb = self.encoder.encode(unique_q, is_query=True, batch_size=self.batch_size, progress=progress)
        p_emb = self.encoder.encode(unique_p, is_query=False, batch_size=self.batch_size, progress=progress)
        self.forward_passes += -(-len(unique_q) // self.batch_size) + -(-len(unique_p) // self.batch_size)
        q_row = {t: i for i, t in enumerate(unique_q)}
        p_row = {t: i for i, t in enumerate(unique_p)}
        out = []
        for query, plist in zip(queries, passages):
            rows = np.fromiter((p_row[p] for p in plist), dtype=np.int64, count=len(plist))
            out.append((p_emb[rows] @ q_emb[q_row[query]]).astype(np.float32))
            self.pairs_scored += len(plist)
        return out


class CrossEncoderTeacher(Teacher):
    """A sequence-classification model over (query, passage) pairs: logit[0], or the positive class of 2."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 288, batch_size: int = 64):
        super().__init__()
        num_labels = model.config.num_labels
        if num_labels not in (1, 2):
            raise ModelError(f"cross-encoder teacher needs a 1- or 2-label head, got num_labels={num_labels}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.label = 0 if num_labels == 1 else 1

    @classmethod
    def from_config(cls, cfg: TeacherConfig, cache_dir: str | Path | None = None) -> "CrossEncoderTeacher":
        path = resolve_model_path(cfg.model, cache_dir)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        if cfg.num_layers is not None:
            truncate_layers(model, cfg.num_layers)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, cfg.query_max_length + cfg.passage_max_length, cfg.batch_size)

    @torch.no_grad()
    def score(self, queries: list[str], passages: list[list[str]], progress: bool = False) -> list[np.ndarray]:
        self._check(queries, passages)
        pairs = [(qi, p) for qi, plist in enumerate(passages) for p in plist]
        flat = np.zeros(len(pairs), dtype=np.float32)
        order = np.argsort([-(len(queries[qi]) + len(p)) for qi, p in pairs], kind="stable")
        device = next(self.model.parameters()).device
        bar = progress_bar(len(pairs), "teacher pairs", "pair", enabled=progress)
        for start in range(0, len(pairs), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer(
                [queries[pairs[i][0]] for i in idx], [pairs[i][1] for i in idx],
                padding=True, truncation="longest_first", max_length=self.max_length, return_tensors="pt",
            )
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            flat[idx] = logits[:, self.label].float().cpu().numpy()
            self.forward_passes += 1
            self.pairs_scored += len(idx)
            bar.update(len(idx))
        bar.close()
        bounds = np.cumsum([0] + [len(plist) for plist in passages])
        return [flat[bounds[i]:bounds[i + 1]] for i in range(len(passages))]


def build_teacher(cfg: TeacherConfig, cache_dir: str | Path | None = None, device: str | torch.device | None = None) -> Teacher:
    """The teacher of `cfg`, on `device` (default: CUDA when available)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.kind == "cross_encoder":
        teacher = CrossEncoderTeacher.from_config(cfg, cache_dir)
        teacher.model.to(device)
        return teacher
    encoder = BiEncoder.from_config(cfg, cache_dir).to(device)
    return BiEncoderTeacher(encoder, cfg.batch_size)
