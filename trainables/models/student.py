"""The student bi-encoder: one shared transformer for queries and passages, pooled, scored by dot or cosine.

score(q, p) = <e(q), e(p)>, where e = mean or CLS pooling of the last hidden states, L2-normalised
when similarity is cosine. The same class encodes the corpus for the first-stage pools, serves as
a bi-encoder teacher, and is what a trial trains and checkpoints.

    >>> student = BiEncoder.from_config(StudentConfig(model="tiny:bert"), cache_dir=".kd-cache")
    >>> q = student.encode(["what is a bi-encoder"], is_query=True)       # np.float32 [1, 32]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from trainables.config import ModelConfig
from trainables.models.encoders import load_encoder, load_encoder_from_path
from trainables.progress import progress_bar

if TYPE_CHECKING:
    from trainables.data.token_ids import TokenIds

STUDENT_META = "kd_student.json"


class BiEncoder(nn.Module):
    """Shared-weight dual encoder with `mean`/`cls` pooling and `dot`/`cosine` similarity."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: Literal["mean", "cls"] = "mean",
        similarity: Literal["dot", "cosine"] = "cosine",
        query_max_length: int = 32,
        passage_max_length: int = 128,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.similarity = similarity
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length

    @classmethod
    def from_config(cls, cfg: ModelConfig, cache_dir: str | Path | None = None) -> "BiEncoder":
        model, tokenizer = load_encoder(cfg, cache_dir)
        return cls(model, tokenizer, cfg.pooling, cfg.similarity, cfg.query_max_length, cfg.passage_max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    # ---- forward --------------------------------------------------------------------------
    def tokenize(self, texts: list[str], is_query: bool) -> BatchEncoding:
        """Padded, truncated tensors at the query or passage max length (on CPU)."""
        max_length = self.query_max_length if is_query else self.passage_max_length
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def embed(self, batch: BatchEncoding | dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, d] pooled embeddings of a tokenized batch; unit norm when similarity is cosine."""
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items()}
        hidden = self.model(**inputs).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.similarity == "cosine":
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    forward = embed

    @staticmethod
    def score(q_emb: torch.Tensor, p_emb: torch.Tensor) -> torch.Tensor:
        """[B, n] inner products of each query [B, d] with its own passages [B, n, d]."""
        return torch.einsum("bd,bnd->bn", q_emb, p_emb)

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, texts: list[str], is_query: bool, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """np.float32 [n, d] embeddings in input order; batches of similar length for speed."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        was_training = self.training
        self.eval()
        try:
            bar = progress_bar(len(texts), "encode queries" if is_query else "encode passages", "text",
                               enabled=progress, leave=False)
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                emb = self.embed(self.tokenize([texts[i] for i in idx], is_query))
                out[idx] = emb.float().cpu().numpy()
                bar.update(len(idx))
            bar.close()
        finally:
            self.train(was_training)
        return out

    @torch.no_grad()
    def encode_token_ids(self, tokens: "TokenIds", rows: np.ndarray | None = None, batch_size: int = 64,
                         progress: bool = False, desc: str = "encode") -> np.ndarray:
        """np.float32 [n, d] embeddings of `rows` of pre-tokenised texts (all rows when None), in row order.

        No tokenizer call: batches are padded from the token ids (`TokenIds.batch`), longest first so
        a batch pads little. The ids carry their max length, so this serves queries and passages alike.
        """
        rows = np.arange(len(tokens)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        if not len(rows):
            return out
        order = np.argsort(-tokens.lengths(rows), kind="stable")
        was_training = self.training
        self.eval()
        try:
            bar = progress_bar(len(rows), desc, "text", enabled=progress, leave=False)
            for start in range(0, len(rows), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self.embed(tokens.batch(rows[idx])).float().cpu().numpy()
                bar.update(len(idx))
            bar.close()
        finally:
            self.train(was_training)
        return out

    # ---- storage --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """A plain transformers folder (AutoModel.from_pretrained reads it) + tokenizer + kd_student.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / STUDENT_META).write_text(json.dumps(self.settings(), indent=1))

    def settings(self) -> dict:
        return {
            "pooling": self.pooling,
            "similarity": self.similarity,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
        }

    @classmethod
    def load(cls, directory: str | Path) -> "BiEncoder":
        directory = Path(directory)
        meta_path = directory / STUDENT_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: no {STUDENT_META} (not a saved BiEncoder)")
        meta = json.loads(meta_path.read_text())
        model, tokenizer = load_encoder_from_path(directory)
        return cls(model, tokenizer, **meta)
