"""GPU smoke: one SciFact trial on one GPU (Ray Train, NCCL, bf16 autocast, faiss-gpu when importable)
beside a shorter one on the CPU, printing train queries/s and eval docs/s of each.

Run through `bash bench/gpu_smoke.sh` (it checks for a GPU and installs the dependencies). Both
trials are `search_spaces/trial_scifact.yaml` with a few overrides: a step budget that fits the
time limit, one worker, full-corpus evaluation (`eval.subset_distractors: null`: the validation and
test sets share SciFact's 5,183-doc corpus, encoded once) and no learning-curve points, so the
evaluation timed is the final one. The shared assets (pools, teacher scores) are built once, on
the GPU, before either trial; their time is printed apart.

    train queries/s = the loop's own QUERIES_PER_SECOND windows after the first (the first holds
                      CUDA/oneDNN warm-up), as bench_train.py reads them
    eval docs/s     = passages encoded / corpus-encoding seconds of the final evaluation (sets that
                      reuse another set's encoding count neither docs nor seconds)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")  # before _env
from _env import REPO_ROOT  # noqa: E402  (bench/_env.py: offline models, quiet Ray)

CONFIG = REPO_ROOT / "search_spaces" / "trial_scifact.yaml"
CONFIG_DATA = "../shared/data"   # how trial_scifact.yaml names its data folder
NO_GPU = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding scifact/ and msmarco_dl19_subset/ (default: shared/data in the "
                             "checkout, else $KD_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--gpu-steps", type=int, default=96, help="GPU trial's steps (45 = one epoch of 709 queries)")
    parser.add_argument("--cpu-steps", type=int, default=8)
    parser.add_argument("--gpu-precision", default="bf16")
    parser.add_argument("--cpu-precision", default="fp32", help="fp32 (the default today), bf16 or auto")
    parser.add_argument("--cpus", type=int, default=min(os.cpu_count() or 2, 16), help="CPUs of the CPU trial's worker")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".kd-cache")
    return parser.parse_args(argv)


def require_gpu() -> str:
    """The GPU's name; exit NO_GPU with one line when torch sees none (a CPU build, no driver, no device)."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        print(f"gpu_smoke: no CUDA GPU visible to torch {torch.__version__} ({build}); run it on a GPU machine "
              "(with a CUDA build of torch: KD_TORCH_SPEC=torch bash scripts/bootstrap.sh gpu)", file=sys.stderr)
        sys.exit(NO_GPU)
    return torch.cuda.get_device_name(0)


def data_root(given: Path | None) -> Path:
    from_env = [Path(os.environ["KD_SHARED_DATA"])] if os.environ.get("KD_SHARED_DATA") else []
    candidates = [given] if given else [REPO_ROOT / "shared" / "data", *from_env, REPO_ROOT.parent / "shared" / "data"]
    for root in candidates:
        if (root / "scifact" / "corpus.jsonl").is_file():
            return root.resolve()
    print(f"gpu_smoke: SciFact not found in {', '.join(map(str, candidates))}: copy ../shared/data/scifact and "
          "../shared/data/msmarco_dl19_subset into shared/data/ of the checkout (it travels with the tree)",
          file=sys.stderr)
    sys.exit(3)


