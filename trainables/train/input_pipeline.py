"""The training input pipeline: a `torch.utils.data` loader that assembles each step's inputs from token ids.

Step s's batch (`RankPlan.batch`, a pure function of seed, epoch, rank and world) becomes its
`StepInputs` (`train_step.build_step_inputs`: padded token ids, teacher scores, masks) in the
loader, so with `resources.loader_workers` ≥ 1 the next steps' inputs are assembled in worker
processes while this step computes (`prefetch_factor` each), pinned on a GPU host. Loader workers
map the training set and the token ids again by path (nothing large is pickled to them). WKL's β
ranks change at refreshes, so they are read when the step runs (`train_step.step_ranks`), never
prefetched. `loader_workers: 0` assembles in one background thread of the training process, the
next `PREFETCH_FACTOR` steps ahead: assembly is reads (`os.pread`) and numpy, which release the GIL
while the step's torch kernels run, so it overlaps the step without a second process (whose
copy-on-write pages would cost memory, and which on a 2-core CPU host only competes for the cores).
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from trainables.config import TrialConfig
from trainables.train.epoch_plan import RankBatch, RankPlan
from trainables.data.token_ids import StepTokens, training_tokens
from trainables.train.dispatch import wants_in_batch
from trainables.train.step import StepInputs, build_step_inputs
from trainables.data.training_set import TrainingSet

PREFETCH_FACTOR = 2   # steps each loader worker keeps ready


class StepDataset(Dataset):
    """Global step → (this rank's `RankBatch`, its `StepInputs` without β ranks)."""

    def __init__(self, training_set_path: str | Path, tokens: StepTokens, cfg: TrialConfig, rank: int, world: int,
                 ts: TrainingSet | None = None):
        self.training_set_path, self.tokens, self.cfg, self.rank, self.world = \
            str(training_set_path), tokens, cfg, rank, world
        self._ts, self._plan = ts, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ts": None, "_plan": None}   # a loader worker maps the set again

    def __getitem__(self, step: int) -> tuple[RankBatch, StepInputs]:
        if self._ts is None:
            self._ts = TrainingSet.load(self.training_set_path, mapped=True)
        if self._plan is None:
            self._plan = RankPlan(self._ts, self.cfg, self.rank, self.world)
        batch = self._plan.batch(step)
        return batch, build_step_inputs(self.tokens, self._ts, batch, self.world, None,
                                        in_batch=wants_in_batch(self.cfg.loss))

    def __len__(self) -> int:
        from trainables.train.epoch_plan import total_steps

        return total_steps(self.cfg, len(self._ts) if self._ts is not None else
                           len(TrainingSet.load(self.training_set_path, mapped=True)))


def training_batches(training_set_path: str | Path, ts: TrainingSet, student, cfg: TrialConfig, rank: int,
                     world: int, first_step: int, steps: int,
                     device: torch.device) -> tuple[StepTokens, Iterator[tuple[RankBatch, StepInputs]]]:
    """The training set's token ids (mapped: `prepare_assets` built them) and this rank's steps
    `first_step`..`steps - 1` from `cfg.resources.loader_workers` loader processes."""
    tokens = training_tokens(training_set_path, student.tokenizer, cfg.student.query_max_length,
                             cfg.student.passage_max_length, cfg.cache_dir)
    dataset = StepDataset(training_set_path, tokens, cfg, rank, world, ts)
    return tokens, step_batches(dataset, first_step, steps, cfg.resources.loader_workers, device)


def step_batches(dataset: StepDataset, first_step: int, steps: int, workers: int,
                 device: torch.device) -> Iterator[tuple[RankBatch, StepInputs]]:
    """Steps `first_step`..`steps - 1` in order from a DataLoader over `dataset` (`workers` processes, or
    with 0 one prefetching thread)."""
    loader = DataLoader(dataset, batch_size=None, sampler=range(first_step, steps), num_workers=workers,
                        collate_fn=_as_is, pin_memory=device.type == "cuda",
                        prefetch_factor=PREFETCH_FACTOR if workers else None,
                        persistent_workers=False)
    return iter(loader) if workers else Prefetched(iter(loader), PREFETCH_FACTOR)


class Prefetched(Iterator):
    """`source`'s items in order, the next `depth` produced ahead by a background thread.

    An error in `source` is raised by the `next` that would have returned its item. A consumer that
    stops early (a failed step) lets the thread go: dropping the iterator stops it within
    `_POLL_SECONDS`, and the thread holds no reference to the iterator itself.
    """

    def __init__(self, source: Iterator[Any], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._ended = False
        threading.Thread(target=_fill, args=(source, self._queue, self._stop), name="kd-study-prefetch",
                         daemon=True).start()

    def __next__(self) -> Any:
        if self._ended:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self._ended = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread (it ends at its next put); later `next` calls may still return what it queued."""
        self._stop.set()

    def __del__(self) -> None:
        self.close()


_POLL_SECONDS = 0.1


def _fill(source: Iterator[Any], out: queue.Queue, stop: threading.Event) -> None:
    """The prefetch thread: `source` into `out` as ("item", x) … ("end", None), or ("error", e) where it raises."""
    def put(entry) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in source:
            if not put(("item", item)):
                return
    except BaseException as error:  # noqa: BLE001  (raised again in the consumer's thread)
        put(("error", error))
        return
    put(("end", None))


def _as_is(item):
    """The loader's collate: a step is already a batch."""
    return item
