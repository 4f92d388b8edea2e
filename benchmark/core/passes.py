"""Batched model passes: many inputs per forward pass, bounded by a batch size, results kept on the device.

Nothing is copied to the host inside the loops: the inputs of each pass are built on the device by the caller's
function, and the scores are written into a device tensor."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def class_probabilities(net: torch.nn.Module, make_inputs: Callable[[torch.Tensor], torch.Tensor], n: int,
                        classes: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``softmax(net(make_inputs(k)))[classes[k]]`` for k = 0..n-1, ``batch_size`` inputs per forward pass.

    ``make_inputs`` receives a 1-D tensor of flat indices (on the inputs' device) and returns the matching
    [len, C, H, W] inputs, built on the device; nothing is copied to the host inside the loop.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    out = torch.empty(n, device=classes.device)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n), device=classes.device)
        x = make_inputs(idx).contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(net(x).float(), dim=1)
        out[start:start + len(idx)] = probs.gather(1, classes[idx].view(-1, 1))[:, 0]
    return out


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 class and its softmax probability for each image of ``x`` (the clean forward pass)."""
    classes, probs = [], []
    for start in range(0, x.shape[0], batch_size):
        p = torch.softmax(net(x[start:start + batch_size].contiguous(memory_format=torch.channels_last)).float(), 1)
        top = p.max(dim=1)
        classes.append(top.indices)
        probs.append(top.values)
    return torch.cat(classes), torch.cat(probs)