def trial_config(args, root: Path, name: str, steps: int, gpu: bool, precision: str, cpus: int):
    import yaml

    from trainables.config import TrialConfig

    raw = yaml.safe_load(args.config.read_text().replace(f"beir:{CONFIG_DATA}", f"beir:{root}"))
    cfg = TrialConfig.from_dict(raw, source=str(args.config))
    return cfg.with_overrides({
        "name": name, "optim.max_steps": steps, "optim.log_every_steps": max(1, steps // 4),
        "eval.subset_distractors": None, "eval.at_fractions": [],
        "resources.use_gpu": gpu, "resources.num_workers": 1, "resources.cpus_per_worker": cpus,
        "resources.precision": precision, "cache_dir": str(args.cache_dir),
    }, source="gpu_smoke overrides")


def measure(cfg, assets, storage: str) -> dict:
    """Run the trial; its train queries/s, eval docs/s, the encoding reuse and the headline metrics."""
    from trainables.data import load_data
    from trainables.evaluate.evaluation import eval_sets
    from trainables.outputs import FINAL_METRICS, QUERIES_PER_SECOND
    from trainables.train.trial import read_train_log, run_trial

    start = time.perf_counter()
    result = run_trial(cfg, assets, storage_path=storage, name=cfg.name, max_failures=0)
    wall = time.perf_counter() - start
    windows = [r for r in read_train_log(storage, cfg.name) if QUERIES_PER_SECOND in r]
    timed = windows[1:] or windows
    qps = sum(r[QUERIES_PER_SECOND] for r in timed) / len(timed) if timed else float("nan")
    timings = json.loads(Path(result.checkpoint_path, FINAL_METRICS).read_text())["eval_timings"]
    docs = seconds = 0.0
    reused = []
    for eval_set in eval_sets(cfg.eval):
        if f"{eval_set.name}/corpus_reused_from" in timings:
            reused.append(f"{eval_set.name} ← {timings[f'{eval_set.name}/corpus_reused_from']}")
            continue
        docs += len(load_data(eval_set.ref).corpus)
        seconds += timings[f"{eval_set.name}/encode_corpus_s"]
    headline = {k: v for k, v in result.metrics.items() if k in ("dev_mrr_at_10", "beir/scifact/ndcg_at_10")}
    return {"qps": qps, "docs_per_s": docs / seconds if seconds else float("nan"), "docs": int(docs),
            "eval_s": float(timings.get("total_s", float("nan"))), "wall_s": wall, "reused": reused, **headline}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu_name = require_gpu()
    root = data_root(args.data_root)
    import ray
    import torch

    from trainables.evaluate import retrieval
    from trainables.prepare.assets import prepare_assets

    if not retrieval.gpu_available():
        print("gpu_smoke: note: faiss has no GPU here (faiss-gpu not installed or not importable): the index "
              "and search run on faiss-cpu; encoding still runs on the GPU", file=sys.stderr)
    storage = tempfile.mkdtemp(prefix="kd-gpu-smoke-", dir="/tmp")
    cpus = max(1, min(args.cpus, (os.cpu_count() or 2) - 1))
    gpu_cfg = trial_config(args, root, "gpu-smoke-gpu", args.gpu_steps, True, args.gpu_precision, 1)
    cpu_cfg = trial_config(args, root, "gpu-smoke-cpu", args.cpu_steps, False, args.cpu_precision, cpus)

    start = time.perf_counter()
    assets = prepare_assets(gpu_cfg, progress=False)   # on the GPU (CUDA is visible to this process)
    print(f"shared assets (pools + teacher scores, GPU): {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray_kd_gpu_smoke_", dir="/tmp"))
    try:
        rows.append((f"GPU {gpu_name}", gpu_cfg, measure(gpu_cfg, assets, storage)))
        print(f"GPU trial done in {rows[-1][2]['wall_s']:.0f} s", flush=True)
        if not args.skip_cpu:
            rows.append((f"CPU ({cpus} threads)", cpu_cfg, measure(cpu_cfg, assets, storage)))
    finally:
        ray.shutdown()

    print(f"\n{args.config.name}, one worker, student MiniLM-L{gpu_cfg.student.num_layers} "
          f"(p{gpu_cfg.student.passage_max_length}), batch {gpu_cfg.optim.batch_size}, K={gpu_cfg.sampler.k}, "
          f"full-corpus evaluation; torch {torch.__version__}, faiss {'GPU' if retrieval.gpu_available() else 'CPU'}\n")
    header = ("device", "precision", "steps", "train queries/s", "eval docs/s", "eval s", "trial wall s",
              "dev_mrr_at_10", "scifact test nDCG@10")
    table = [(device, cfg.resources.precision, str(cfg.optim.max_steps), f"{m['qps']:.1f}",
              f"{m['docs_per_s']:.0f}", f"{m['eval_s']:.1f}", f"{m['wall_s']:.0f}",
              f"{m.get('dev_mrr_at_10', float('nan')):.4f}", f"{m.get('beir/scifact/ndcg_at_10', float('nan')):.4f}")
             for device, cfg, m in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    if len(rows) == 2:
        gpu, cpu = rows[0][2], rows[1][2]
        print(f"\nGPU speed-up over CPU (CPU time / GPU time, > 1 = GPU faster): training "
              f"{gpu['qps'] / cpu['qps']:.1f}x, corpus encoding {gpu['docs_per_s'] / cpu['docs_per_s']:.1f}x "
              "(metrics differ: the trials train different step budgets)")
    for device, _, m in rows:
        if m["reused"]:
            print(f"{device}: corpus encoding reused by {', '.join(m['reused'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
