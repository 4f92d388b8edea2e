"""The model's fastest number of inputs per forward pass on a device (used when ``--batch-size`` is not given),
measured once per machine, model and precision and reused by every later command (:func:`cached_pass_batch_size`)."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import torch

from benchmark.core.atomic import write_text
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


def cache_dir() -> Path:
    """Where measurements of this machine are kept between commands: ``$BENCHMARK_CACHE``, else
    ``~/.cache/saliency-benchmark``."""
    return Path(os.environ.get("BENCHMARK_CACHE") or Path.home() / ".cache" / "saliency-benchmark")


def machine_key(device: torch.device) -> dict:
    """What a pass-size measurement depends on besides the model: the machine, the device, torch and its threads."""
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
                                                                            or platform.machine())
    return {"host": socket.gethostname(), "device": f"{device.type}:{dev}", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def cached_pass_batch_size(net: torch.nn.Module, model: str, size: int, device: torch.device, precision: str,
                           cap: int | None = None, echo=None) -> tuple[int, dict]:
    """:func:`tune_pass_batch_size`, measured once per machine, device, model, input size, precision and cap and
    kept in ``<cache_dir>/pass_batch_size.json``: later commands and runs reuse it (the record says ``cached``,
    with the date it was measured). ``echo`` tells the user when a measurement starts (it takes seconds to a
    minute on a CPU)."""
    key = json.dumps({**machine_key(device), "model": model, "size": size, "precision": precision, "cap": cap,
                      "candidates": PASS_CANDIDATES["cuda" if device.type == "cuda" else "cpu"]}, sort_keys=True)
    path = cache_dir() / "pass_batch_size.json"
    try:
        table = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        table = {}  # an unreadable cache is measured again and rewritten
    if key in table and isinstance(table[key], dict) and "chosen" in table[key]:
        rec = dict(table[key], cached=True, cache_file=str(path))
        return int(rec["chosen"]), rec
    if echo is not None:
        echo(f"measuring the fastest inputs per pass of {model} on {device} ({precision}); once per machine, model "
             f"and precision (kept in {path})")
    chosen, rec = tune_pass_batch_size(net, size, device, cap=cap)
    rec = dict(rec, measured=time.strftime("%Y-%m-%dT%H:%M:%S"), key=json.loads(key))
    table[key] = rec
    try:
        write_text(path, json.dumps(table, indent=1, sort_keys=True))
    except OSError:
        pass  # no cache (a read-only home): the next command measures again, nothing else changes
    return chosen, dict(rec, cached=False, cache_file=str(path))
