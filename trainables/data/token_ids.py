"""Texts tokenised once per (texts, tokenizer, max length), stored as flat token ids + offsets, memory-mapped.

A training step or an evaluation encoding pads rows of these arrays into a batch (`TokenIds.batch`)
instead of calling the tokenizer: the ids are the tokenizer's own (`tokenizer(texts, truncation=True,
max_length=L)`, special tokens included), so a batch equals `tokenizer(texts, padding=True,
truncation=True, max_length=L, return_tensors="pt")` for the same texts. Files, content-addressed:

    cache_dir/tokens/<key>.ids.npy       flat ids (uint16 when the vocabulary fits, else int32)
    cache_dir/tokens/<key>.offsets.npy   int64 [n] end offsets
    cache_dir/tokens/<key>.json          pad id, model input names, padding side, the ids of ""

key = hash(source, tokenizer digest, max length), where `source` names the texts by content (a
training set's recorded sha256, an evaluation corpus's fingerprint). Both arrays are checksummed
cache files; the json is written last, so its presence with both arrays complete means whole.
Built with the fast tokenizer's batch path, `CHUNK` texts at a time, so neither texts nor ids are
held whole while building; opened with `np.load(mmap_mode="r")`, so trials on a node share one copy
in the page cache. Scattered rows (a step's passages) are read with `os.pread` at the mapped array's
offsets rather than faulted in: a page fault maps 64 KiB around each row into the process.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
from filelock import FileLock

from trainables.data.training_set import TrainingSet, content_key, full_digest, is_complete, write_checksummed

if TYPE_CHECKING:   # transformers costs seconds of import in every Tune trial actor (tests/test_study.py)
    from transformers import BatchEncoding

TOKENS_VERSION = 1
CHUNK = 8192   # texts per batch call of the fast tokenizer


@dataclass(frozen=True)
class TokenIds:
    """Token ids of n texts at one max length; rows are padded into batches on demand."""

    ids: np.ndarray                 # [total] flat, read-only map
    offsets: np.ndarray             # [n] int64 end offsets
    empty: np.ndarray               # ids of the empty text: what a padded slot of a step holds
    pad_id: int
    input_names: tuple[str, ...]    # the tokenizer's model_input_names
    padding_side: str = "right"
    stem: Path | None = None        # where it was mapped from: a pickled copy (a DataLoader worker) maps it again

    def __reduce_ex__(self, protocol):
        if self.stem is not None:
            return open_token_ids, (self.stem,)
        return super().__reduce_ex__(protocol)

    def __len__(self) -> int:
        return len(self.offsets)

    def lengths(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Token counts of `rows` (all when None), -1 rows counting as the empty text."""
        ends = np.asarray(self.offsets, dtype=np.int64)
        lengths = np.diff(ends, prepend=0)
        if rows is None:
            return lengths
        rows = np.asarray(rows, dtype=np.int64)
        return np.where(rows >= 0, lengths[np.maximum(rows, 0)], len(self.empty))

    def batch(self, rows: np.ndarray) -> BatchEncoding:
        """Padded int64 tensors of `rows` (row -1: the empty text), as the tokenizer pads: to the longest row."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        seqs = [self._row(r) for r in rows.tolist()]
        width = max((len(s) for s in seqs), default=0)
        input_ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, seq in enumerate(seqs):
            span = slice(0, len(seq)) if self.padding_side == "right" else slice(width - len(seq), width)
            input_ids[i, span] = seq
            mask[i, span] = 1
        columns = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
        from transformers import BatchEncoding

        return BatchEncoding({name: torch.from_numpy(columns[name]) for name in self.input_names})

    def _row(self, row: int) -> np.ndarray:
        if row < 0:
            return self.empty
        if self.stem is None:
            return self.ids[(int(self.offsets[row - 1]) if row else 0):int(self.offsets[row])]
        # A cached file: read the row, do not fault its pages into this process. A fault maps the
        # neighbouring pages too (fault-around, 64 KiB), so a few thousand scattered rows would map
        # hundreds of MiB of this process's memory; a read shares the page cache and keeps nothing.
        ids, offsets = self._files
        if row:
            start, end = np.frombuffer(os.pread(offsets.fileno(), 16, self.offsets.offset + 8 * (row - 1)), np.int64)
        else:
            start, end = 0, int(np.frombuffer(os.pread(offsets.fileno(), 8, self.offsets.offset), np.int64)[0])
        size = self.ids.dtype.itemsize
        return np.frombuffer(os.pread(ids.fileno(), int(end - start) * size, self.ids.offset + int(start) * size),
                             self.ids.dtype)

    @functools.cached_property
    def _files(self):
        """The two array files, opened unbuffered for `os.pread` (no shared position: safe in forked loaders)."""
        ids_path, offsets_path, _ = _paths(self.stem)
        return open(ids_path, "rb", buffering=0), open(offsets_path, "rb", buffering=0)


@dataclass(frozen=True)
class StepTokens:
    """A training set's token ids: its query rows at the query max length, its passage rows at the passage one."""

    queries: TokenIds
    passages: TokenIds


def training_tokens(training_set_path: str | Path, tokenizer, query_max_length: int, passage_max_length: int,
                    cache_dir: str | Path) -> StepTokens:
    """The token ids of the training set at `training_set_path` (built on first use, then only mapped).

    Addressed by the sha256 its writer recorded, so opening them never hashes the file again.
    """
    source = f"trainset:{full_digest(training_set_path)}"
    ts = TrainingSet.load(training_set_path, mapped=True)
    return StepTokens(
        token_ids(cache_dir, f"{source}:query_texts", lambda: ts.query_texts.chunks(CHUNK), tokenizer,
                  query_max_length),
        token_ids(cache_dir, f"{source}:doc_texts", lambda: ts.doc_texts.chunks(CHUNK), tokenizer,
                  passage_max_length),
    )


