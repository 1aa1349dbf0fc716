"""Scale benchmark: wall time and peak unique memory of each stage on a synthetic MS MARCO-shaped collection.

The collection (`synthetic_msmarco.py`) is generated at `--fraction` of MS MARCO passage's size
(1.0: 8.84M passages, 100k training queries × 150 run candidates, their teacher scores, 6,980 dev
queries). Every stage runs in its own process, so its peak is its own: psutil's `uss` (memory no
other process shares), sampled every 0.1 s, and the process's peak RSS. Stages:

  ingest        load_data of the training split (the BEIR loader: corpus.jsonl indexed by byte offset, not held)
  pools         the run file read into ranked docid rows (`read_candidates_file`)
  scores        teacher scores for those pairs from the scores file (`pair_scores`)
  build         the driver's whole `prepare_assets` from run + scores files: data, pools (+ the initial
                student's scores), teacher arrays, training set, tokenise-once of its texts
  tokenize      tokenise-once of the whole corpus (what an evaluation maps), passages/s
  worker        one trial worker: maps the training set + token ids, `--steps` training steps from
                the input pipeline; uss beyond the model + optimiser (the peak of two warm-up steps on
                random ids, padded like real batches), and the time each step waited for its batch (the
                pipeline's share); what it holds at the end: anonymous (heap) vs privately mapped file pages
  two-workers   two `worker` processes at once on this node, sharing the mapped files
  load-lists    for contrast: today's `TrainingSet.load` into Python lists (uss after load)

The student is the random-weight `tiny:bert` (2 layers, hidden 32, MiniLM's tokenizer): only the
plumbing is measured. Numbers that scale with the collection are extrapolated linearly to
fraction 1.0 in the report, and say so.

    python bench/bench_scale.py --quick                 # fraction 0.001, 10k-query workers, 20 steps: minutes
    python bench/bench_scale.py --fraction 0.01 --steps 50 --out bench/results/scale.md
    python bench/bench_scale.py --workers-only --worker-queries 100000 --steps 50   # worker + two-workers only
"""
from __future__ import annotations

import _env  # noqa: F401  (offline models, single-threaded tokenisers)

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from synthetic_msmarco import FULL, Sizes, generate

STAGES = ("ingest", "pools", "scores", "build", "tokenize", "worker", "load-lists")
MiB = 1 << 20


