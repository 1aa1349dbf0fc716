"""Streaming, sharded evaluation (trainables/evaluate/sharded_search.py, topk.py) against a whole-corpus exact search.

The reference is the search evaluation did before it streamed: encode the whole corpus, one faiss
flat index, search it. Streaming through blocks, on 1 or several ranks, must give the same metrics.
"""
from __future__ import annotations

import numpy as np
import pytest

from trainables.config import EvalConfig, StudentConfig
from trainables.data import load_data
from trainables.evaluate.evaluation import eval_sets, evaluate_run, evaluate_student
from trainables.evaluate.retrieval import build_index, encode_corpus, search
from trainables.models.student import BiEncoder
from trainables.evaluate.topk import RunningTopK, TopK, merge_topk


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    cfg = StudentConfig(model="tiny:bert", query_max_length=16, passage_max_length=64)
    return BiEncoder.from_config(cfg, str(tmp_path_factory.mktemp("cache")))


def whole_corpus_metrics(student, cfg: EvalConfig) -> dict[str, float]:
    """Every set searched the way evaluation did before streaming: one flat index over all embeddings."""
    metrics = {}
    for eval_set in eval_sets(cfg):
        data = load_data(eval_set.ref)
        doc_ids, emb = encode_corpus(student, data.corpus, batch_size=cfg.batch_size)
        qids = [qid for qid in data.qrels if qid in data.queries]
        query_emb = student.encode([data.queries[q] for q in qids], is_query=True, batch_size=cfg.batch_size)
        scores, idx = search(build_index(emb, "flat", use_gpu=False), query_emb, min(cfg.top_k, len(doc_ids)))
        run = {q: {doc_ids[j]: s for j, s in zip(row_idx, row)} for q, row, row_idx in
               zip(qids, scores.tolist(), idx.tolist())}
        metrics.update(evaluate_run(run, data.qrels, eval_set.measures)[0])
    return metrics


def sharded(student, cfg: EvalConfig, world: int):
    """`evaluate_student` on `world` ranks, run one after the other: ranks > 0 first, their top-k handed to rank 0."""
    sent = {}
    for rank in range(world - 1, 0, -1):
        def gather(obj, rank=rank):
            sent.setdefault(rank, []).append(obj)
            return [None] * world
        assert evaluate_student(student, cfg, seed=0, progress=False, shard=(rank, world, gather)).metrics == {}
    calls = iter(range(len(sent.get(1, [])) or 1))

    def gather_on_rank0(obj):
        call = next(calls)
        return [obj] + [sent[rank][call] for rank in range(1, world)]
    return evaluate_student(student, cfg, seed=0, progress=False, shard=(0, world, gather_on_rank0))


@pytest.fixture(scope="module")
def expected_metrics(tiny_student):
    """The whole-corpus metrics of a config, computed once per config."""
    cache = {}

    def expected(cfg: EvalConfig) -> dict[str, float]:
        key = cfg.model_dump_json()
        if key not in cache:
            cache[key] = whole_corpus_metrics(tiny_student, cfg)
        return cache[key]
    return expected


@pytest.mark.parametrize("dataset", ["scifact_ci", "quickstart"])
@pytest.mark.parametrize("world", [1, 2])
def test_streaming_sharded_search_gives_the_whole_corpus_metrics(tiny_student, sample_data, expected_metrics,
                                                                 dataset, world):
    ref = f"beir:{sample_data / dataset}" if dataset == "scifact_ci" else {"id": "quickstart", "split": "test"}
    # blocks of 97 passages: many blocks per rank, the last one partial
    cfg = EvalConfig(dev=ref, beir=[], top_k=100, batch_size=64, block_size=97)
    expected = expected_metrics(cfg)
    result = sharded(tiny_student, cfg, world) if world > 1 else evaluate_student(tiny_student, cfg, 0, progress=False)
    assert result.metrics == pytest.approx(expected, abs=1e-6)
    assert all(len(row) == min(100, len(load_data(cfg.dev).corpus)) for row in result.runs["dev"].values())


