"""Training-throughput benchmark: kd-study's distillation step against sentence-transformers on the same batches.

Every system trains the same student (packaged MiniLM, first `--num-layers` layers, mean pooling,
cosine) from the same weights with the same loss on the same batches: the queries, positives and K
sampled candidates of `trainables.train.epoch_plan.plan_epoch` (rank 0 of 1), teacher scores from the same
cached TrainingSet, AdamW + linear schedule + gradient clipping. Only steps are timed (batch →
forward → loss → backward → clip → optimizer; sentence-transformers tokenises in its step, kd-study
pads the token ids it tokenised once, as a study does): model loading, Ray start-up and the first
`--warmup-steps` steps are excluded.

  * sentence-transformers: `MarginMSELoss` / `DistillKLDivLoss` (dot product of normalised
    embeddings = cosine) on [query, positive, candidate_1..K] columns, one process.
  * kd-study in-process: `build_step_inputs` + `train_step` of train_step.py, one process, no Ray.
  * kd-study Ray Train: the real trial (`build_trainer`), 1 worker with all CPUs, and 2 DDP workers
    (gloo) with one CPU each; queries/s from the loop's own `outputs.QUERIES_PER_SECOND` windows
    (each rank draws its own candidates there, from `default_rng([seed, epoch, rank])`).

  * `--precision fp32,bf16`: each kd-study system once per precision (`resources.precision`; bf16 =
    autocast of the forward, trainables/train/precision.py); sentence-transformers stays fp32, the reference.

    python bench/bench_train.py                           # 30 steps, batch 16, K=4, MiniLM-L2, max_len 64
    python bench/bench_train.py --systems st,inprocess,ray1 --losses kl,margin_mse,wkl --repeats 3
    python bench/bench_train.py --steps 10 --systems st,inprocess
    python bench/bench_train.py --systems st,inprocess --precision fp32,bf16   # bf16 autocast against fp32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _env import REPO_ROOT, commit  # noqa: E402  (bench/_env.py: offline models, quiet Ray)

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
LOSSES = {"kl": "DistillKLDivLoss", "margin_mse": "MarginMSELoss", "wkl": "DistillKLDivLoss"}   # st's loss per row
WKL = {"gamma1": 5.0, "alpha": 1.0, "beta_refresh_steps": 5}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder with a train split")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed first steps (log window of Ray runs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--k", type=int, default=4, help="sampled candidates per query")
    parser.add_argument("--pool-depth", type=int, default=20)
    parser.add_argument("--num-layers", type=int, default=2, help="student = first N layers of MiniLM")
    parser.add_argument("--max-length", type=int, default=64, help="query and passage max length (tokens)")
    parser.add_argument("--losses", default="kl,margin_mse")
    parser.add_argument("--systems", default="st,inprocess,ray1,ray2")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every system, interleaved (median, range)")
    parser.add_argument("--precision", default="fp32",
                        help="kd-study systems' resources.precision, comma-separated (fp32, bf16, auto, gpu-bf16)")
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / ".kd-cache"), help="assets cache (pools, teacher scores)")
    return parser.parse_args(argv)


def bench_config(args: argparse.Namespace, loss: str):
    from trainables.config import TrialConfig

    queries = args.batch_size * max(1, -(-args.steps // 3))  # ≥ 3 epochs of distinct batches
    return TrialConfig.from_dict({
        "name": f"bench-{loss}",
        "data": {"train": {"id": f"beir:{args.data}", "split": "train"}, "pool_depth": args.pool_depth,
                 "max_train_queries": queries},
        "teacher": {"model": "packaged:all-MiniLM-L6-v2", "query_max_length": args.max_length,
                    "passage_max_length": args.max_length},
        "student": {"model": "packaged:all-MiniLM-L6-v2", "num_layers": args.num_layers,
                    "query_max_length": args.max_length, "passage_max_length": args.max_length},
        "sampler": {"name": "stratified", "k": args.k},
        "loss": {"name": loss, **(WKL if loss == "wkl" else {})},
        "optim": {"lr": 3e-5, "batch_size": args.batch_size, "max_steps": args.steps, "log_every_steps": args.warmup_steps},
        "eval": {"dev": None, "beir": []},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "cache_dir": args.cache_dir,
    })


def planned_batches(ts, cfg, steps: int):
    """The first `steps` single-process batches of the trial (what every in-process system trains on)."""
    from trainables.train.epoch_plan import plan_epoch, steps_per_epoch

    per_epoch = steps_per_epoch(len(ts), cfg.optim.batch_size)
    plans = {}
    for step in range(steps):
        epoch, index = divmod(step, per_epoch)
        if epoch not in plans:
            plans[epoch] = plan_epoch(ts, cfg, epoch, 0, 1)
        yield plans[epoch][index]


def rate(seconds: list[float], batch_size: int, warmup: int) -> float:
    timed = seconds[warmup:]
    return batch_size * len(timed) / sum(timed)


# ---- systems ------------------------------------------------------------------------------------------
def run_sentence_transformers(ts, cfg, args, loss_name: str) -> tuple[float, float]:
    """(queries/s, first-batch loss in eval mode) of sentence-transformers on the planned batches."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import pairwise_dot_score
    from transformers import get_linear_schedule_with_warmup

    from trainables.models.encoders import resolve_model_path, truncate_layers

    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(resolve_model_path(cfg.student.model, cfg.cache_dir), device="cpu")
    truncate_layers(model[0].auto_model, cfg.student.num_layers)
    model.max_seq_length = cfg.student.passage_max_length
    if loss_name in ("kl", "wkl"):
        loss = losses.DistillKLDivLoss(model, similarity_fct=pairwise_dot_score, temperature=1.0)
    else:
        loss = losses.MarginMSELoss(model, similarity_fct=pairwise_dot_score)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.optim.warmup_ratio * args.steps), args.steps)

    def columns(batch):
        q, pos, cand = batch.query_idx, batch.positive_col[:, 0], batch.candidate_col
        texts = [[ts.query_texts[i] for i in q], [ts.doc_texts[ts.positive_doc_idx[i, p]] for i, p in zip(q, pos)]]
        texts += [[ts.doc_texts[ts.pool_doc_idx[i, c]] for i, c in zip(q, cand[:, j])] for j in range(cand.shape[1])]
        labels = torch.from_numpy(np.concatenate(
            [ts.teacher_positive_scores[q, pos][:, None], ts.teacher_pool_scores[q[:, None], cand]], axis=1))
        return texts, labels

    def features(texts):
        return [{k: v for k, v in model.preprocess(col).items() if k != "modality"} for col in texts]

    batches = list(planned_batches(ts, cfg, args.steps))
    model.eval()
    with torch.no_grad():
        texts, labels = columns(batches[0])
        first_loss = float(loss(features(texts), labels))
    model.train()
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        texts, labels = columns(batch)
        value = loss(features(texts), labels)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        seconds.append(time.perf_counter() - start)
    return rate(seconds, cfg.optim.batch_size, args.warmup_steps), first_loss