class PeakUss:
    """Peak unique (`uss`) and proportional (`pss`) set size of this process and its children (loader
    workers) while the block runs, sampled every 0.1 s. pss splits a page shared by k processes k ways,
    so the pss of concurrent workers adds up to the memory they use together."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self.peak_pss, self._stop = interval, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def sizes() -> tuple[int, int]:
        me = psutil.Process()
        uss = pss = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                info = process.memory_full_info()
            except psutil.Error:   # a loader worker that just exited
                continue
            uss, pss = uss + info.uss, pss + info.pss
        return uss, pss

    @classmethod
    def now(cls) -> int:
        return cls.sizes()[0]

    def _sample(self) -> None:
        while not self._stop.is_set():
            uss, pss = self.sizes()
            self.peak, self.peak_pss = max(self.peak, uss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakUss:
        self.start_uss, self.start_pss = self.sizes()
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        uss, pss = self.sizes()
        self.peak, self.peak_pss = max(self.peak, uss), max(self.peak_pss, pss)
        self.seconds = time.perf_counter() - self.started


def trial_config(work: Path, steps: int, loader_workers: int = 0):
    from trainables.config import TrialConfig

    beir = work / "data" / "beir"
    return TrialConfig.from_dict({
        "cache_dir": str(work / "cache"),
        "data": {"train": f"beir:{beir}", "pool_depth": 150, "candidates_file": str(work / "data" / "run.trec")},
        "teacher": {"scores_file": str(work / "data" / "teacher_scores.tsv")},
        "student": {"model": "tiny:bert", "query_max_length": 32, "passage_max_length": 128},
        "sampler": {"name": "stratified", "k": 8}, "loss": {"name": "kl"},
        "optim": {"batch_size": 32, "max_steps": steps},
        "resources": {"loader_workers": loader_workers},
        "eval": {"dev": {"id": f"beir:{beir}", "split": "dev"}, "beir": [], "batch_size": 256},
    })


def train_qids(work: Path) -> list[str]:
    lines = (work / "data" / "beir" / "qrels" / "train.tsv").read_text().splitlines()[1:]
    return list(dict.fromkeys(line.split("\t")[0] for line in lines))


# ---- the stages (each in its own process) --------------------------------------------------------
def stage(name: str, work: Path, args) -> dict:
    cfg = trial_config(work, args.steps, args.loader_workers)
    if name == "ingest":
        from trainables.data import load_data

        with PeakUss() as peak:
            data = load_data(cfg.data.train)
        return {"seconds": peak.seconds, "peak_uss": peak.peak, "start_uss": peak.start_uss, "passages": len(data.corpus)}
    if name in ("pools", "scores"):
        from trainables.data.candidates_file import read_candidates_file
        from trainables.data.teacher_scores import pair_scores

        qids = train_qids(work)
        with PeakUss() as pools_peak:
            ranked = read_candidates_file(cfg.data.candidates_file, set(qids), cfg.data.pool_depth + 1)
        if name == "pools":
            return {"seconds": pools_peak.seconds, "peak_uss": pools_peak.peak, "start_uss": pools_peak.start_uss,
                    "pairs": len(ranked.doc_rows)}
        rows = np.full((len(qids), cfg.data.pool_depth + 1), -1, dtype=np.int64)
        for i, qid in enumerate(qids):
            own = ranked.rows_of(qid)
            rows[i, :len(own)] = own
        with PeakUss() as peak:
            scores = pair_scores(cfg.teacher.scores_file, qids, ranked.docs, rows)
        return {"seconds": peak.seconds, "peak_uss": peak.peak, "start_uss": pools_peak.start_uss,
                "pairs": int(np.isfinite(scores).sum())}
    if name == "build":
        from trainables.prepare.assets import prepare_assets

        with PeakUss() as peak:
            assets = prepare_assets(cfg, progress=False)
        keep = ("data_seconds", "pools_seconds", "teacher_seconds", "trainset_seconds", "tokenize_seconds",
                "n_train_queries")
        return {"seconds": peak.seconds, "peak_uss": peak.peak, "start_uss": peak.start_uss, "peak_rss": _peak_rss(),
                "training_set": assets.training_set_path, **{k: assets.stats.get(k) for k in keep}}
    if name == "tokenize":
        from trainables.data import load_data
        from trainables.evaluate.eval_tokens import corpus_tokens
        from trainables.models.student import BiEncoder

        student = BiEncoder.from_config(cfg.student, cfg.cache_dir)
        data = load_data(cfg.eval.dev)
        with PeakUss() as peak:
            tokens = corpus_tokens(student, data, work / "tokenize-cache")
        return {"seconds": peak.seconds, "peak_uss": peak.peak, "start_uss": peak.start_uss, "passages": len(tokens),
                "tokens": int(tokens.offsets[-1]), "passages_per_s": len(tokens) / peak.seconds}
    if name == "load-lists":
        from trainables.data.training_set import TrainingSet

        before = PeakUss.now()
        with PeakUss() as peak:
            ts = TrainingSet.load(args.training_set, mapped=False)
        return {"seconds": peak.seconds, "uss_beyond": PeakUss.now() - before, "peak_uss_beyond": peak.peak - before,
                "queries": len(ts), "passages": len(ts.doc_ids)}
    if name == "worker":
        return worker_stage(cfg, args)
    raise SystemExit(f"bench_scale: unknown stage {name!r}")


def worker_stage(cfg, args) -> dict:
    """One trial worker's memory and its input pipeline's share of a step (see the module docstring)."""
    import torch

    from trainables.train.epoch_plan import total_steps
    from trainables.train.input_pipeline import training_batches
    from trainables.models.student import BiEncoder
    from trainables.train.step import DistillScorer, StepInputs, make_optimizer, train_step
    from trainables.data.training_set import TrainingSet

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    student = BiEncoder.from_config(cfg.student, cfg.cache_dir)
    model = DistillScorer(student)
    optimizer, scheduler = make_optimizer(model, cfg, args.steps + 1)
    b, n, length = cfg.optim.batch_size, cfg.data.max_positives + cfg.sampler.k, cfg.student.passage_max_length
    fake = StepInputs(
        queries={"input_ids": torch.randint(1000, 2000, (b, 32)), "attention_mask": padded_mask(b, 32)},
        passages={"input_ids": torch.randint(1000, 2000, (b * n, length)), "attention_mask": padded_mask(b * n, length)},
        n=n, teacher_scores=torch.randn(b, n), positive_mask=torch.zeros(b, n, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
        valid_mask=torch.ones(b, n, dtype=torch.bool), student_ranks=None, sampled_teacher_scores=[], loss_weight=1.0)
    with PeakUss(interval=0.02) as warm:   # model, Adam state and a full-size padded step's activations: the baseline
        for _ in range(2):
            train_step(model, optimizer, scheduler, fake, cfg.loss, 0, 1.0, device)
    baseline, baseline_pss, baseline_rollup = warm.peak, warm.peak_pss, _rollup()
    waits, computes = [], []
    with PeakUss() as peak:
        loading = time.perf_counter()
        ts = TrainingSet.load(args.training_set, mapped=True)
        steps = min(args.steps, total_steps(cfg, len(ts)))
        _, batches = training_batches(args.training_set, ts, student, cfg, 0, 1, 0, steps, device)
        load_seconds = time.perf_counter() - loading
        after_load = PeakUss.now()
        while True:
            started = time.perf_counter()
            item = next(batches, None)
            if item is None:
                break
            waits.append(time.perf_counter() - started)
            started = time.perf_counter()
            train_step(model, optimizer, scheduler, item[1], cfg.loss, len(computes) + 1, 1.0, device)
            computes.append(time.perf_counter() - started)
    end_rollup = _rollup()
    wait, compute = np.array(waits[1:]), np.array(computes[1:])    # the first step starts the loader
    return {"baseline_uss": baseline, "load_seconds": load_seconds, "uss_beyond_after_load": after_load - baseline,
            "peak_uss": peak.peak, "uss_beyond": peak.peak - baseline, "pss_beyond": peak.peak_pss - baseline_pss,
            "first_wait_seconds": waits[0], "steps": len(computes),
            "step_seconds": float((wait + compute).mean()), "wait_seconds": float(wait.mean()),
            "pipeline_share": float(wait.sum() / (wait.sum() + compute.sum())), "queries": len(ts),
            "loader_workers": cfg.resources.loader_workers,
            # after the steps, against after the warm-up: heap grown (anonymous), file pages only this process maps
            "anonymous_grown": end_rollup["Anonymous"] - baseline_rollup["Anonymous"],
            "private_file_pages": end_rollup["Private_Clean"]}


def _rollup() -> dict[str, int]:
    """This process's /proc/self/smaps_rollup sizes in bytes (Linux)."""
    sizes = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        sizes[name.rstrip(":")] = int(value) * 1024
    return sizes


