"""Numeric precision of the student's forward passes: which autocast dtype `resources.precision` means on a device.

bf16 autocast runs the matrix products (linear layers, attention) in bfloat16 and keeps the
reductions that need range in float32 (softmax, layer norm, the losses, which upcast their scores);
the weights, gradients and optimizer state stay float32. A GPU with bf16 units and a CPU with
`avx512_bf16` or AMX execute those products natively; elsewhere bf16 is emulated and slower than
float32. Embeddings leave `BiEncoder.encode` as float32 whatever the autocast dtype (faiss takes
float32 only).

| `resources.precision` | CUDA                         | CPU                               |
|-----------------------|------------------------------|-----------------------------------|
| `gpu-bf16`            | bf16                         | fp32                              |
| `fp32`                | fp32                         | fp32                              |
| `bf16`                | bf16                         | bf16 (even where emulated)        |
| `auto` (default)      | bf16 if the GPU supports it  | bf16 with avx512_bf16 or AMX      |
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import get_args

import torch

from trainables.config import Precision

PRECISIONS: tuple[str, ...] = get_args(Precision)
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """The CPU executes bf16 products natively (an `avx512_bf16` or `amx_bf16` flag; False where unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:   # not Linux: no flags to read, so no claim of support
        return False
    return any(CPU_BF16_FLAGS & set(line.split(":", 1)[1].split())
               for line in text.splitlines() if line.startswith("flags") and ":" in line)


def bf16_native(device: torch.device) -> bool:
    """`device` runs bf16 products in hardware: a CUDA GPU that reports bf16 support, or such a CPU."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """torch.bfloat16 where `precision` asks for bf16 autocast on `device` (the module's table), else None (fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "gpu-bf16":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if bf16_native(device) else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context of `dtype` on `device`'s type; a no-op for None (full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
