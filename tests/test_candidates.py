"""First-stage candidate pools on real SciFact data with a tiny random student."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from trainables.prepare.assets import training_queries
from trainables.data.candidates import Pools, build_pools, random_corpus_passages, rank_by_teacher
from trainables.data.runfile import read_run_file as read_run
from trainables.config import ConfigError, StudentConfig, TrialConfig
from trainables.data.types import DataError, DictCorpus, RetrievalData
from trainables.evaluate.retrieval import build_index, encode_corpus, search
from trainables.models.student import BiEncoder
from trainables.data.training_set import TrainingSet

MAX_DOCS = 300  # all judged docs of scifact_ci + distractors: keeps CPU encoding to a second or two


def scifact_ci(sample_data: Path, max_docs: int | None = MAX_DOCS) -> RetrievalData:
    """scifact_ci (BEIR layout), the corpus cut to judged docs + the first distractors in file order."""
    folder = sample_data / "scifact_ci"
    try:
        from trainables.data import load_data
    except ImportError:  # the beir loader is being written in parallel: read the files directly
        data = _read_beir(folder, "test")
    else:
        data = load_data(f"beir:{folder}", "test")
    if max_docs is None:
        return data
    judged = {d for graded in data.qrels.values() for d in graded}
    keep = dict.fromkeys(d for d, _ in data.corpus if d in judged)
    keep.update(dict.fromkeys(d for d, _ in data.corpus if len(keep) < max_docs and d not in keep))
    ids = list(keep)
    corpus = DictCorpus(dict(zip(ids, data.corpus.get_many(ids))), source=f"{folder}[:{max_docs}]")
    return RetrievalData(f"{data.name}-{max_docs}", corpus, data.queries, data.qrels,
                         f"{data.fingerprint}-docs{max_docs}")


def _read_beir(folder: Path, split: str) -> RetrievalData:
    digest = hashlib.sha256()
    texts = {}
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        texts[doc["_id"]] = f"{doc.get('title', '')} {doc['text']}".strip()
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(grade)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        digest.update((folder / name).read_bytes())
    return RetrievalData(folder.name, DictCorpus(texts, str(folder)), queries, qrels, digest.hexdigest()[:16])


@pytest.fixture(scope="module")
def data(sample_data) -> RetrievalData:
    return scifact_ci(sample_data)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> BiEncoder:
    cfg = StudentConfig(model="tiny:bert", num_layers=1, query_max_length=16, passage_max_length=32)
    return BiEncoder.from_config(cfg, tmp_path_factory.mktemp("kd-cache"))


@pytest.fixture(scope="module")
def queries(data):
    with_positives, _ = training_queries(data, max_train_queries=8)
    return with_positives


@pytest.fixture(scope="module")
def dense_pools(data, queries, student) -> Pools:
    return build_pools(data, queries, student, depth=20, progress=False)


def test_candidate_pools_exclude_positives_and_have_the_depth(dense_pools, queries):
    assert dense_pools.query_ids == [q for q, _, _ in queries]
    assert dense_pools.pool_idx.shape == dense_pools.student_scores.shape == (len(queries), 20)
    for i, (_, _, positives) in enumerate(queries):
        pool, scores = dense_pools.doc_ids(i), dense_pools.student_scores[i]
        assert len(pool) == 20 == len(set(pool)) == np.isfinite(scores).sum()
        assert not set(pool) & set(positives)
        assert np.all(np.diff(scores) <= 1e-6), "pool not in descending student-score order"


def test_candidate_pools_match_exact_brute_force_inner_product(data, queries, student, dense_pools):
    doc_ids = [d for d, _ in data.corpus]
    doc_emb = student.encode([t for _, t in data.corpus], is_query=False, batch_size=37)
    q_emb = student.encode([t for _, t, _ in queries], is_query=True)
    for row, (_, _, positives) in enumerate(queries):
        scores = doc_emb @ q_emb[row]
        ranked = [i for i in np.argsort(-scores, kind="stable") if doc_ids[i] not in set(positives)][:20]
        np.testing.assert_allclose(dense_pools.student_scores[row], scores[ranked], atol=1e-5)
        gaps = np.abs(np.diff(scores[ranked]))
        for j, i in enumerate(ranked):  # docids must agree except inside float-noise ties
            tied = (j > 0 and gaps[j - 1] < 1e-5) or (j < len(gaps) and gaps[j] < 1e-5)
            assert tied or dense_pools.doc_ids(row)[j] == doc_ids[i]
        expected_pos = doc_emb[[doc_ids.index(p) for p in positives]] @ q_emb[row]
        np.testing.assert_allclose(dense_pools.student_positive_scores[row][:len(positives)], expected_pos, atol=1e-5)


def test_candidate_pools_from_a_run_file(data, queries, student, tmp_path):
    (qid_a, _, pos_a), (qid_b, _, _) = queries[0], queries[1]
    others = [d for d, _ in data.corpus if d not in pos_a][:4]
    run = tmp_path / "run.trec"
    # Lines out of order on purpose: the rank column decides; a positive is in the run and must go.
    run.write_text("\n".join([
        f"{qid_a} Q0 {others[2]} 3 7.0 bm25",
        f"{qid_a} Q0 {others[0]} 1 9.0 bm25",
        f"{qid_a} Q0 {pos_a[0]} 2 8.5 bm25",
        f"{qid_a} Q0 {others[1]} 4 6.0 bm25",
        f"{qid_a} Q0 {others[3]} 5 5.0 bm25",
    ]) + "\n")
    pools = build_pools(data, queries[:2], student, depth=3, candidates_file=run, progress=False)
    assert pools.doc_ids(0) == [others[0], others[2], others[1]]
    assert pools.doc_ids(1) == [] and qid_b not in read_run(run)  # no candidates: an empty pool
    q = student.encode([queries[0][1]], is_query=True)[0]
    expected = student.encode(data.corpus.get_many(pools.doc_ids(0)), is_query=False) @ q
    np.testing.assert_allclose(pools.student_scores[0], expected, atol=1e-5)
    assert np.isnan(pools.student_scores[1]).all() and (pools.pool_idx[1] == -1).all()
    assert pools.source == str(run)


def test_candidate_run_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 3.0 tag\nq1 Q0 d2 two 2.0 tag\n")
    with pytest.raises(DataError, match=r"bad.trec:2: rank must be an integer"):
        read_run(bad)
    bad.write_text("q1 d1 1 3.0\n")
    with pytest.raises(DataError, match=r"bad.trec:1: expected .*'qid Q0 docid rank score tag'"):
        read_run(bad)


def test_candidate_pools_survive_the_array_round_trip(dense_pools):
    arrays = dense_pools.to_arrays()
    assert all(a.dtype.kind != "U" or a.size <= len(dense_pools) for a in arrays.values())   # no docid strings per pair
    back = Pools.from_arrays(arrays)
    assert back.query_ids == dense_pools.query_ids and back.source == "dense"
    for i in range(len(back)):
        assert back.doc_ids(i) == dense_pools.doc_ids(i) and back.positive_doc_ids(i) == dense_pools.positive_doc_ids(i)
    for name in ("pool_idx", "student_scores", "positive_idx", "student_positive_scores", "random_counts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dense_pools, name))


def test_candidate_training_queries_need_a_positive_and_subset_is_seeded(data):
    everything, dropped = training_queries(data)
    assert dropped == len(data.queries) - len(everything)
    assert all(positives for _, _, positives in everything)
    first, _ = training_queries(data, max_train_queries=5)
    again, _ = training_queries(data, max_train_queries=5)
    assert first == again and len(first) == 5
    order = [q for q, _, _ in everything]
    assert [order.index(q) for q, _, _ in first] == sorted(order.index(q) for q, _, _ in first)


def test_candidate_corpus_shards_cover_the_corpus_once(data, student):
    corpus = DictCorpus(dict(list(data.corpus)[:100]))
    ids, emb = encode_corpus(student, corpus, batch_size=16, chunk_size=30)
    shards = [encode_corpus(student, corpus, batch_size=16, shard=(rank, 3)) for rank in range(3)]
    assert sorted(d for shard_ids, _ in shards for d in shard_ids) == sorted(ids) and len(ids) == len(corpus)
    row = {d: i for i, d in enumerate(ids)}
    for shard_ids, shard_emb in shards:
        np.testing.assert_allclose(shard_emb, emb[[row[d] for d in shard_ids]], atol=1e-5)
    with pytest.raises(ValueError, match="shard must be"):
        encode_corpus(student, corpus, shard=(3, 3))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_candidate_index_kinds_approximate_the_exact_index(kind):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    exact_scores, exact = search(build_index(emb, "flat"), queries, 10)
    np.testing.assert_allclose(exact_scores[:, 0], (queries @ emb.T).max(axis=1), rtol=1e-5)
    scores, approx = search(build_index(emb, kind, nprobe=16) if kind == "ivf" else build_index(emb, kind), queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.8 and np.all(np.diff(scores, axis=1) <= 1e-5)
    with pytest.raises(RuntimeError, match="no GPU"):
        build_index(emb, kind, use_gpu=True)


# ---- pools as the papers build them (data.pool_source, data.random_additions) ---------------------
def test_random_additions_are_distinct_seeded_and_never_a_positive_or_a_pool_candidate():
    corpus = [f"d{i}" for i in range(50)]
    positives, pools = [["d0"], ["d1", "d2"]], [["d3", "d4"], ["d5"]]
    extra = random_corpus_passages(corpus, positives, pools, 10, seed=0)
    for added, pos, pool in zip(extra, positives, pools):
        assert len(added) == len(set(added)) == 10 and not set(added) & (set(pos) | set(pool))
    assert extra == random_corpus_passages(corpus, positives, pools, 10, seed=0)
    assert extra != random_corpus_passages(corpus, positives, pools, 10, seed=1)
    # A query's draw does not depend on the other queries.
    assert random_corpus_passages(corpus, positives[1:], pools[1:], 10, seed=0) != [] and \
        random_corpus_passages(corpus, positives[:1], pools[:1], 10, seed=0) == extra[:1]
    assert len(random_corpus_passages(corpus[:6], [["d0"]], [["d1"]], 10, seed=0)[0]) == 4   # short, no repeats


def test_rank_by_teacher_keeps_the_teachers_top_of_the_first_stage_and_the_random_additions():
    pools = Pools.from_lists(["q"], [["a", "b", "c", "d", "r1", "r2"]], [np.arange(6, dtype=np.float32)], [["p"]],
                             [np.zeros(1, np.float32)], "dense", [2])
    teacher = np.array([[0.1, 0.9, 0.5, 0.7, -5.0, 3.0]], np.float32)
    cut, scores = rank_by_teacher(pools, teacher, 2)
    assert cut.doc_ids(0) == ["b", "d", "r1", "r2"] and cut.random_counts.tolist() == [2]
    np.testing.assert_array_equal(scores[0], teacher[0][[1, 3, 4, 5]])
    np.testing.assert_array_equal(cut.student_scores[0], [1, 3, 4, 5])


@pytest.mark.parametrize("data, message", [
    ({"pool_source": "file"}, "pool_source 'file' needs data.candidates_file"),
    ({"pool_source": "student", "candidates_file": "run.trec"}, "pool_source 'student' retrieves its pools"),
    ({"pool_source": "teacher", "pool_depth": 20, "first_stage_depth": 10}, "first_stage_depth=10 < pool_depth=20"),
])
def test_pool_source_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=rf"trial.yaml: data: .*{message}"):
        TrialConfig.from_dict({"data": data}, source="trial.yaml")
    from_file = TrialConfig.from_dict({"data": {"candidates_file": "run.trec"}})
    assert from_file.data.effective_pool_source == "file"          # a file alone: its pools, as before
    assert from_file.with_overrides({"data.candidates_file": None}).data.effective_pool_source == "student"
    assert TrialConfig.from_dict({}).with_overrides({"data.candidates_file": "r"}).data.effective_pool_source == "file"


def test_teacher_ranked_pools_with_random_additions_from_prepare_assets(data, tmp_path):
    from trainables.prepare.assets import prepare_assets

    def trial(**data_cfg):
        return TrialConfig.from_dict({
            "data": {"train": {"id": "beir:unused"}, "max_train_queries": 6, **data_cfg},
            "student": {"model": "tiny:bert", "num_layers": 1, "query_max_length": 16, "passage_max_length": 32},
            "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
            "sampler": {"k": 4}, "cache_dir": str(tmp_path)})

    first_stage = TrainingSet.load(prepare_assets(trial(pool_depth=10), progress=False, data=data).training_set_path)
    ranked = prepare_assets(trial(pool_source="teacher", first_stage_depth=10, pool_depth=4, random_additions=3),
                            progress=False, data=data)
    assert ranked.stats["pool_size_min"] == 7 and ranked.stats["pool_depth"] == 4
    ts = TrainingSet.load(ranked.training_set_path)
    for i in range(len(ts)):
        full = dict(zip((first_stage.doc_ids[d] for d in first_stage.pool_doc_idx[i]), first_stage.teacher_pool_scores[i]))
        pool = [ts.doc_ids[d] for d in ts.pool_doc_idx[i]]
        top = sorted(full, key=lambda d: -full[d])[:4]
        assert pool[:4] == top                                             # the teacher's top 4, best first
        positives = {ts.doc_ids[d] for d in ts.positive_doc_idx[i] if d >= 0}
        assert not set(pool[4:]) & (set(full) | positives) and len(set(pool)) == 7   # 3 random, new passages
        assert np.isfinite(ts.teacher_pool_scores[i]).all()                # the teacher scored them too
