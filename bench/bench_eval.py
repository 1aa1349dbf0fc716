"""Evaluation benchmark: kd-study's `retrieve` + `evaluate_run` against BEIR's exact search + `EvaluateRetrieval`.

Both systems embed with the same student (BEIR through a wrapper exposing `encode_queries` /
`encode_corpus`), retrieve the top 100 over the same corpus and score nDCG@10, MRR@10 and R@100.
Two comparisons, each must agree to `--tolerance` (exit 1 otherwise):
  * end to end: each system's own run and metrics (retrieval + metrics wall time);
  * metrics only: both metric implementations on BEIR's run (isolates the evaluation semantics).

    python bench/bench_eval.py                                  # scifact_ci, packaged MiniLM, max_len 128, 3 repeats
    python bench/bench_eval.py --data ../shared/data/scifact    # full SciFact test (slow on CPU)
    python bench/bench_eval.py --model tiny:bert                # random tiny encoder, seconds
    python bench/bench_eval.py --precision fp32,bf16            # + kd-study under bf16 autocast (CPU)

`--precision`: kd-study's retrieval once per precision (`resources.precision`, trainables/train/precision.py:
bf16 = autocast of the encoder's forward; embeddings reach faiss as float32). BEIR stays fp32, the
reference; the tolerance check reads the fp32 row, a bf16 row prints its metric difference from it.
"""
from __future__ import annotations

import argparse
import copy
import functools
import logging
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

from _env import REPO_ROOT, commit  # noqa: E402  (bench/_env.py: offline models, quiet Ray)

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact_ci"
METRICS = ("nDCG@10", "MRR@10", "R@100")


class BeirStudent:
    """BEIR's dense-model protocol around a kd-study BiEncoder (same weights, same texts)."""

    def __init__(self, student):
        self.student = student

    def encode_queries(self, queries: list[str], batch_size: int, **kwargs):
        import torch

        return torch.from_numpy(self.student.encode(list(queries), is_query=True, batch_size=batch_size, progress=False))

    def encode_corpus(self, corpus: list[dict[str, str]], batch_size: int, **kwargs):
        import torch

        texts = [beir_text(doc) for doc in corpus]
        return torch.from_numpy(self.student.encode(texts, is_query=False, batch_size=batch_size, progress=False))


def beir_text(doc: dict[str, str]) -> str:
    """The corpus convention of trainables.data (title + " " + text when a title exists)."""
    title, text = doc.get("title", ""), doc.get("text", "")
    return f"{title} {text}" if title.strip() else text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a BEIR folder (default: %(default)s)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="packaged:all-MiniLM-L6-v2", help="student model spec, e.g. tiny:bert")
    parser.add_argument("--num-layers", type=int, default=None, help="keep the first N layers (default: all)")
    parser.add_argument("--max-length", type=int, default=128, help="passage max length in tokens")
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3, help="time each system N times, interleaved (median, range)")
    parser.add_argument("--cache-dir", default=None, help="model cache (default: a temporary folder)")
    parser.add_argument("--precision", default="fp32",
                        help="kd-study's precision, comma-separated (fp32, bf16, auto, gpu-bf16); BEIR stays fp32")
    return parser.parse_args(argv)


@functools.cache
def import_beir():
    """(GenericDataLoader, EvaluateRetrieval, DenseRetrievalExactSearch), unmodified BEIR code.

    `beir.retrieval.search.dense/__init__` also imports the multi-GPU search, which needs Hugging
    Face `datasets` (not installed here, and not needed): when it is missing, the exact-search
    module file is imported under a bare `beir.retrieval.search.dense` package instead.
    """
    from beir.datasets.data_loader import GenericDataLoader
    from beir.retrieval.evaluation import EvaluateRetrieval

    try:
        from beir.retrieval.search.dense import DenseRetrievalExactSearch
    except ModuleNotFoundError as error:
        if error.name != "datasets":
            raise
        import beir.retrieval.search as search_package

        package = types.ModuleType("beir.retrieval.search.dense")
        package.__path__ = [str(Path(search_package.__path__[0]) / "dense")]
        sys.modules[package.__name__] = package
        from beir.retrieval.search.dense.exact_search import DenseRetrievalExactSearch
    return GenericDataLoader, EvaluateRetrieval, DenseRetrievalExactSearch


