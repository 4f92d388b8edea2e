r"""The memory bound of a run: the largest batch of model inputs whose passes fit a byte budget.

    cap = floor(budget / bytes_per_input),   batch size = min(--batch-size, cap)   (at least 1)

* budget: ``--memory-gb`` when given; otherwise on CUDA 90 % of the device memory that is free once the model is
  loaded (``torch.cuda.mem_get_info``) less the image cache (``--cache-gb``); on CPU no automatic bound (the default
  32 inputs per pass need a few GB for VGG16 with gradients: docs/performance.md).
* bytes_per_input: one pass of one input through the network with forward hooks on every leaf module; the bytes
  of their outputs ``A`` (what autograd keeps for a backward pass) give ``3 A + input``: the kept activations, their
  gradients during the backward pass and as much again for the method's own tensors (upsampled masks, maps,
  workspaces). This is an upper bound for forward-only work and a model of gradient work, not a measurement of
  every method; ``python -m benchmark perf`` reports the peak memory it measured on CUDA.
"""

from __future__ import annotations

import torch
from torch import nn

from .hooks import Hooks

HEADROOM = 3  # kept activations + their gradients + the method's own tensors
CUDA_FREE_SHARE = 0.9


@torch.no_grad()
def activation_bytes(net: nn.Module, size: int, device: torch.device) -> int:
    """Bytes of every leaf module's output for one ``[1, 3, size, size]`` input (float32)."""
    total = 0

    def count(_m, _inp, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total += t.numel() * 4  # counted as float32 whatever the autocast dtype: an upper bound
    with Hooks() as hooks:
        for m in net.modules():
            if not any(True for _ in m.children()):
                hooks.forward(m, count)
        net(torch.zeros(1, 3, size, size, device=device))
    return total


def bytes_per_input(net: nn.Module, size: int, device: torch.device) -> int:
    return HEADROOM * activation_bytes(net, size, device) + 3 * size * size * 4


def default_budget(device: torch.device, cache_gb: float | None) -> float | None:
    """Bytes available to the passes when the user gave no ``--memory-gb`` (None: no bound)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return max(0.0, CUDA_FREE_SHARE * free - (cache_gb if cache_gb is not None else 4.0) * 2**30)


def bounded_batch_size(requested: int, net: nn.Module, size: int, device: torch.device,
                       memory_gb: float | None, cache_gb: float | None) -> tuple[int, dict]:
    """(batch size, record): ``requested`` capped by the budget; the record says what was used and why."""
    budget = memory_gb * 2**30 if memory_gb is not None else default_budget(device, cache_gb)
    record = {"requested": requested, "memory_gb": memory_gb, "budget_bytes": budget, "bytes_per_input": None,
              "cap": None, "batch_size": requested}
    if budget is None:
        return requested, record
    per = bytes_per_input(net, size, device)
    cap = max(1, int(budget // per))
    record.update(bytes_per_input=per, cap=cap, batch_size=min(requested, cap))
    return record["batch_size"], record
