"""Tokenise once (token_ids.py): the ids equal today's tokenizer call, steps and encodings never tokenise again."""
from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.train.epoch_plan import plan_epoch
from trainables.models.student import BiEncoder
from trainables.data.token_ids import StepTokens, token_ids, training_tokens
from trainables.train.step import DistillScorer, StepInputs, build_step_inputs, make_optimizer, train_step
from trainables.data.training_set import TrainingSet


def _texts(folder, name, field="text"):
    rows = [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return [" ".join(filter(None, [r.get("title", ""), r[field]])) for r in rows]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    cfg = TrialConfig.from_dict({"student": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 48}})
    return BiEncoder.from_config(cfg.student, tmp_path_factory.mktemp("models"))


def test_token_ids_pad_into_the_batches_the_tokenizer_makes_on_the_shipped_samples(student, sample_data, tmp_path):
    passages = _texts(sample_data / "scifact_ci", "corpus.jsonl") + _texts(sample_data / "dl19_sample", "corpus.jsonl")
    queries = _texts(sample_data / "scifact_ci", "queries.jsonl") + _texts(sample_data / "dl19_sample", "queries.jsonl")
    passages += ["", "  ", "ünïcode ✓ " * 40]     # empty, blank, truncated multi-byte text
    rng = np.random.default_rng(0)
    for texts, is_query in ((passages, False), (queries, True)):
        length = student.query_max_length if is_query else student.passage_max_length
        mapped = token_ids(tmp_path, f"sample:{is_query}", lambda t=texts: [t[:500], t[500:]], student.tokenizer, length)
        assert len(mapped) == len(texts) and isinstance(mapped.ids, np.memmap)
        for rows in (np.arange(len(texts)), rng.choice(len(texts), 37), np.array([3, -1, 5, -1])):
            expected = student.tokenize([texts[r] if r >= 0 else "" for r in rows], is_query=is_query)
            got = mapped.batch(rows)
            assert set(got) == set(expected)
            for name in expected:
                assert torch.equal(got[name], expected[name]), name


def test_training_set_tokens_are_built_once_then_mapped_and_pickle_by_path(student, tmp_path, monkeypatch):
    ts = _small_set()
    ts.save(tmp_path / "ts.npz")
    first = training_tokens(tmp_path / "ts.npz", student.tokenizer, 16, 48, tmp_path / "cache")
    calls = _count_tokenizer_calls(student, monkeypatch)
    again = training_tokens(tmp_path / "ts.npz", student.tokenizer, 16, 48, tmp_path / "cache")
    assert calls == [] and np.array_equal(again.passages.ids, first.passages.ids)
    copy = pickle.loads(pickle.dumps(again.passages))
    assert len(pickle.dumps(again.passages)) < 1000 and np.array_equal(copy.ids, first.passages.ids)


def test_steps_and_encodings_from_token_ids_match_the_tokenizer_path_with_no_tokenizer_call(student, tmp_path,
                                                                                           monkeypatch):
    """The old path (texts tokenised in each step) and the new one give the same inputs and the same losses."""
    ts = _small_set()
    ts.save(tmp_path / "ts.npz")
    cfg = TrialConfig.from_dict({"data": {"pool_depth": 4}, "sampler": {"name": "topk", "k": 3},
                                 "optim": {"batch_size": 4, "lr": 1e-3}, "loss": {"name": "kl"}})
    tokens = training_tokens(tmp_path / "ts.npz", student.tokenizer, 16, 48, tmp_path / "cache")
    mapped = TrainingSet.load(tmp_path / "ts.npz", mapped=True)
    batches = plan_epoch(mapped, cfg, 0, 0, 1) + plan_epoch(mapped, cfg, 1, 0, 1)
    old = [_old_step_inputs(student, ts, tokens, batch) for batch in batches]
    calls = _count_tokenizer_calls(student, monkeypatch)
    new = [build_step_inputs(tokens, mapped, batch, 1, None) for batch in batches]
    for before, after in zip(old, new):
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(before.queries[name], after.queries[name])
            assert torch.equal(before.passages[name], after.passages[name])
        assert torch.equal(before.teacher_scores, after.teacher_scores)
    assert _losses(student, cfg, new) == _losses(student, cfg, old)      # bit for bit, step after step
    embeddings = student.encode_token_ids(tokens.passages, np.array([2, 0, 1]), batch_size=2)
    assert calls == []
    monkeypatch.undo()
    np.testing.assert_allclose(embeddings, student.encode([ts.doc_texts[i] for i in (2, 0, 1)], is_query=False),
                               atol=1e-6)


def _losses(student, cfg, inputs: list[StepInputs]) -> list[float]:
    torch.manual_seed(0)
    model = DistillScorer(BiEncoder(_copy(student.model), student.tokenizer, student.pooling, student.similarity,
                                    student.query_max_length, student.passage_max_length))
    optimizer, scheduler = make_optimizer(model, cfg, len(inputs))
    model.train()
    out = []
    for step, step_inputs in enumerate(inputs):
        torch.manual_seed(step)
        out.append(train_step(model, optimizer, scheduler, step_inputs, cfg.loss, step, 1.0, torch.device("cpu")))
    return out