def run_beir(student, corpus, queries, qrels, batch_size):
    _, EvaluateRetrieval, DenseRetrievalExactSearch = import_beir()

    score_function = "cos_sim" if student.similarity == "cosine" else "dot"
    search = DenseRetrievalExactSearch(BeirStudent(student), batch_size=batch_size, show_progress_bar=False)
    evaluator = EvaluateRetrieval(search, k_values=[10, 100], score_function=score_function)
    start = time.perf_counter()
    results = evaluator.retrieve(corpus, queries)
    metrics = beir_metrics(qrels, results)  # drops docids equal to their query id from `results`
    return time.perf_counter() - start, metrics, results


def beir_metrics(qrels, results) -> dict[str, float]:
    _, EvaluateRetrieval, _ = import_beir()
    ndcg, _map, recall, _precision = EvaluateRetrieval.evaluate(qrels, results, [10, 100])
    mrr = EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    return {"nDCG@10": ndcg["NDCG@10"], "MRR@10": mrr["MRR@10"], "R@100": recall["Recall@100"]}


def kd_metrics(run, qrels) -> dict[str, float]:
    from ir_measures import RR, R, nDCG

    from trainables.evaluate.evaluation import evaluate_run

    aggregate, _ = evaluate_run(run, qrels, {"nDCG@10": nDCG @ 10, "MRR@10": RR @ 10, "R@100": R @ 100})
    return aggregate


def spread(values: list[float], digits: int, unit: str = "") -> str:
    """`median (min – max)` of a measurement's repeats."""
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f} – {max(values):.{digits}f})"


