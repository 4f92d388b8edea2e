"""The model's fastest number of inputs per forward pass on a device (used when ``--batch-size`` is not given)."""

from __future__ import annotations

import statistics
import time

import torch

from benchmark.core.timing import round_robin_rates

PASS_CANDIDATES = {"cpu": (2, 4, 8, 16, 32), "cuda": (32, 64, 128, 256, 512)}
PASS_TIE = 0.03  # a smaller batch within 3 % of the fastest is preferred (less memory, same speed)


def tune_pass_batch_size(net: torch.nn.Module, size: int, device: torch.device, cap: int | None = None,
                         min_seconds: float = 0.15, rounds: int = 3) -> tuple[int, dict]:
    """Forward passes/s of seeded probe inputs at each candidate size (CPU 2..32, GPU 32..512; at most ``cap``),
    the median of ``rounds`` blocks of at least ``min_seconds`` taken in rotating order
    (:func:`benchmark.core.timing.round_robin_rates`); the smallest size within 3 % of the best median wins. On a
    2-core CPU EfficientNet-Lite0 runs about 2x faster per pass at 4-8 inputs than at 32 (the working set stays in
    cache); on a GPU the larger batches win. Returns (size, {"candidates": {size: median passes/s}, "rounds":
    {size: [passes/s per round]}, "chosen": size, "seconds": s})."""
    t0 = time.perf_counter()
    cands = [b for b in PASS_CANDIDATES["cuda" if device.type == "cuda" else "cpu"] if cap is None or b <= cap]
    cands = cands or [max(1, cap or 1)]
    measured = round_robin_rates(net, cands, size, device, False, rounds, min_seconds)
    rates = {b: statistics.median(v) for b, v in measured.items()}
    best = max(rates.values())
    chosen = min(b for b, r in rates.items() if r >= (1 - PASS_TIE) * best)
    return chosen, {"candidates": {str(b): round(r, 2) for b, r in rates.items()},
                    "rounds": {str(b): [round(r, 2) for r in v] for b, v in measured.items()}, "chosen": chosen,
                    "seconds": round(time.perf_counter() - t0, 2)}