def run_in_process(ts, cfg, args) -> tuple[float, float]:
    """(queries/s, first-batch loss in eval mode) of the Ray Train loop's step (train_step.py) without Ray,
    at `cfg.resources.precision` on the CPU; WKL's β refreshes (train/rank_table.py) count in the step they precede."""
    import torch

    from trainables.train.dispatch import compute_loss
    from trainables.train.rank_table import RankTable
    from trainables.train.precision import autocast, autocast_dtype
    from trainables.models.student import BiEncoder
    from trainables.data.token_ids import step_tokens_in_memory
    from trainables.train.step import DistillScorer, build_step_inputs, make_optimizer, train_step

    cpu = torch.device("cpu")
    dtype = autocast_dtype(cfg.resources.precision, cpu)
    torch.manual_seed(cfg.seed)
    model = DistillScorer(BiEncoder.from_config(cfg.student, cfg.cache_dir))
    optimizer, scheduler = make_optimizer(model, cfg, args.steps)
    batches = list(planned_batches(ts, cfg, args.steps))
    tokens = step_tokens_in_memory(ts, model.student)   # tokenised once, as prepare_assets does for a study
    model.eval()
    with torch.no_grad(), autocast(cpu, dtype):
        inputs = build_step_inputs(tokens, ts, batches[0], 1, None)
        scores = model(inputs.queries, inputs.passages, inputs.n)
        first_loss = float(compute_loss(cfg.loss, scores.float(), inputs.teacher_scores, inputs.positive_mask,
                                        valid_mask=inputs.valid_mask))
    model.train()
    rank_table = RankTable.start(ts, cfg.loss)
    seconds = []
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        if rank_table is not None:
            rank_table.refresh_if_due(model.student, ts, cfg, step, 0, 1, "cpu", tokens)
        inputs = build_step_inputs(tokens, ts, batch, 1, rank_table.ranks if rank_table is not None else None)
        train_step(model, optimizer, scheduler, inputs, cfg.loss, step, cfg.optim.max_grad_norm, cpu, dtype)
        seconds.append(time.perf_counter() - start)
    return rate(seconds, cfg.optim.batch_size, args.warmup_steps), first_loss


def run_ray(training_set_path: str, cfg, workers: int, storage: str) -> float:
    """Global queries/s of the real trial under Ray Train, from its log windows after the first."""
    from trainables.outputs import QUERIES_PER_SECOND
    from trainables.train.trial import build_trainer, read_train_log

    cpus = 2 / workers
    cfg = cfg.with_overrides({"resources.num_workers": workers, "resources.cpus_per_worker": cpus})
    name = f"{cfg.name}-w{workers}-{cfg.resources.precision}"
    result = build_trainer(cfg, training_set_path, storage_path=storage, name=name, max_failures=0).fit()
    if result.error is not None:
        raise result.error
    windows = [r for r in read_train_log(storage, name) if QUERIES_PER_SECOND in r][1:]
    window_queries = [cfg.optim.batch_size * (r["step"] - prev["step"]) for prev, r in
                      zip([{"step": cfg.optim.log_every_steps}] + windows[:-1], windows)]
    return sum(window_queries) / sum(q / r[QUERIES_PER_SECOND] for q, r in zip(window_queries, windows))




