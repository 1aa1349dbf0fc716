"""trainables/evaluate/evaluation.py: ir_measures core against hand computations, metric keys, end-to-end on scifact_ci."""
from __future__ import annotations

import math

import ir_measures
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ir_measures import RR, R, nDCG

from trainables.config import DatasetRef, EvalConfig, StudentConfig
from trainables.data import load_data, subset
from trainables.evaluate.evaluation import DL_MEASURES, EvalResult, eval_sets, evaluate_run, evaluate_student, retrieve
from trainables.outputs import FINAL_LOSS, eval_metric_keys, final_metric_keys
from trainables.models.student import BiEncoder


def ranked(*doc_ids: str) -> dict[str, float]:
    """A run row with strictly decreasing scores, first docid ranked first."""
    return {d: float(len(doc_ids) - i) for i, d in enumerate(doc_ids)}


# ---- evaluate_run: the pure core ----------------------------------------------------------------
def test_rr_at_10_matches_hand_computation():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d9": 1}, "q3": {"d3": 1}}
    run = {
        "q1": ranked("x1", "x2", "d1", "x3"),                           # first relevant at rank 3
        "q2": ranked("d2", "d9"),                                       # rank 1
        "q3": ranked(*[f"x{i}" for i in range(10)], "d3"),              # rank 11: beyond the cutoff
    }
    aggregate, per_query = evaluate_run(run, qrels, {"rr": RR @ 10})
    assert per_query["rr"] == pytest.approx({"q1": 1 / 3, "q2": 1.0, "q3": 0.0})
    assert aggregate["rr"] == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)


def test_ndcg_at_10_graded_matches_hand_computation():
    # trec_eval nDCG: gain = grade, discount = log2(rank + 1), ideal ranking of all judged grades
    qrels = {"q1": {"a": 1, "c": 3, "d": 2, "z": 0}}
    run = {"q1": ranked("a", "unjudged", "c", "z")}
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    aggregate, per_query = evaluate_run(run, qrels, {"ndcg": nDCG @ 10})
    assert per_query["ndcg"]["q1"] == pytest.approx(dcg / idcg)
    assert aggregate["ndcg"] == pytest.approx(dcg / idcg)


def test_trec_dl_rr_and_recall_count_grade_two_and_above():
    qrels = {"q1": {"g1": 1, "g2": 2, "g3": 3, "g3b": 3}}
    run = {"q1": ranked("g1", "g2", "x", "g3")}                          # g3b never retrieved
    aggregate, _ = evaluate_run(run, qrels, DL_MEASURES | {"rr_any": RR @ 10, "recall_any": R @ 1000})
    assert aggregate["rr_any"] == pytest.approx(1.0)                     # grade 1 is relevant by default
    assert aggregate["mrr_at_10"] == pytest.approx(1 / 2)                # rel=2: first hit is g2 at rank 2
    assert aggregate["recall_at_1000"] == pytest.approx(2 / 3)           # g2, g3 of {g2, g3, g3b}
    assert aggregate["recall_any"] == pytest.approx(3 / 4)


def test_query_missing_from_run_counts_zero_and_every_judged_query_has_a_value():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2}}
    run = {"q1": ranked("d1"), "q2": {}, "unjudged": ranked("d1")}       # q3 absent, q2 retrieved nothing
    measures = {"rr": RR @ 10, "ndcg": nDCG @ 10, "recall": R @ 1000}
    aggregate, per_query = evaluate_run(run, qrels, measures)
    for name in measures:
        assert per_query[name] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
        assert aggregate[name] == pytest.approx(1 / 3)


def test_evaluate_run_accepts_plain_measures_and_rejects_empty_qrels():
    aggregate, per_query = evaluate_run({"q": ranked("d")}, {"q": {"d": 1}}, [RR @ 10])
    assert aggregate == {"RR@10": 1.0} and per_query == {"RR@10": {"q": 1.0}}
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate_run({"q": ranked("d")}, {}, [RR @ 10])


@settings(max_examples=40, deadline=None)
@given(
    grades=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    scores=st.lists(st.floats(-5, 5, allow_nan=False), min_size=0, max_size=12, unique=True),
    with_missing_query=st.booleans(),
)
def test_evaluate_run_agrees_with_ir_measures_and_stays_in_unit_interval(grades, scores, with_missing_query):
    qrels = {"q1": {f"d{i}": g for i, g in enumerate(grades)}}
    if with_missing_query:
        qrels["q2"] = {"d0": 1}
    run = {"q1": {f"d{i}": s for i, s in enumerate(scores)}}
    measures = [RR @ 10, nDCG @ 10, R @ 1000, RR(rel=2) @ 10, R(rel=2) @ 1000]
    aggregate, per_query = evaluate_run(run, qrels, measures)
    reference = ir_measures.calc_aggregate(measures, qrels, run)
    for measure in measures:
        assert aggregate[str(measure)] == pytest.approx(reference[measure])
        assert set(per_query[str(measure)]) == set(qrels)
        assert all(0.0 <= v <= 1.0 for v in per_query[str(measure)].values())


