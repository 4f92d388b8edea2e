"""Numerical precision of a run: ``fp32`` (the paper protocol), or the opt-in faster ``tf32`` and ``bf16``.

- ``fp32``: float32 everywhere; TF32 tensor-core math is switched off so CUDA matmuls and convolutions are
  true float32.
- ``tf32``: float32 tensors, TF32 math in CUDA matmuls and convolutions (10-bit mantissa products; no effect on
  CPU).
- ``bf16``: ``torch.autocast`` to bfloat16 for the model's forward and backward passes (CPU and CUDA); maps,
  masks, curves and AUCs stay float32.

The precision is part of the run's protocol: maps made at one precision are never mixed with another's in a
store. ``python -m benchmark perf --precision`` reports how far maps and AUCs move from fp32.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    return name


def configure(name: str, device: torch.device) -> None:
    """Process-wide switches for ``name`` (TF32 on or off; cudnn autotuning on CUDA)."""
    check_precision(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        torch.backends.cudnn.allow_tf32 = name == "tf32"
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cudnn pick its fastest kernels


def autocast(name: str, device: torch.device):
    """Context for the model's passes: bf16 autocast, or nothing for fp32 / tf32."""
    check_precision(name)
    if name == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def active(name: str, device: torch.device):
    """Run a block at precision ``name`` (TF32 switches and autocast), then restore the previous TF32 switches
    (``perf`` computes the same work at fp32 and at another precision in one process)."""
    check_precision(name)
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    configure(name, device)
    try:
        with autocast(name, device):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