def summary_table(rows: list[tuple[int, str, str, int, float]], timed_steps: int) -> list[str]:
    """Markdown rows: per (system, loss, workers), the median (min–max) queries/s over repeats and the speed-up
    over sentence-transformers' run of the row's peer loss (`LOSSES`) in the same repeat (> 1 = kd-study faster)."""
    st = {(repeat, system): qps for repeat, system, _, _, qps in rows if system.startswith("sentence-transformers")}
    keys = list(dict.fromkeys((system, loss, workers) for _, system, loss, workers, _ in rows))
    lines = ["| system | loss | workers | timed steps | repeats | queries/s median (min – max) "
             "| speed-up vs sentence-transformers, median (min – max) |", "|---|---|---|---|---|---|---|"]
    for system, loss, workers in keys:
        runs = [(repeat, qps) for repeat, s, l, w, qps in rows if (s, l, w) == (system, loss, workers)]
        rates = [qps for _, qps in runs]
        peer_system = "sentence-transformers " + LOSSES[loss]
        ups = [qps / st[repeat, peer_system] for repeat, qps in runs if (repeat, peer_system) in st]
        peer = (f"{statistics.median(ups):.2f}x ({min(ups):.2f} – {max(ups):.2f})" if ups else "-")
        if system.startswith("sentence-transformers"):
            peer = "1 (the peer)"
        lines.append(f"| {system} | {loss} | {workers} | {timed_steps} | {len(runs)} | {statistics.median(rates):.2f} "
                     f"({min(rates):.2f} – {max(rates):.2f}) | {peer} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from trainables.prepare.assets import prepare_assets
    from trainables.data.training_set import TrainingSet

    losses_ = [name.strip() for name in args.losses.split(",") if name.strip()]
    systems = {name.strip() for name in args.systems.split(",")}
    precisions = [name.strip() for name in args.precision.split(",") if name.strip()]
    rows = []
    ray_started = False
    storage = tempfile.mkdtemp(prefix="kd-bench-train-", dir="/tmp")

    def measured(repeat: int, system: str, loss: str, workers: int, qps: float) -> None:
        rows.append((repeat, system, loss, workers, qps))
        print(f"  repeat {repeat + 1}: {system} [{loss}]: {qps:.2f} queries/s", file=sys.stderr, flush=True)

    configs = {loss_name: bench_config(args, loss_name) for loss_name in losses_}
    training_sets = {}
    for loss_name, cfg in configs.items():
        assets = prepare_assets(cfg, progress=False)
        training_sets[loss_name] = (assets.training_set_path, TrainingSet.load(assets.training_set_path))
        print(f"[{loss_name}] {len(training_sets[loss_name][1])} queries, pools of "
              f"{training_sets[loss_name][1].pool_doc_idx.shape[1]}, torch threads {torch.get_num_threads()}",
              file=sys.stderr)
    try:
        for repeat in range(args.repeats):
            for loss_name, cfg in configs.items():
                ts_path, ts = training_sets[loss_name]
                # one sentence-transformers run per its loss and repeat: WKL's peer is the KL row's run
                if "st" in systems and not any(r == repeat and s == "sentence-transformers " + LOSSES[loss_name]
                                               for r, s, _, _, _ in rows):
                    qps, first_st = run_sentence_transformers(ts, cfg, args, loss_name)
                    measured(repeat, "sentence-transformers " + LOSSES[loss_name], loss_name, 1, qps)
                    print(f"  first-batch loss (eval mode): sentence-transformers {first_st:.6f}", file=sys.stderr)
                for precision in precisions:
                    at = cfg.with_overrides({"resources.precision": precision})
                    tag = "" if precisions == ["fp32"] else f" [{precision}]"
                    if "inprocess" in systems:
                        qps, first_ours = run_in_process(ts, at, args)
                        measured(repeat, f"kd-study loop, in-process{tag}", loss_name, 1, qps)
                        print(f"  first-batch loss (eval mode): kd-study{tag} {first_ours:.6f}", file=sys.stderr)
                    for workers in (1, 2):
                        if f"ray{workers}" not in systems:
                            continue
                        if not ray_started:
                            import ray

                            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                     _temp_dir=tempfile.mkdtemp(prefix="ray_kd_bench_", dir="/tmp"))
                            ray_started = True
                        at_repeat = at.with_overrides({"name": f"{at.name}-r{repeat}"})
                        measured(repeat, f"kd-study Ray Train ({workers} worker{'s' * (workers > 1)}){tag}", loss_name,
                                 workers, run_ray(ts_path, at_repeat, workers, storage))
    finally:
        if ray_started:
            import ray

            ray.shutdown()

    print(f"\ncommit {commit()}; steps: {args.steps} (first {args.warmup_steps} untimed), batch {args.batch_size} "
          f"queries, K={args.k}, student MiniLM-L{args.num_layers}, max_len {args.max_length}, CPU threads "
          f"{torch.get_num_threads()}, {args.repeats} interleaved repeats; WKL: {WKL}\n")
    print("\n".join(summary_table(rows, args.steps - args.warmup_steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
