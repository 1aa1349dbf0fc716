"""The few DDP helpers the training code shares: gather Python objects, the evaluation shard, unwrap a model.

Every function works unchanged in one process (world 1), where nothing is communicated.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj`, in rank order; every rank must call it."""
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def eval_shard(rank: int, world: int):
    """`evaluate_student`'s shard: corpus encoding split over workers, rank 0 searches and scores."""
    return (rank, world, lambda obj: all_gather(obj, world)) if world > 1 else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself in one process)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