def test_running_topk_is_the_exact_top_k_in_a_deterministic_order_whatever_the_blocks():
    rng = np.random.default_rng(0)
    query_emb = rng.normal(size=(7, 8)).astype(np.float32)
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    emb[150] = emb[20]                 # an exact tie across two blocks: the earlier passage ranks first
    ids = [f"d{i}" for i in range(300)]
    exact = query_emb @ emb.T
    expected = np.lexsort((np.broadcast_to(np.arange(300), exact.shape), -exact), axis=1)[:, :10]

    def streamed(block: int, world: int) -> TopK:
        parts = []
        for rank in range(world):
            top = RunningTopK(query_emb, k=10, use_gpu=False)
            mine = np.arange(rank, 300, world)
            for start in range(0, len(mine), block):
                pos = mine[start:start + block]
                top.add(pos, [ids[p] for p in pos], emb[pos])
            parts.append(top.result())
        return merge_topk(parts, 10)

    for block, world in [(300, 1), (7, 1), (10, 2), (33, 3)]:
        top = streamed(block, world)
        assert (top.positions == expected).all(), (block, world)
        assert np.allclose(top.scores, np.take_along_axis(exact, expected, axis=1), atol=1e-5)
        assert top.doc_ids[0, 0] == ids[expected[0, 0]]
    with pytest.raises(ValueError, match="increasing corpus positions"):
        top = RunningTopK(query_emb, k=3, use_gpu=False)
        top.add(np.array([5, 6]), ["a", "b"], emb[:2])
        top.add(np.array([1]), ["c"], emb[:1])


def test_intermediate_points_may_search_a_declared_subset_and_their_keys_say_so(sample_data):
    from trainables.outputs import curve_metric_key, eval_metric_keys, final_metric_keys

    ref = f"beir:{sample_data / 'scifact_ci'}"
    full = EvalConfig(dev=ref, beir=[ref])
    assert full.at_intermediate() is full and curve_metric_key(full) == "dev_mrr_at_10"
    cheap = EvalConfig(dev=ref, beir=[ref], intermediate="subset", intermediate_distractors=300)
    assert cheap.at_intermediate().subset_distractors == 300 and cheap.subset_distractors is None
    assert curve_metric_key(cheap) == "dev_mrr_at_10_subset300"           # what the curve's points report
    assert eval_metric_keys(cheap) == eval_metric_keys(full)              # the final evaluation: full corpus
    assert "dev_mrr_at_10_subset300_best" in final_metric_keys(cheap)
    # a learning-curve point evaluates the dev set alone; an every_steps point every set
    curve_point = cheap.at_intermediate(dev_only=True)
    assert (curve_point.beir, curve_point.subset_distractors) == ([], 300) and full.at_intermediate(True).beir == []
    assert [k for s in eval_sets(curve_point) for k in s.measures][0] == curve_metric_key(cheap)
    with pytest.raises(ValueError, match="intermediate"):
        EvalConfig(intermediate="half")


def test_an_approximate_index_is_built_per_rank_and_merges_like_the_exact_search(tiny_student, sample_data):
    """`hnsw` indexes each rank's whole shard (no streaming); on a small corpus it finds the exact neighbours."""
    from trainables.data import subset
    from trainables.evaluate.evaluation import retrieve

    data = subset(load_data(f"beir:{sample_data / 'scifact_ci'}"), 40, seed=0)
    exact = retrieve(tiny_student, data, top_k=20, batch_size=64, progress=False)
    sent = []
    retrieve(tiny_student, data, top_k=20, index_kind="hnsw", batch_size=64, progress=False,
             shard=(1, 2, lambda top: sent.append(top) or [None, top]))
    approx = retrieve(tiny_student, data, top_k=20, index_kind="hnsw", batch_size=64, progress=False,
                      shard=(0, 2, lambda top: [top, sent[0]]))
    assert {q: list(row) for q, row in approx.items()} == {q: list(row) for q, row in exact.items()}