def padded_mask(rows: int, length: int):
    """An attention mask of `rows` at full `length` with padding, as a real batch has: one row full, the others
    shorter. An all-ones mask would let attention skip the mask (a cheaper kernel than real steps take),
    and the baseline would under-count a step's activations."""
    import torch

    lengths = torch.randint(length // 8, length + 1, (rows,), generator=torch.Generator().manual_seed(0))
    lengths[0] = length
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- the driver -------------------------------------------------------------------------------------
def run_stage(name: str, work: Path, args, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--stage", name, "--work", str(work), "--steps", str(args.steps),
           "--threads", str(args.threads), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(_env.REPO_ROOT)})


def result_of(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"bench_scale: a stage failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.01, help="of MS MARCO passage's size (default 0.01)")
    parser.add_argument("--worker-queries", type=int, default=FULL["train_queries"],
                        help="queries of the directly written training set the worker stages open (default 100k)")
    parser.add_argument("--quick", action="store_true", help="fraction 0.001, 10k worker queries, 20 steps")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--work", type=Path, default=Path(".bench-scale"))
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--reuse-driver", action="store_true",
                        help="take the driver stages from --work's last results.json, measure the workers again")
    parser.add_argument("--workers-only", action="store_true",
                        help="only the worker and two-workers stages (no driver stages, no load-lists contrast)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--training-set", help=argparse.SUPPRESS)
    parser.add_argument("--loader-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, args.work, args)))
        return
    if args.quick:
        args.fraction, args.worker_queries, args.steps = 0.001, 10_000, 20
    from report_scale import report, workers_report

    if args.workers_only:                                   # minutes, not hours: the memory of the trial workers
        workers = worker_stages(args.work / f"workers-{args.worker_queries}", args, contrast=False)
        (args.work / "workers.json").write_text(json.dumps({"commit": _env.commit(), "steps": args.steps,
                                                             "workers": workers}, indent=1))
        text = "\n".join([f"Commit `{_env.commit()}`, {args.steps} steps.", "", *workers_report(workers)])
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return
    results: dict = {"fraction": args.fraction, "steps": args.steps, "commit": _env.commit(),
                     "cores": psutil.cpu_count(), "memory_gib": psutil.virtual_memory().total / (1 << 30),
                     "runs": {}}
    previous = args.work / "results.json"
    if args.reuse_driver and previous.is_file():            # re-measure the workers only
        results["runs"] = json.loads(previous.read_text())["runs"]
        results["driver_commit"] = json.loads(previous.read_text()).get("driver_commit",
                                                                        json.loads(previous.read_text())["commit"])
    else:
        for fraction in (args.fraction / 4, args.fraction):   # two sizes: the slope is the linear extrapolation's
            results["runs"][str(fraction)] = driver_stages(args.work / f"fraction-{fraction:g}", fraction, args)
    results["workers"] = worker_stages(args.work / f"workers-{args.worker_queries}", args)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


def driver_stages(work: Path, fraction: float, args) -> dict:
    """Generate the collection at `fraction` (once), then run every driver stage on a fresh asset cache."""
    import shutil

    sizes = Sizes.at(fraction)
    out: dict = {"sizes": vars(sizes), "load_average": os.getloadavg()[0]}
    started = time.perf_counter()
    if not (work / "data" / "run.trec").is_file():
        generate(work / "data", sizes, _tokenizer(work / "cache"))
    out["generate_seconds"] = time.perf_counter() - started
    for name in ("pools", "teacher", "trainsets", "tokens"):
        shutil.rmtree(work / "cache" / name, ignore_errors=True)
    shutil.rmtree(work / "tokenize-cache", ignore_errors=True)
    for name in ("ingest", "pools", "scores", "build", "tokenize"):
        print(f"bench_scale: fraction {fraction:g}: {name} ...", file=sys.stderr, flush=True)
        out[name] = result_of(run_stage(name, work, args))
    out["load-lists"] = result_of(run_stage("load-lists", work, args, ("--training-set", out["build"]["training_set"])))
    return out


def worker_stages(work: Path, args, contrast: bool = True) -> dict:
    """The worker stages on a training set of `--worker-queries` written directly (`worker_training_set`);
    `contrast`: also today's list-of-strings load of it."""
    from synthetic_msmarco import worker_training_set

    passages = round(FULL["passages"] * args.worker_queries / FULL["train_queries"])
    print(f"bench_scale: writing a {args.worker_queries:,}-query training set ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    path = str(worker_training_set(work, work / "cache", args.worker_queries, passages, _tokenizer(work / "cache")))
    out: dict = {"queries": args.worker_queries, "passages": passages, "write_seconds": time.perf_counter() - started,
                 "load_average": os.getloadavg()[0]}   # other jobs' load when the workers start (1-min average)
    os.sync()   # the set's ~0.5 GB of dirty pages go to disk now, not during the first worker's timed steps
    for workers in (0, 1):
        print(f"bench_scale: worker (loader_workers={workers}) ...", file=sys.stderr, flush=True)
        out[f"worker-{workers}"] = result_of(run_stage("worker", work, args, (
            "--training-set", path, "--loader-workers", str(workers))))
    print("bench_scale: two workers at once ...", file=sys.stderr, flush=True)
    pair = [run_stage("worker", work, args, ("--training-set", path)) for _ in range(2)]
    out["two-workers"] = [result_of(p) for p in pair]
    if contrast:
        out["load-lists"] = result_of(run_stage("load-lists", work, args, ("--training-set", path)))
    return out


def _tokenizer(cache: Path):
    from transformers import AutoTokenizer

    from trainables.models.encoders import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("tiny:bert", cache))


if __name__ == "__main__":
    main()
