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
from benchmark.core.timing import probe_input, round_robin_rates, time_passes

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


class MeasurementCache:
    """One JSON file of measurements of this machine (``<cache_dir>/<name>.json``), keyed by what they depend on.
    An unreadable file is measured again and rewritten; a cache that cannot be written changes nothing else."""

    def __init__(self, name: str):
        self.path = cache_dir() / f"{name}.json"

    def _table(self) -> dict:
        try:
            return json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: dict) -> dict | None:
        rec = self._table().get(json.dumps(key, sort_keys=True))
        return dict(rec, cached=True, cache_file=str(self.path)) if isinstance(rec, dict) else None

    def put(self, key: dict, rec: dict) -> dict:
        rec = dict(rec, measured=time.strftime("%Y-%m-%dT%H:%M:%S"), key=key)
        table = self._table()
        table[json.dumps(key, sort_keys=True)] = rec
        try:
            write_text(self.path, json.dumps(table, indent=1, sort_keys=True))
        except OSError:
            pass
        return dict(rec, cached=False, cache_file=str(self.path))


def tuning_key(model: str, size: int, device: torch.device, precision: str, cap: int | None) -> dict:
    return {**machine_key(device), "model": model, "size": size, "precision": precision, "cap": cap,
            "candidates": PASS_CANDIDATES["cuda" if device.type == "cuda" else "cpu"]}


def cached_pass_batch_size(net: torch.nn.Module, model: str, size: int, device: torch.device, precision: str,
                           cap: int | None = None, echo=None) -> tuple[int, dict]:
    """:func:`tune_pass_batch_size`, measured once per machine, device, model, input size, precision and cap and
    kept in ``<cache_dir>/pass_batch_size.json``: later commands and runs reuse it (the record says ``cached``,
    with the date it was measured). ``echo`` tells the user when a measurement starts (it takes seconds to a
    minute on a CPU)."""
    cache, key = MeasurementCache("pass_batch_size"), tuning_key(model, size, device, precision, cap)
    rec = cache.get(key)
    if rec is not None and "chosen" in rec:
        return int(rec["chosen"]), rec
    if echo is not None:
        echo(f"measuring the fastest inputs per pass of {model} on {device} ({precision}); once per machine, model "
             f"and precision (kept in {cache.path})")
    chosen, rec = tune_pass_batch_size(net, size, device, cap=cap)
    return chosen, cache.put(key, rec)


def cached_tuning(model: str, size: int, device: torch.device, precision: str, cap: int | None = None) -> dict | None:
    """The stored tuning of this machine, model and precision, without measuring anything (None if there is none)."""
    rec = MeasurementCache("pass_batch_size").get(tuning_key(model, size, device, precision, cap))
    return rec if rec is not None and "chosen" in rec else None


def cached_rates(net: torch.nn.Module, model: str, size: int, device: torch.device, precision: str,
                 batch_size: int, backward: bool, seconds: float = 1.0, echo=None) -> dict:
    """Steady-state passes/s of ``net`` at ``batch_size`` inputs per pass: forward-only and, with ``backward``,
    forward+backward (each one timed block of at least ``seconds`` after an untimed warm-up pass, so cold costs are
    not in it), kept per machine, model, size, precision and batch size in ``<cache_dir>/rates.json``. The forward
    rate is the tuning's own measurement at that size when one is stored."""
    cache = MeasurementCache("rates")
    key = {**machine_key(device), "model": model, "size": size, "precision": precision, "batch_size": batch_size}
    rec = cache.get(key) or {}
    tuned = cached_tuning(model, size, device, precision)
    fwd = rec.get("forward") or ((tuned or {}).get("candidates") or {}).get(str(batch_size))
    bwd = rec.get("backward")
    if fwd and (bwd or not backward):
        return {"forward": float(fwd), "backward": bwd, "batch_size": batch_size, "cached": True,
                "measured": rec.get("measured") or (tuned or {}).get("measured"), "cache_file": str(cache.path)}
    if echo is not None:
        echo(f"calibrating {model} on {device} ({precision}) at {batch_size} inputs per pass (kept in {cache.path})")
    x = probe_input(batch_size, size, device)
    t0 = time.perf_counter()
    fwd = fwd or time_passes(net, x, False, seconds)
    if backward and not bwd:
        bwd = time_passes(net, x, True, seconds)
    out = cache.put(key, {"forward": float(fwd), "backward": bwd, "batch_size": batch_size,
                          "seconds": round(time.perf_counter() - t0, 2)})
    return out
