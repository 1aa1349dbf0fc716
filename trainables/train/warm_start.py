"""The shared warm start of `init: {from: warmup}`: one student trained once per study, refined by every trial.

The WKL paper refines a student already distilled with KL (warm-up with KL, then WKL at a small
learning rate; science.md §2). Training that warm-up inside each trial would repeat it per trial and
let the trials' own settings leak into it; here it is a study asset like the teacher scores:

    cache_dir/warm_start/<key>.pt   the student's state_dict (+ .sha256 sidecar)
    key = hash(training-set key, student config, warm-up config)

The training-set key already addresses the data, the pools, the teacher scores and the student's
weights; the warm-up config (`init.warmup`: loss, sampler, steps, lr, batch size, seed) is
independent of the trial's searched values, so every trial of a study finds the same file. Built
under the cache entry's lock (two trials asking at once train it once), in one process (no Ray:
it is one short run), on CUDA when the process has it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import OptimConfig, TrialConfig
from trainables.data.training_set import content_key, is_complete, write_checksummed

log = logging.getLogger(__name__)

WARM_START_VERSION = 1


@dataclass
class WarmStart:
    """Where the warmed-up student lives, its key, and how it was obtained (a counter for the cache)."""

    path: str
    key: str
    stats: dict[str, Any] = field(default_factory=dict)   # warm_start_cache_status, warm_start_steps_trained


def warmup_config(cfg: TrialConfig) -> TrialConfig:
    """The trial config the warm-up trains with: `cfg`'s data and student, `init.warmup`'s everything else."""
    warmup = cfg.init.warmup
    raw = cfg.model_dump(mode="json")
    raw.update(
        seed=warmup.seed,
        loss=warmup.loss.model_dump(mode="json"),
        sampler=warmup.sampler.model_dump(mode="json"),
        optim=OptimConfig(lr=warmup.lr, batch_size=warmup.batch_size, max_steps=warmup.steps).model_dump(mode="json"),
        init={"from": "pretrained"},
    )
    return TrialConfig.from_dict(raw, source=f"{cfg.name}: init.warmup")


def warm_start_key(cfg: TrialConfig, training_set_path: str | Path) -> str:
    """The content key of `cfg`'s warm start (module docstring); the training set's file name is its key."""
    warm = warmup_config(cfg)
    return content_key("warm_start", WARM_START_VERSION, Path(training_set_path).stem,
                       warm.student.model_dump(mode="json"), cfg.init.warmup.model_dump(mode="json"),
                       warm.data.max_positives, cfg.resources.precision)   # the warm-up trains at it


def warm_start_path(cfg: TrialConfig, training_set_path: str | Path) -> Path:
    return Path(cfg.cache_dir) / "warm_start" / f"{warm_start_key(cfg, training_set_path)}.pt"


def prepare_warm_start(cfg: TrialConfig, training_set_path: str | Path, progress: bool = False) -> WarmStart:
    """Reuse or train `cfg`'s warm start; a partial or corrupt file is retrained, never loaded."""
    from filelock import FileLock

    path = warm_start_path(cfg, training_set_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"warm_start_steps_trained": 0}
    with FileLock(str(path.with_suffix(".lock"))):
        if is_complete(path):
            stats["warm_start_cache_status"] = "hit"
        else:
            stats["warm_start_cache_status"] = "corrupt" if path.exists() else "miss"
            started = time.perf_counter()
            state = train_warmup(warmup_config(cfg), training_set_path, progress)
            _save_atomic(path, state)
            stats["warm_start_steps_trained"] = cfg.init.warmup.steps
            stats["warm_start_seconds"] = time.perf_counter() - started
            log.info("warm start trained: %s (%d steps)", path, cfg.init.warmup.steps)
    return WarmStart(str(path), path.stem, stats)


def train_warmup(cfg: TrialConfig, training_set_path: str | Path, progress: bool = False) -> dict[str, Any]:
    """The warm-up run in this process: the Ray loop's plan and step (epoch_plan, train_step) at world 1."""
    import torch

    from trainables.train.epoch_plan import RankPlan, check_sizes, total_steps
    from trainables.train.rank_table import RankTable
    from trainables.train.precision import autocast_dtype
    from trainables.progress import progress_bar
    from trainables.models.student import BiEncoder
    from trainables.data.token_ids import training_tokens
    from trainables.train.step import DistillScorer, build_step_inputs, make_optimizer, train_step
    from trainables.train.dispatch import wants_in_batch
    from trainables.data.training_set import TrainingSet

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ts = TrainingSet.load(training_set_path, mapped=True)
    check_sizes(len(ts), cfg.optim.batch_size, 1)
    steps = total_steps(cfg, len(ts))
    torch.manual_seed(cfg.seed)
    student = BiEncoder.from_config(cfg.student, cfg.cache_dir).to(device)
    model = DistillScorer(student)
    tokens = training_tokens(training_set_path, student.tokenizer, cfg.student.query_max_length,
                             cfg.student.passage_max_length, cfg.cache_dir)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    plan, table = RankPlan(ts, cfg, 0, 1), RankTable.start(ts, cfg.loss)
    dtype = autocast_dtype(cfg.resources.precision, device)
    model.train()
    bar = progress_bar(steps, "warm-up", "step", enabled=progress)
    for step in range(steps):
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        if table is not None:
            table.refresh_if_due(student, ts, cfg, step, 0, 1, device, tokens)
        inputs = build_step_inputs(tokens, ts, plan.batch(step), 1, table.ranks if table is not None else None,
                                   in_batch=wants_in_batch(cfg.loss))   # the recipe's warm-up has in-batch negatives
        train_step(model, optimizer, scheduler, inputs, cfg.loss, step, cfg.optim.max_grad_norm, device, dtype)
        bar.update(1)
    bar.close()
    return {name: tensor.detach().cpu() for name, tensor in student.state_dict().items()}


def load_warm_start(student, path: str | Path) -> None:
    """Load the warm start at `path` into `student` (same student config); CheckpointError when it is not whole."""
    import torch

    from trainables.errors import CheckpointError

    if not is_complete(path):
        raise CheckpointError(f"{path}: warm start missing or corrupt (checksum mismatch): re-run to rebuild it")
    student.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _save_atomic(path: Path, state: dict[str, Any]) -> None:
    """torch.save of `state` at `path` as a checksummed cache file (`is_complete` checks it)."""
    import torch

    write_checksummed(path, lambda tmp: torch.save(state, tmp))