def print_table(title: str, rows: list[tuple[str, list[float], dict[str, float], list[float] | None]]) -> None:
    """Markdown: system | seconds | metrics | speed-up over beir (beir seconds / system seconds, per repeat;
    > 1 = kd-study faster), medians and ranges over the repeats."""
    print(f"\n{title}\n")
    print("| system | seconds, median (min – max) | " + " | ".join(METRICS) + " | speed-up vs beir, median (min – max) |")
    print("|---|---|" + "---|" * len(METRICS) + "---|")
    for system, seconds, metrics, speed_ups in rows:
        print(f"| {system} | {spread(seconds, 3)} | " + " | ".join(f"{metrics[m]:.4f}" for m in METRICS)
              + f" | {spread(speed_ups, 2, 'x') if speed_ups else '1 (the peer)'} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.disable(logging.WARNING)  # BEIR logs every metric at INFO
    try:
        GenericDataLoader, _, _ = import_beir()
    except ImportError as error:
        print(f"beir is not importable ({error}); install it with `pip install --no-deps beir`", file=sys.stderr)
        return 2
    import torch

    from trainables.config import StudentConfig
    from trainables.data import load_data
    from trainables.evaluate.evaluation import retrieve
    from trainables.train.precision import PRECISIONS, autocast, autocast_dtype
    from trainables.models.student import BiEncoder

    cfg = StudentConfig(model=args.model, num_layers=args.num_layers,
                        query_max_length=args.query_max_length, passage_max_length=args.max_length)
    with tempfile.TemporaryDirectory(prefix="kd_bench_") as tmp:
        student = BiEncoder.from_config(cfg, args.cache_dir or tmp)
    student.eval()

    data = load_data(f"beir:{args.data}", args.split)
    corpus, queries, qrels = GenericDataLoader(data_folder=str(args.data)).load(split=args.split)
    if qrels != data.qrels:
        print("note: BEIR's loader reads different qrels (it always skips the first line as a header)")
    text_mismatches = sum(beir_text(corpus[d]) != t for d, t in data.corpus)
    if text_mismatches:
        print(f"note: {text_mismatches} corpus texts differ between BEIR's loader and trainables.data")
    same_ids = sum(qid in corpus for qid in queries)
    if same_ids:
        print(f"note: {same_ids} query ids are also docids; BEIR drops such documents from its run")

    precisions = [name.strip() for name in args.precision.split(",") if name.strip()]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        print(f"--precision: expected a comma-separated subset of {', '.join(PRECISIONS)}, got {args.precision!r}",
              file=sys.stderr)
        return 2
    cpu = torch.device("cpu")
    dtypes = {name: autocast_dtype(name, cpu) for name in precisions}
    # warm the thread pools and allocator on real batch shapes (each precision's kernels) before anything is timed
    warm_up = [text for (_, text), _ in zip(data.corpus, range(args.batch_size))]
    for dtype in {None, *dtypes.values()}:
        with autocast(cpu, dtype):
            student.encode(warm_up, is_query=False, batch_size=args.batch_size, progress=False)
    beir_seconds = []
    kd_seconds: dict[str, list[float]] = {name: [] for name in precisions}
    kd_end_to_end: dict[str, dict[str, float]] = {}
    beir_metrics_seconds, kd_metrics_seconds = [], []
    for _ in range(args.repeats):
        seconds, beir_end_to_end, beir_run = run_beir(student, corpus, queries, qrels, args.batch_size)
        beir_seconds.append(seconds)

        for name, dtype in dtypes.items():
            start = time.perf_counter()
            with autocast(cpu, dtype):
                run = retrieve(student, data, top_k=100, index_kind="flat", batch_size=args.batch_size,
                               progress=False)
            kd_end_to_end[name] = kd_metrics(run, data.qrels)
            kd_seconds[name].append(time.perf_counter() - start)

        beir_run_copy = copy.deepcopy(beir_run)
        start = time.perf_counter()
        beir_on_beir_run = beir_metrics(qrels, beir_run_copy)
        beir_metrics_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        kd_on_beir_run = kd_metrics(beir_run, data.qrels)
        kd_metrics_seconds.append(time.perf_counter() - start)
    median_seconds = {name: statistics.median(seconds) for name, seconds in kd_seconds.items()}

    print(f"commit {commit()}; {args.data} split={args.split}: {len(data.corpus)} docs, {len(qrels)} judged queries; "
          f"model {args.model} (layers {args.num_layers or 'all'}, max_len q{args.query_max_length}/"
          f"p{args.max_length}), {torch.get_num_threads()} torch threads, {args.repeats} interleaved repeats")
    tag = {name: "" if precisions == ["fp32"] else f" ({name})" for name in precisions}
    print_table("retrieval + metrics (each system's own run)", [
        ("beir DenseRetrievalExactSearch + EvaluateRetrieval", beir_seconds, beir_end_to_end, None),
        *((f"kd-study{tag[name]} evaluate.retrieve (faiss flat) + evaluate_run", kd_seconds[name], kd_end_to_end[name],
           [b / k for b, k in zip(beir_seconds, kd_seconds[name])]) for name in precisions),
    ])
    print_table("metrics only (both on beir's run)", [
        ("beir EvaluateRetrieval.evaluate + evaluate_custom(mrr)", beir_metrics_seconds, beir_on_beir_run, None),
        ("kd-study evaluate_run (ir_measures)", kd_metrics_seconds, kd_on_beir_run,
         [b / k for b, k in zip(beir_metrics_seconds, kd_metrics_seconds)]),
    ])
    print()

    for name in precisions:
        if dtypes[name] is not None and "fp32" in kd_end_to_end:
            moved = max(abs(kd_end_to_end[name][m] - kd_end_to_end["fp32"][m]) for m in METRICS)
            print(f"{name}: largest metric difference from kd-study fp32 {moved:.2e}, "
                  f"{median_seconds['fp32'] / median_seconds[name]:.2f}x the fp32 speed")
    # the agreement check is about semantics: it reads the fp32 (or else the first) kd-study row
    reference = kd_end_to_end.get("fp32", kd_end_to_end[precisions[0]])
    worst = max(abs(ours[m] - theirs[m]) for ours, theirs in
                ((reference, beir_end_to_end), (kd_on_beir_run, beir_on_beir_run)) for m in METRICS)
    verdict = "PASS" if worst <= args.tolerance else "FAIL"
    print(f"{verdict}: largest metric difference {worst:.2e} (tolerance {args.tolerance:.0e}; "
          "BEIR rounds to 5 decimals)")
    return 0 if verdict == "PASS" else 1




if __name__ == "__main__":
    sys.exit(main())
