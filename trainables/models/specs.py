"""What a model spec names, decided without loading anything: the one reading of a spec string.

`trainables.models.encoders.resolve_model_path` materialises what a spec names; the preflight checks a
config's specs with the same rules before any work starts (this module imports no torch).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from trainables.errors import BadInput

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
PACKAGED_MPNET = "packaged:all-mpnet-base-v2"
TINY_BERT = "tiny:bert"

SpecKind = Literal["packaged-minilm", "packaged-mpnet", "tiny-bert", "folder", "hub"]


class ModelError(BadInput):
    """A model spec that cannot be resolved or loaded; the message says what to do."""


def spec_kind(spec: str) -> SpecKind:
    """The kind of model `spec` names; ModelError (one line) for an unknown `packaged:`/`tiny:` name,
    a missing folder or a folder without `config.json`."""
    known: dict[str, SpecKind] = {PACKAGED_MINILM: "packaged-minilm", PACKAGED_MPNET: "packaged-mpnet",
                                  TINY_BERT: "tiny-bert"}
    if spec in known:
        return known[spec]
    if spec.startswith(("packaged:", "tiny:")):
        raise ModelError(
            f"unknown model spec {spec!r}: expected {PACKAGED_MINILM!r}, {PACKAGED_MPNET!r}, {TINY_BERT!r}, "
            "a local folder or a hub id"
        )
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model folder {local} has no config.json (not a transformers model folder)")
        return "folder"
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        # Looks like a path (a hub id is `owner/name`), so do not send it to the hub.
        raise ModelError(f"model folder {spec!r} does not exist")
    return "hub"