# ---- metric keys --------------------------------------------------------------------------------
def test_metric_keys_follow_the_contract_and_carry_the_subset_suffix():
    refs = dict(dev="beir:data/scifact_ci", beir=["beir:data/scifact", "beir:data/nfcorpus"],
                dl=[{"id": "beir:data/msmarco_dl19_subset", "name": "dl19"}])
    full = [k for s in eval_sets(EvalConfig(**refs)) for k in s.measures]
    assert full == ["dev_mrr_at_10", "dev_ndcg_at_10", "dev_recall_at_1000",
                    "beir/scifact/ndcg_at_10", "beir/scifact/mrr_at_10",
                    "beir/nfcorpus/ndcg_at_10", "beir/nfcorpus/mrr_at_10",
                    "dl19_ndcg_at_10", "dl19_mrr_at_10", "dl19_recall_at_1000"]
    subset = [k for s in eval_sets(EvalConfig(**refs, subset_distractors=7)) for k in s.measures]
    assert subset == [f"{k}_subset7" for k in full]


def test_the_light_key_list_is_the_keys_eval_sets_evaluate_plus_the_beir_average():
    refs = dict(dev="beir:data/scifact_ci", beir=["beir:data/scifact", "beir:data/nfcorpus"],
                dl=[{"id": "beir:data/msmarco_dl19_subset", "name": "dl19"}])
    for cfg in (EvalConfig(**refs), EvalConfig(**refs, subset_distractors=7)):
        per_set = [k for s in eval_sets(cfg) for k in s.measures]
        assert eval_metric_keys(cfg) == per_set + [f"beir_ndcg_at_10_avg{cfg.metric_suffix}"]
        # ... and the best point of the dev set's learning curve (a sweep may select on it).
        assert final_metric_keys(cfg) == eval_metric_keys(cfg) + [f"dev_mrr_at_10{cfg.metric_suffix}_best", FINAL_LOSS]
    no_beir = EvalConfig(dev="beir:data/scifact_ci", beir=[])
    assert eval_metric_keys(no_beir) == [k for s in eval_sets(no_beir) for k in s.measures]


def test_two_sets_with_one_label_are_rejected():
    cfg = EvalConfig(dev=None, beir=["beir:a/scifact", "beir:b/scifact"])
    with pytest.raises(ValueError, match="beir/scifact/ndcg_at_10.*distinct `name`"):
        eval_sets(cfg)