def _gloo_rank(rank: int, world: int, init_file: str, student_dir: str, cfg_json: str, out: str) -> None:
    """One process of a real 2-process gloo group: the trial's own gather (`ddp.eval_shard`)."""
    import json

    import torch.distributed as dist

    from trainables.train.ddp import eval_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = evaluate_student(BiEncoder.load(student_dir), EvalConfig.model_validate_json(cfg_json), seed=0,
                                  progress=False, shard=eval_shard(rank, world, "cpu"))
        if rank == 0:
            with open(out, "w") as handle:
                json.dump(result.metrics, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_real_gloo_ranks_exchange_top_k_and_match_one_rank(tiny_student, sample_data, tmp_path):
    import json

    import torch.multiprocessing as mp

    ref = f"beir:{sample_data / 'scifact_ci'}"
    # a 200-distractor sub-corpus: the processes' start-up is the cost, the search is the same code at any size
    cfg = EvalConfig(dev=ref, beir=[ref], top_k=100, batch_size=64, block_size=50, subset_distractors=200)
    tiny_student.save(tmp_path / "student")
    mp.spawn(_gloo_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "student"), cfg.model_dump_json(),
                               str(tmp_path / "metrics.json")), nprocs=2, join=True)
    one_rank = evaluate_student(BiEncoder.load(tmp_path / "student"), cfg, seed=0, progress=False).metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(one_rank, abs=1e-6)


@pytest.mark.parametrize("world", [1, 2])
def test_streaming_from_token_ids_gives_the_whole_corpus_metrics_of_the_same_encodings(tiny_student, sample_data,
                                                                                        tmp_path, world):
    """With `cache_dir` each block is encoded from the corpus's token ids (and the queries from theirs): the
    streaming, sharded search equals one exact search over the same token-id encodings (like with like: a
    token-id encoding may differ from a text encoding by ~1e-7, in batches padded differently)."""
    from trainables.evaluate import eval_tokens

    cfg = EvalConfig(dev=f"beir:{sample_data / 'scifact_ci'}", beir=[], top_k=100, batch_size=64, block_size=97)
    eval_set = eval_sets(cfg)[0]
    data = load_data(eval_set.ref)
    qids = [qid for qid in data.qrels if qid in data.queries]
    tokens = eval_tokens.corpus_tokens(tiny_student, data, str(tmp_path))
    emb = tiny_student.encode_token_ids(tokens, batch_size=cfg.batch_size)
    doc_ids = [doc_id for doc_id, _ in data.corpus]
    query_emb = eval_tokens.encode_queries(tiny_student, data, qids, cfg.batch_size, cache_dir=str(tmp_path))
    scores, idx = search(build_index(emb, "flat", use_gpu=False), query_emb, min(cfg.top_k, len(doc_ids)))
    run = {q: {doc_ids[j]: s for j, s in zip(row_idx, row)} for q, row, row_idx in zip(qids, scores.tolist(), idx.tolist())}
    expected = evaluate_run(run, data.qrels, eval_set.measures)[0]

    if world == 1:
        result = evaluate_student(tiny_student, cfg, 0, progress=False, cache_dir=str(tmp_path))
    else:
        sent = []
        assert evaluate_student(tiny_student, cfg, 0, progress=False, cache_dir=str(tmp_path),
                                shard=(1, 2, lambda obj: sent.append(obj) or [None, None])).metrics == {}
        result = evaluate_student(tiny_student, cfg, 0, progress=False, cache_dir=str(tmp_path),
                                  shard=(0, 2, lambda obj: [obj, sent.pop(0)]))
    assert result.metrics == pytest.approx(expected, abs=1e-6)
