"""Timing model passes: one pass, passes per second over a block, and blocks of several batch sizes taken in
rotating order (used by the pass-size tuning, the dry run's calibration and ``perf``)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_input(batch_size: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Seeded random normalised inputs [B,3,size,size] (channels_last, as the methods feed the model)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch_size, 3, size, size, generator=gen)
    return x.to(device).contiguous(memory_format=torch.channels_last)


def one_pass(net: torch.nn.Module, x: torch.Tensor, backward: bool) -> None:
    """One model pass on ``x``: forward under no_grad, or forward + gradient of the summed logits of class 0 with
    respect to the input (parameters are frozen)."""
    if backward:
        xi = x.detach().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(net(xi)[:, 0].sum(), xi)
    else:
        with torch.no_grad():
            net(x)


def time_passes(net: torch.nn.Module, x: torch.Tensor, backward: bool, min_seconds: float,
                min_reps: int = 1, warmup: bool = True) -> float:
    """Passes per second at ``x.shape[0]`` inputs per pass (see :func:`one_pass`), timed over at least
    ``min_seconds`` and ``min_reps`` passes, after one warm-up pass unless ``warmup=False``."""
    if warmup:
        one_pass(net, x, backward)
    sync(x.device)
    n, t0 = 0, time.perf_counter()
    while True:
        one_pass(net, x, backward)
        n += 1
        sync(x.device)
        dt = time.perf_counter() - t0
        if n >= min_reps and dt >= min_seconds:
            return n * x.shape[0] / dt


def round_robin_rates(net: torch.nn.Module, sizes: list[int], size: int, device: torch.device, backward: bool,
                      rounds: int, min_seconds: float) -> dict[int, list[float]]:
    """Passes/s at each batch size of ``sizes``, measured ``rounds`` times in rotating order (a b c, b c a, c a b,
    ...): a change of load on a shared machine then hits every size alike, and the median of a size's rounds is not
    the luck of one moment. Each block is :func:`time_passes` after a warm-up pass; after the first round a size
    whose one pass already lasts ``min_seconds`` skips it (the cold start is then a small part of the block)."""
    inputs = {bs: probe_input(bs, size, device) for bs in sizes}
    rates: dict[int, list[float]] = {bs: [] for bs in sizes}
    for r in range(max(1, rounds)):
        k = r % len(sizes)
        for bs in sizes[k:] + sizes[:k]:
            long_pass = bool(rates[bs]) and bs / rates[bs][0] >= min_seconds
            rates[bs].append(time_passes(net, inputs[bs], backward, min_seconds, warmup=not long_pass))
    return rates