def _copy(model):
    return pickle.loads(pickle.dumps(model))


def _old_step_inputs(student, ts: TrainingSet, tokens: StepTokens, batch) -> StepInputs:
    """The step inputs as train_step made them before tokenise-once: the step's texts through the tokenizer."""
    inputs = build_step_inputs(tokens, ts, batch, 1, None)
    q, pos, cand = batch.query_idx, batch.positive_col, batch.candidate_col
    docs = np.concatenate([ts.positive_doc_idx[q[:, None], np.maximum(pos, 0)],
                           ts.pool_doc_idx[q[:, None], np.maximum(cand, 0)]], axis=1)
    valid = np.concatenate([pos >= 0, cand >= 0], axis=1)
    texts = [ts.doc_texts[d] if ok else "" for d, ok in zip(docs.ravel(), valid.ravel())]
    return dataclasses.replace(inputs, queries=student.tokenize([ts.query_texts[i] for i in q], is_query=True),
                               passages=student.tokenize(texts, is_query=False))


def _count_tokenizer_calls(student, monkeypatch) -> list:
    calls = []
    tokenizer_type = type(student.tokenizer)
    original = tokenizer_type.__call__

    def counted(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tokenizer_type, "__call__", counted)
    return calls


SAMPLE = Path(__file__).parent / "data" / "scifact_ci"


def _small_set() -> TrainingSet:
    """8 shipped SciFact train queries, 30 shipped passages (one long enough to truncate, one empty)."""
    rng = np.random.default_rng(0)
    docs = _texts(SAMPLE, "corpus.jsonl")[:29] + [""]
    n_q = 8
    pool = np.stack([rng.choice(np.arange(8, 30), 4, replace=False) for _ in range(n_q)])
    pool[1, 3] = -1
    scores = rng.normal(size=(n_q, 4)).astype(np.float32)
    scores[1, 3] = np.nan
    return TrainingSet(
        query_ids=[f"q{i}" for i in range(n_q)],
        query_texts=_texts(SAMPLE, "queries.jsonl")[-n_q:],
        doc_ids=[f"d{i}" for i in range(30)], doc_texts=docs,
        positive_doc_idx=np.arange(n_q)[:, None], pool_doc_idx=pool,
        teacher_positive_scores=rng.normal(size=(n_q, 1)).astype(np.float32) + 2, teacher_pool_scores=scores,
        student_positive_scores=np.zeros((n_q, 1), np.float32), student_pool_scores=np.where(pool >= 0, 0.0, np.nan
                                                                                            ).astype(np.float32),
    )


def test_evaluation_encodes_from_token_ids_with_no_tokenizer_call_after_the_first(student, sample_data, tmp_path,
                                                                                   monkeypatch):
    from trainables.config import EvalConfig
    from trainables.evaluate.evaluation import evaluate_student

    cfg = EvalConfig(dev=f"beir:{sample_data / 'dl19_sample'}", beir=[], top_k=100, batch_size=64)
    from_texts = evaluate_student(student, cfg, seed=0, progress=False)
    evaluate_student(student, cfg, seed=0, progress=False, cache_dir=str(tmp_path))   # tokenises once
    calls = _count_tokenizer_calls(student, monkeypatch)
    from_tokens = evaluate_student(student, cfg, seed=0, progress=False, cache_dir=str(tmp_path))
    assert calls == []
    assert from_tokens.metrics.keys() == from_texts.metrics.keys()
    for key, value in from_texts.metrics.items():
        assert from_tokens.metrics[key] == pytest.approx(value, abs=1e-4), key


def test_the_input_pipeline_gives_the_same_steps_from_a_loader_process_as_in_process(student, tmp_path):
    from trainables.train.input_pipeline import StepDataset, step_batches

    ts = _small_set()
    ts.save(tmp_path / "ts.npz")
    cfg = TrialConfig.from_dict({"data": {"pool_depth": 4}, "sampler": {"name": "topk", "k": 3},
                                 "optim": {"batch_size": 2, "epochs": 2}, "cache_dir": str(tmp_path / "cache")})
    tokens = training_tokens(tmp_path / "ts.npz", student.tokenizer, 16, 48, tmp_path / "cache")
    dataset = StepDataset(tmp_path / "ts.npz", tokens, cfg, 0, 1, TrainingSet.load(tmp_path / "ts.npz"))
    here = list(step_batches(dataset, 1, 8, 0, torch.device("cpu")))
    loader = list(step_batches(dataset, 1, 8, 1, torch.device("cpu")))
    assert len(here) == len(loader) == 7
    for (batch, inputs), (other_batch, other) in zip(here, loader):
        np.testing.assert_array_equal(batch.query_idx, other_batch.query_idx)
        assert torch.equal(inputs.passages["input_ids"], other.passages["input_ids"])
        assert torch.equal(inputs.teacher_scores, other.teacher_scores)