def tokenizer_digest(tokenizer) -> str:
    """What fixes a tokenizer's output: its full serialised fast tokenizer, class and input/padding settings.

    The serialised form's `truncation`/`padding` entries are left out: they are the last call's
    arguments (transformers sets them per call), not the tokenizer's identity.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = [type(tokenizer).__name__, list(tokenizer.model_input_names), tokenizer.padding_side,
                tokenizer.truncation_side, tokenizer.pad_token_id]
    return hashlib.sha256((json.dumps(settings) + body).encode()).hexdigest()


def token_ids(cache_dir: str | Path, source: str, texts: Callable[[], Iterable[list[str]]], tokenizer,
              max_length: int) -> TokenIds:
    """The token ids of `texts()` (chunks of strings, in order), built once under a lock and mapped."""
    stem = Path(cache_dir) / "tokens" / content_key("tokens", TOKENS_VERSION, source, tokenizer_digest(tokenizer),
                                                     max_length)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(stem) + ".lock"):
        opened = open_token_ids(stem)
        if opened is None:
            build_token_ids(stem, texts(), tokenizer, max_length)
            opened = open_token_ids(stem)
    return opened


def open_token_ids(stem: Path) -> TokenIds | None:
    """The arrays at `stem`, mapped read-only; None unless both are complete and the json is there."""
    ids_path, offsets_path, meta_path = _paths(stem)
    if not (meta_path.is_file() and is_complete(ids_path) and is_complete(offsets_path)):
        return None
    meta = json.loads(meta_path.read_text())
    return TokenIds(np.load(ids_path, mmap_mode="r"), np.load(offsets_path, mmap_mode="r"),
                    np.asarray(meta["empty"], dtype=np.int64), meta["pad_id"], tuple(meta["input_names"]),
                    meta["padding_side"], stem)


def build_token_ids(stem: Path, chunks: Iterable[list[str]], tokenizer, max_length: int) -> None:
    """Tokenise `chunks` with the tokenizer's batch call and write the arrays and json at `stem`."""
    ids_path, offsets_path, meta_path = _paths(stem)
    dtype = _id_dtype(tokenizer)
    raw = stem.with_name(f".{stem.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.raw")
    ends, total = [], 0
    try:
        with open(raw, "wb") as out:
            for chunk in chunks:
                flat, chunk_ends = _tokenise(chunk, tokenizer, max_length, dtype)
                ends.append(total + chunk_ends)
                total += len(flat)
                out.write(flat.tobytes())
        write_checksummed(ids_path, lambda tmp: _npy_from_raw(tmp, raw, dtype, total), suffix=".tmp.npy")
    finally:
        raw.unlink(missing_ok=True)
    offsets = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    write_checksummed(offsets_path, lambda tmp: np.save(tmp, offsets), suffix=".tmp.npy")
    meta = {**_settings(tokenizer, max_length), "max_length": max_length, "texts": len(offsets), "tokens": total}
    tmp = meta_path.with_name(f".{meta_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(meta_path)


def tokens_in_memory(texts: list[str], tokenizer, max_length: int) -> TokenIds:
    """Token ids of a few `texts`, held in memory and never cached (tests, benchmarks, small tools)."""
    flat, ends = _tokenise(texts, tokenizer, max_length, _id_dtype(tokenizer))
    meta = _settings(tokenizer, max_length)
    return TokenIds(flat, ends, np.asarray(meta["empty"], dtype=np.int64), meta["pad_id"],
                    tuple(meta["input_names"]), meta["padding_side"])


def step_tokens_in_memory(ts: TrainingSet, student) -> StepTokens:
    """`StepTokens` of a training set for `student` (a BiEncoder), in memory: `tokens_in_memory` of its texts."""
    return StepTokens(tokens_in_memory(list(ts.query_texts), student.tokenizer, student.query_max_length),
                      tokens_in_memory(list(ts.doc_texts), student.tokenizer, student.passage_max_length))


def _tokenise(texts: list[str], tokenizer, max_length: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, int64 end offsets) of `texts`: one batch call of the (fast) tokenizer, truncated, unpadded."""
    if not len(texts):
        return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.int64)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype, count=int(lengths.sum()))
    return flat, np.cumsum(lengths)


def _settings(tokenizer, max_length: int) -> dict:
    """How rows become a batch: pad id, model inputs, padding side, and the ids of "" (a padded slot's text)."""
    empty = tokenizer([""], truncation=True, max_length=max_length)["input_ids"][0]
    return {"pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
            "input_names": list(tokenizer.model_input_names), "padding_side": tokenizer.padding_side,
            "empty": [int(t) for t in empty]}


def _id_dtype(tokenizer):
    return np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32


def _npy_from_raw(target: Path, raw: Path, dtype, count: int) -> None:
    """A `.npy` at `target` holding the `count` raw values of `raw`: header, then a streamed copy."""
    with open(target, "wb") as out, open(raw, "rb") as source:
        np.lib.format.write_array_header_1_0(out, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                   "shape": (count,)})
        shutil.copyfileobj(source, out, 1 << 22)


def _paths(stem: Path) -> tuple[Path, Path, Path]:
    return stem.with_name(stem.name + ".ids.npy"), stem.with_name(stem.name + ".offsets.npy"), \
        stem.with_name(stem.name + ".json")