# ---- end to end with the real student, retrieval and data modules ------------------------------
@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    cfg = StudentConfig(model="tiny:bert", query_max_length=16, passage_max_length=64)
    return BiEncoder.from_config(cfg, str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def scifact_ci(sample_data):
    return f"beir:{sample_data / 'scifact_ci'}"


@pytest.fixture(scope="module")
def full_result(tiny_student, scifact_ci) -> EvalResult:
    cfg = EvalConfig(dev=scifact_ci, beir=[scifact_ci], top_k=100, batch_size=64)
    return evaluate_student(tiny_student, cfg, seed=0, progress=False)


def test_evaluate_student_on_scifact_ci_gives_unit_interval_metrics_and_per_query_scores(full_result, scifact_ci):
    metrics, per_query = full_result.metrics, full_result.per_query
    assert set(metrics) == {"dev_mrr_at_10", "dev_ndcg_at_10", "dev_recall_at_1000",
                            "beir/scifact_ci/ndcg_at_10", "beir/scifact_ci/mrr_at_10", "beir_ndcg_at_10_avg"}
    assert list(metrics) == eval_metric_keys(EvalConfig(dev=scifact_ci, beir=[scifact_ci]))
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["beir_ndcg_at_10_avg"] == metrics["beir/scifact_ci/ndcg_at_10"] == metrics["dev_ndcg_at_10"]
    judged = set(load_data(scifact_ci).qrels)
    assert len(judged) == 50
    assert set(per_query) == set(metrics) - {"beir_ndcg_at_10_avg"}
    for key, values in per_query.items():
        assert set(values) == judged
        assert metrics[key] == pytest.approx(sum(values.values()) / len(values))
    # a random encoder still retrieves something, so recall at depth 100 of 1,000 docs is not 0
    assert metrics["dev_recall_at_1000"] > 0.0
    assert full_result.timings["total_s"] > 0.0 and "dev/encode_corpus_s" in full_result.timings


def test_retrieve_returns_depth_min_top_k_corpus(tiny_student, scifact_ci):
    data = subset(load_data(scifact_ci), 30, seed=0)
    run = retrieve(tiny_student, data, top_k=5000, batch_size=64, progress=False)
    assert set(run) == set(data.qrels)
    assert {len(docs) for docs in run.values()} == {len(data.corpus)}


def test_subset_mode_suffixes_keys_and_keeps_every_judged_doc(tiny_student, scifact_ci):
    cfg = EvalConfig(dev=scifact_ci, beir=[], dl=[{"id": scifact_ci, "name": "dl"}],
                     subset_distractors=20, top_k=1000, batch_size=64)
    result = evaluate_student(tiny_student, cfg, seed=3, progress=False)
    assert set(result.metrics) == {"dev_mrr_at_10_subset20", "dev_ndcg_at_10_subset20", "dev_recall_at_1000_subset20",
                                   "dl_ndcg_at_10_subset20", "dl_mrr_at_10_subset20", "dl_recall_at_1000_subset20"}
    assert set(result.per_query) == set(result.metrics)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    # the run covers the whole sub-corpus (judged docs + 20 < 1000), so recall is 1 for every
    # query exactly when every judged doc was kept
    assert set(result.per_query["dev_recall_at_1000_subset20"].values()) == {1.0}
    # scifact grades are all 1: under the DL convention (relevant = grade >= 2) nothing is relevant
    assert result.metrics["dl_recall_at_1000_subset20"] == 0.0
    # both sets judge the same docs, so both drew the same sub-corpus: encoded once
    assert result.timings["dl/corpus_reused_from"] == "dev"


def test_sharded_corpus_encoding_gives_the_same_metrics_on_rank_zero(tiny_student, scifact_ci, full_result):
    cfg = EvalConfig(dev=scifact_ci, beir=[], top_k=100, batch_size=64)
    from_rank1 = []

    def gather_on_rank1(obj):  # rank 1 runs first here and leaves its slice for rank 0
        from_rank1.append(obj)
        return [None, obj]

    rank1 = evaluate_student(tiny_student, cfg, seed=0, progress=False, shard=(1, 2, gather_on_rank1))
    assert rank1.metrics == {} and rank1.per_query == {}
    slices = iter(from_rank1)
    rank0 = evaluate_student(tiny_student, cfg, seed=0, progress=False,
                             shard=(0, 2, lambda obj: [obj, next(slices)]))
    sent = from_rank1[0]                                  # only (queries × k) ids and scores travel
    assert sent.scores.shape == sent.doc_ids.shape == (50, 100)
    dev_keys = ("dev_mrr_at_10", "dev_ndcg_at_10", "dev_recall_at_1000")
    assert rank0.metrics == pytest.approx({k: full_result.metrics[k] for k in dev_keys}, abs=1e-6)


# ---- one corpus encoding for the sets that share a corpus ---------------------------------------
@pytest.fixture
def counted_passages(tiny_student, monkeypatch) -> list[int]:
    """Passages the student encodes (the real encoder, counted): one entry per call."""
    calls: list[int] = []
    encode = tiny_student.encode

    def counting(texts, is_query, *args, **kwargs):
        texts = list(texts)
        if not is_query:
            calls.append(len(texts))
        return encode(texts, is_query, *args, **kwargs)

    monkeypatch.setattr(tiny_student, "encode", counting)
    return calls


def shared_corpus_sets(sample_data, **overrides) -> EvalConfig:
    """SciFact's layout: validation = held-out train queries, test = the test split, one corpus; + DL19."""
    root = sample_data / "scifact_ci"
    fields = {"dev": {"id": f"beir:{root}", "split": "train", "holdout": 20, "part": "holdout", "name": "val"},
              "beir": [f"beir:{root}"], "dl": [{"id": f"beir:{sample_data / 'dl19_sample'}", "name": "dl19"}],
              "top_k": 100, "batch_size": 64}
    return EvalConfig(**{**fields, **overrides})


def test_sets_sharing_a_corpus_encode_it_once_with_the_metrics_of_separate_evaluations(
        tiny_student, sample_data, counted_passages):
    cfg = shared_corpus_sets(sample_data)
    together = evaluate_student(tiny_student, cfg, seed=0, progress=False)
    assert sum(counted_passages) == 1000 + 296          # scifact_ci once, dl19_sample once
    timings = together.timings
    assert timings["beir/scifact_ci/corpus_reused_from"] == "dev"
    assert timings["beir/scifact_ci/encode_corpus_s"] == timings["beir/scifact_ci/index_s"] == 0.0
    assert timings["dev/encode_corpus_s"] > 0.0 and "dev/corpus_reused_from" not in timings
    assert "dl19/corpus_reused_from" not in timings     # another corpus

    counted_passages.clear()
    alone = {}
    for one_set in ({"beir": [], "dl": []}, {"dev": None, "dl": []}, {"dev": None, "beir": []}):
        alone.update(evaluate_student(tiny_student, cfg.model_copy(update=one_set), seed=0, progress=False).metrics)
    assert sum(counted_passages) == 1000 + 1000 + 296
    del alone["beir_ndcg_at_10_avg"]
    assert together.metrics == pytest.approx({**alone, "beir_ndcg_at_10_avg": alone["beir/scifact_ci/ndcg_at_10"]},
                                             abs=1e-7)
    assert together.runs["beir/scifact_ci"].keys() == set(load_data(f"beir:{sample_data / 'scifact_ci'}").qrels)


def test_subset_sets_with_different_judged_docs_encode_their_own_sub_corpus(tiny_student, sample_data,
                                                                            counted_passages):
    result = evaluate_student(tiny_student, shared_corpus_sets(sample_data, subset_distractors=20), seed=0,
                              progress=False)
    assert not any(key.endswith("corpus_reused_from") for key in result.timings)
    assert len(counted_passages) == 3


def test_a_sharded_evaluation_gathers_once_per_distinct_corpus_on_every_rank(tiny_student, sample_data):
    """Every rank skips the reused set's gather alike, so no rank waits on a gather the others never call."""
    cfg = shared_corpus_sets(sample_data, dl=[])
    from_rank1 = []

    def gather_on_rank1(obj):
        from_rank1.append(obj)
        return [None, obj]

    rank1 = evaluate_student(tiny_student, cfg, seed=0, progress=False, shard=(1, 2, gather_on_rank1))
    assert rank1.metrics == {} and len(from_rank1) == 1
    slices = iter(from_rank1)
    gathered_on_rank0 = []

    def gather_on_rank0(obj):
        gathered_on_rank0.append(obj)
        return [obj, next(slices)]

    rank0 = evaluate_student(tiny_student, cfg, seed=0, progress=False, shard=(0, 2, gather_on_rank0))
    assert len(gathered_on_rank0) == 1 and rank0.timings["beir/scifact_ci/corpus_reused_from"] == "dev"
    whole = evaluate_student(tiny_student, cfg, seed=0, progress=False)
    assert rank0.metrics == pytest.approx(whole.metrics, abs=1e-6)


def test_each_evaluation_set_leaves_a_trec_run_that_rescores_to_the_logged_metric(full_result, scifact_ci, tmp_path):
    """The run behind every metric is kept (top `top_k`, 6 columns): trec_eval, ranx or ir_measures re-score it."""
    import gzip

    import ir_measures

    from trainables.data.runfile import read_run_file, write_run_file
    from trainables.outputs import run_file_name

    assert set(full_result.runs) == {"dev", "beir/scifact_ci"}
    path = tmp_path / run_file_name("beir/scifact_ci")
    assert path.name == "beir_scifact_ci.trec.gz"
    lines = write_run_file(path, full_result.runs["beir/scifact_ci"], tag="study-t0001")
    rows = [line.split() for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    assert lines == len(rows) == 50 * 100 and all(len(row) == 6 and row[1] == "Q0" and row[5] == "study-t0001" for row in rows)
    plain = tmp_path / "plain.trec"
    write_run_file(plain, full_result.runs["beir/scifact_ci"], tag="study-t0001")
    assert [line.split() for line in plain.read_text().splitlines()] == rows
    assert read_run_file(plain)[rows[0][0]][0][0] == rows[0][2]       # rank 1 first
    qrels = load_data(scifact_ci).qrels
    rescored = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.RR @ 10], qrels,
                                          ir_measures.read_trec_run(str(path)))
    assert rescored[ir_measures.nDCG @ 10] == pytest.approx(full_result.metrics["beir/scifact_ci/ndcg_at_10"], abs=1e-6)
    assert rescored[ir_measures.RR @ 10] == pytest.approx(full_result.metrics["beir/scifact_ci/mrr_at_10"], abs=1e-6)
