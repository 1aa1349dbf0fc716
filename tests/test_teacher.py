"""Teachers, and the study-level cache: teacher scores are computed once and a corrupt file is rebuilt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from test_candidates import scifact_ci
from trainables.models import teacher as teacher_module
from trainables.prepare.assets import prepare_assets
from trainables.config import TeacherConfig, TrialConfig
from trainables.models.encoders import resolve_model_path
from trainables.models.student import BiEncoder
from trainables.models.teacher import BiEncoderTeacher, CrossEncoderTeacher, build_teacher
from trainables.data.types import DataError
from trainables.data.training_set import TrainingSet, is_complete

QUERIES = ["aspirin and heart attacks", "sleep of cats"]
PASSAGES = [
    ["Aspirin lowers cardiovascular risk.", "Cats sleep sixteen hours a day.", "Aspirin lowers cardiovascular risk."],
    ["Cats sleep sixteen hours a day.", "Dogs bark."],
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kd-cache")


def test_bi_encoder_teacher_scores_are_embedding_inner_products_encoding_each_text_once(cache_dir, monkeypatch):
    cfg = TeacherConfig(model="tiny:bert", query_max_length=16, passage_max_length=32, batch_size=2)
    teacher = build_teacher(cfg, cache_dir, device="cpu")
    assert isinstance(teacher, BiEncoderTeacher)
    encoded = []
    original = teacher.encoder.encode
    monkeypatch.setattr(teacher.encoder, "encode", lambda texts, **kw: encoded.extend(texts) or original(texts, **kw))

    scores = teacher.score(QUERIES, PASSAGES)
    assert [s.shape for s in scores] == [(3,), (2,)] and scores[0].dtype == np.float32
    assert sorted(encoded) == sorted(set(QUERIES) | {p for plist in PASSAGES for p in plist})
    assert teacher.pairs_scored == 5 and teacher.forward_passes == 1 + 2  # 2 queries, 3 passages, batch 2

    encoder = BiEncoder.from_config(cfg, cache_dir)
    q = encoder.encode(QUERIES, is_query=True)
    for i, plist in enumerate(PASSAGES):
        np.testing.assert_allclose(scores[i], encoder.encode(plist, is_query=False) @ q[i], atol=1e-5)
    assert scores[0][0] == pytest.approx(scores[0][2], abs=1e-6)  # one embedding per unique text


def _tiny_cross_encoder(folder: Path, num_labels: int) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("packaged:all-MiniLM-L6-v2"))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("num_labels", [1, 2])
def test_cross_encoder_teacher_scores_each_pair_with_the_relevance_logit(tmp_path, num_labels):
    folder = _tiny_cross_encoder(tmp_path / "ce", num_labels)
    cfg = TeacherConfig(kind="cross_encoder", model=str(folder), query_max_length=16, passage_max_length=32, batch_size=2)
    teacher = build_teacher(cfg, tmp_path, device="cpu")
    assert isinstance(teacher, CrossEncoderTeacher)
    scores = teacher.score(QUERIES, PASSAGES)
    assert teacher.pairs_scored == 5 and teacher.forward_passes == 3

    model = BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        for i, plist in enumerate(PASSAGES):
            for j, passage in enumerate(plist):  # one pair at a time: no padding, no reordering
                logits = model(**teacher.tokenizer(QUERIES[i], passage, return_tensors="pt")).logits[0]
                assert scores[i][j] == pytest.approx(float(logits[num_labels - 1]), abs=1e-5)


def test_cross_encoder_teacher_rejects_multi_class_heads(tmp_path):
    folder = _tiny_cross_encoder(tmp_path / "ce3", 3)
    with pytest.raises(ValueError, match="1- or 2-label head, got num_labels=3"):
        build_teacher(TeacherConfig(kind="cross_encoder", model=str(folder)), tmp_path, device="cpu")


def test_teacher_rejects_mismatched_inputs(cache_dir):
    teacher = build_teacher(TeacherConfig(model="tiny:bert"), cache_dir, device="cpu")
    with pytest.raises(ValueError, match="2 queries but 1 passage lists"):
        teacher.score(QUERIES, PASSAGES[:1])


def _trial(sample_data: Path, cache_dir: Path, **teacher) -> TrialConfig:
    return TrialConfig.from_dict({
        "data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"},
                 "pool_depth": 10, "max_train_queries": 6},
        "student": {"model": "tiny:bert", "num_layers": 1, "query_max_length": 16, "passage_max_length": 32},
        "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32, **teacher},
        "sampler": {"k": 4},
        "cache_dir": str(cache_dir),
    })


def test_teacher_scores_are_cached_and_a_corrupt_cache_is_rebuilt(sample_data, tmp_path, monkeypatch):
    data = scifact_ci(sample_data)
    cfg = _trial(sample_data, tmp_path / "cache")

    first = prepare_assets(cfg, progress=False, data=data)
    assert not first.stats["pool_cache_hit"] and not first.stats["teacher_cache_hit"]
    assert first.stats["teacher_pairs_scored"] > 0
    built = TrainingSet.load(first.training_set_path)
    assert len(built) == 6 and built.pool_doc_idx.shape[1] == 10
    for i in range(len(built)):
        pos, pool = set(built.positive_doc_idx[i][built.positive_doc_idx[i] >= 0]), set(built.pool_doc_idx[i])
        assert not pos & pool
    assert first.stats["teacher_pairs_scored"] == (built.pool_doc_idx >= 0).sum() + (built.positive_doc_idx >= 0).sum()

    # Teacher scores are aligned with the passages they belong to (positives vs pool, per query).
    teacher = BiEncoder.from_config(cfg.teacher, cfg.cache_dir)
    q = teacher.encode(built.query_texts[:1], is_query=True)[0]
    docs = teacher.encode([built.doc_texts[j] for j in built.pool_doc_idx[0]], is_query=False)
    np.testing.assert_allclose(built.teacher_pool_scores[0], docs @ q, atol=1e-5)

    # THE CACHE HIT: a second preparation loads no model and scores nothing.
    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher was built although its scores are cached")

    with monkeypatch.context() as patch:
        patch.setattr(teacher_module, "build_teacher", no_teacher)
        second = prepare_assets(cfg, progress=False, data=data)
    assert second.stats["teacher_pairs_scored"] == 0
    assert second.stats["teacher_cache_hit"] and second.stats["pool_cache_hit"] and second.stats["trainset_cache_hit"]
    assert second.keys == first.keys and second.training_set_path == first.training_set_path

    # A truncated teacher file is detected (checksum) and rebuilt, never used.
    teacher_file = tmp_path / "cache" / "teacher" / f"{first.keys['teacher']}.npz"
    teacher_file.write_bytes(teacher_file.read_bytes()[: teacher_file.stat().st_size // 2])
    assert not is_complete(teacher_file)
    third = prepare_assets(cfg, progress=False, data=data)
    assert third.stats["teacher_cache_status"] == "corrupt" and not third.stats["teacher_cache_hit"]
    assert third.stats["teacher_pairs_scored"] == first.stats["teacher_pairs_scored"]
    assert third.stats["pool_cache_hit"] and is_complete(teacher_file)
    rebuilt = TrainingSet.load(third.training_set_path)
    np.testing.assert_allclose(rebuilt.teacher_pool_scores, built.teacher_pool_scores, atol=1e-5)

    # A partial write (file without its checksum sidecar) is not trusted either.
    teacher_file.with_suffix(".sha256").unlink()
    assert prepare_assets(cfg, progress=False, data=data).stats["teacher_cache_status"] == "corrupt"


def test_teacher_cache_key_follows_the_teacher_config(sample_data, tmp_path):
    data = scifact_ci(sample_data)
    base = prepare_assets(_trial(sample_data, tmp_path), progress=False, data=data)
    other = prepare_assets(_trial(sample_data, tmp_path, passage_max_length=24), progress=False, data=data)
    assert other.keys["pools"] == base.keys["pools"] and other.stats["pool_cache_hit"]
    assert other.keys["teacher"] != base.keys["teacher"] and other.stats["teacher_pairs_scored"] > 0
    same = prepare_assets(_trial(sample_data, tmp_path, batch_size=3), progress=False, data=data)
    assert same.keys["teacher"] == base.keys["teacher"] and same.stats["teacher_pairs_scored"] == 0


_PREPARE_IN_A_PROCESS = """
import json, sys
from trainables.prepare.assets import prepare_assets
from trainables.config import TrialConfig
cfg = TrialConfig.from_yaml(sys.argv[1])
stats = prepare_assets(cfg, progress=False).stats
print(json.dumps({k: stats[k] for k in ("pool_cache_status", "teacher_cache_status", "teacher_pairs_scored")}))
"""


def test_two_processes_preparing_one_cache_build_each_asset_once(sample_data, tmp_path):
    """A lock per cache entry: the second process waits for the first, then reuses what it built."""
    import json
    import subprocess
    import sys

    config = tmp_path / "trial.yaml"
    _trial(sample_data, tmp_path / "cache").to_yaml(config)
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE_IN_A_PROCESS, str(config)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    stats = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sorted(s["pool_cache_status"] for s in stats) == ["hit", "miss"]
    assert sorted(s["teacher_cache_status"] for s in stats) == ["hit", "miss"]
    assert sorted(s["teacher_pairs_scored"] > 0 for s in stats) == [False, True]
    assert not list((tmp_path / "cache").rglob(".*tmp*")), "no temporary file is left behind"


# ---- teacher scores from a file (teacher.scores_file) -------------------------------------------
def test_a_public_pickle_scores_file_replaces_the_teacher_with_zero_forward_passes(sample_data, tmp_path, monkeypatch):
    import gzip
    import pickle

    data = scifact_ci(sample_data)
    modelled = prepare_assets(_trial(sample_data, tmp_path / "cache"), progress=False, data=data)
    ts = TrainingSet.load(modelled.training_set_path)
    # The public layout {qid: {pid: score}} with int ids, gzipped; scores unlike the model's, to tell them apart.
    published = {}
    for i, qid in enumerate(ts.query_ids):
        for idx, score in [*zip(ts.positive_doc_idx[i], ts.teacher_positive_scores[i]),
                           *zip(ts.pool_doc_idx[i], ts.teacher_pool_scores[i])]:
            if idx >= 0:
                published.setdefault(int(qid), {})[int(ts.doc_ids[idx])] = 10.0 * float(score) - 3.0
    scores_file = tmp_path / "ce-scores.pkl.gz"
    scores_file.write_bytes(gzip.compress(pickle.dumps(published)))

    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher model was built although the scores come from a file")

    monkeypatch.setattr(teacher_module, "build_teacher", no_teacher)
    cfg = _trial(sample_data, tmp_path / "cache", scores_file=str(scores_file), allow_pickle=True)
    from_file = prepare_assets(cfg, progress=False, data=data)
    assert from_file.stats["teacher_cache_status"] == "miss" and from_file.stats["pool_cache_hit"]
    assert from_file.stats["teacher_forward_passes"] == 0 and from_file.stats["teacher_pairs_scored"] == 0
    assert from_file.stats["teacher_pairs_read"] == (ts.pool_doc_idx >= 0).sum() + (ts.positive_doc_idx >= 0).sum()
    assert from_file.keys["teacher"] != modelled.keys["teacher"]
    read = TrainingSet.load(from_file.training_set_path)
    np.testing.assert_allclose(read.teacher_pool_scores, 10.0 * ts.teacher_pool_scores - 3.0, rtol=1e-5)
    np.testing.assert_allclose(read.teacher_positive_scores, 10.0 * ts.teacher_positive_scores - 3.0, rtol=1e-5)

    # A file that misses pairs of the pools is one line naming how many, never a made-up score.
    del published[int(ts.query_ids[0])]
    holey = tmp_path / "holey.pkl"
    holey.write_bytes(pickle.dumps(published))
    n_missing = (ts.pool_doc_idx[0] >= 0).sum() + (ts.positive_doc_idx[0] >= 0).sum()
    with pytest.raises(DataError, match=rf"holey.pkl: {n_missing} of \d+ \(query, passage\) pairs have no teacher "
                                        rf"score, e\.g\. query '{ts.query_ids[0]}'"):
        prepare_assets(_trial(sample_data, tmp_path / "cache", scores_file=str(holey), allow_pickle=True),
                       progress=False, data=data)
