"""Every collective a trial issues, on the training device: sums, tensor and object gathers, a barrier; and `unwrap`.

Why one home: Ray Train's GPU backend is NCCL, which takes CUDA tensors only, while a tensor made
without a device lands on the CPU. So no other module calls `torch.distributed`: each helper here
takes the worker's training device and puts its tensors there before the collective, and hands
results back on the CPU (tests/test_ddp.py checks both, in a 2-process group). Under gloo (CPU
trials) the device is the CPU and nothing moves. The alternative, a mixed process group
(`cpu:gloo,cuda:nccl`), would let CPU tensors through but needs a second connection mesh between
every pair of workers (gloo's TCP) beside NCCL's, for a few numbers per log step.

Every function works unchanged in one process (world 1), where nothing is communicated.
"""
from __future__ import annotations

import pickle
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn


def all_reduce_sum(values: Sequence[float] | np.ndarray, world: int, device: torch.device) -> np.ndarray:
    """The element-wise float64 sum of `values` over the ranks; every rank must call it."""
    summed = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    if world > 1:
        torch.distributed.all_reduce(summed)
    return summed.cpu().numpy()


def all_gather_tensors(tensor: Tensor, world: int, device: torch.device) -> list[Tensor]:
    """Every rank's `tensor`, in rank order, on the CPU: same trailing shape and dtype, any first dimension."""
    if world == 1:
        return [tensor.cpu()]
    local = tensor.to(device).contiguous()
    sizes = torch.zeros(world, dtype=torch.int64, device=device)
    sizes[torch.distributed.get_rank()] = local.shape[0]
    torch.distributed.all_reduce(sizes)
    longest = int(sizes.max())
    if longest == 0:
        return [local[:0].cpu() for _ in range(world)]
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return [part[:int(n)].cpu() for part, n in zip(parts, sizes.tolist())]


def all_gather(obj: Any, world: int, device: torch.device) -> list[Any]:
    """Every rank's picklable `obj`, in rank order; every rank must call it.

    The pickled bytes travel as a uint8 tensor on `device` (`torch.distributed.all_gather_object`
    would put them on whichever CUDA device is current, not necessarily the trial's).
    """
    if world == 1:
        return [obj]
    payload = torch.frombuffer(bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), dtype=torch.uint8)
    return [pickle.loads(part.numpy().tobytes()) for part in all_gather_tensors(payload, world, device)]


def barrier(world: int, device: torch.device) -> None:
    """Wait until every rank gets here (a one-element sum on `device`, so it needs no backend-specific call)."""
    all_reduce_sum([0.0], world, device)


def eval_shard(rank: int, world: int, device: torch.device):
    """`evaluate_student`'s shard: corpus encoding split over workers, rank 0 searches and scores."""
    return (rank, world, lambda obj: all_gather(obj, world, device)) if world > 1 else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself in one process)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
