"""Counting and timing model passes for ``perf``: a pass counter on the network, timed calls (alone and interleaved
with a peer's), and the model's limit (its best passes/s over a sweep of batch sizes)."""

from __future__ import annotations

import statistics
import time

import torch

from benchmark.core.hooks import Hooks
from benchmark.core.timing import round_robin_rates, sync


class PassCounter:
    """Counts the inputs through ``net`` (forward pre-hook) and those whose output received a gradient."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.hooks = Hooks()
        self.reset()

    def reset(self) -> None:
        self.inputs = 0
        self.backward = 0
        self.calls = 0

    @property
    def forward_only(self) -> int:
        return self.inputs - self.backward

    def __enter__(self):
        def pre(_m, inp):
            self.inputs += int(inp[0].shape[0])
            self.calls += 1

        def post(_m, inp, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                n = int(out.shape[0])

                def grad_hook(g):
                    self.backward += n
                out.register_hook(grad_hook)

        self.hooks = Hooks()
        self.hooks.pre_forward(self.net, pre)
        self.hooks.forward(self.net, post)
        return self

    def __exit__(self, *exc):
        self.hooks.remove()
        return False


def timed(fn, device: torch.device, counter: PassCounter, warmup: int, repeats: int) -> dict:
    """``warmup`` untimed calls, then ``repeats`` timed ones; the passes of the first timed call."""
    for _ in range(warmup):
        fn()
    sync(device)
    seconds, passes, result = [], None, None
    for _ in range(max(1, repeats)):
        counter.reset()
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        seconds.append(time.perf_counter() - t0)
        if passes is None:
            passes = (counter.forward_only, counter.backward)
    return {"seconds": statistics.median(seconds), "seconds_all": [round(s, 4) for s in seconds],
            "forward": passes[0], "backward": passes[1], "result": result}


def timed_pair(fa, fb, device: torch.device, counter: PassCounter, warmup: int, repeats: int) -> tuple[dict, dict]:
    """:func:`timed` for two functions doing the same work (ours, a peer's), interleaved: A B, then B A, ... so
    that both see the same load on a shared machine; each gets ``repeats`` timed calls (median reported)."""
    for _ in range(warmup):
        fa()
        fb()
    sync(device)
    out = [{"seconds_all": [], "forward": None, "backward": None, "result": None} for _ in range(2)]
    for rep in range(max(1, repeats)):
        for k in ((0, 1) if rep % 2 == 0 else (1, 0)):
            counter.reset()
            t0 = time.perf_counter()
            out[k]["result"] = (fa, fb)[k]()
            sync(device)
            out[k]["seconds_all"].append(time.perf_counter() - t0)
            if out[k]["forward"] is None:
                out[k]["forward"], out[k]["backward"] = counter.forward_only, counter.backward
    for r in out:
        r["seconds"] = statistics.median(r["seconds_all"])
        r["seconds_all"] = [round(v, 4) for v in r["seconds_all"]]
    return out[0], out[1]


def measure_limit(net: torch.nn.Module, sweep: list[int], size: int, device: torch.device, repeats: int,
                  backward: bool = True, min_seconds: float | None = None) -> dict:
    """Forward and forward+backward passes/s at each batch size of ``sweep``: ``repeats`` timed blocks of at least
    ``min_seconds`` per size (0.3 s CPU, 0.1 s GPU), taken in rotating order across the sizes
    (:func:`benchmark.core.timing.round_robin_rates`); each size's rate is the median of its blocks, and the best size's
    median is the limit (``backward=False``: forward only, the backward entries are None)."""
    if min_seconds is None:
        min_seconds = 0.1 if device.type == "cuda" else 0.3
    rates = {"forward": round_robin_rates(net, sweep, size, device, False, repeats, min_seconds)}
    if backward:
        rates["backward"] = round_robin_rates(net, sweep, size, device, True, repeats, min_seconds)
    rows = [_row(bs, {k: rates[k][bs] if k in rates else None for k in ("forward", "backward")}) for bs in sweep]
    return {"sweep": rows, **_best(rows), "peak": _peak(rows)}


def _row(bs: int, rates: dict) -> dict:
    row = {"batch_size": bs}
    for k in ("forward", "backward"):
        r = rates[k]
        row[f"{k}_passes_per_s"] = statistics.median(r) if r else None
        row[f"{k}_rates"] = [round(v, 3) for v in r] if r else None
    return row


def _best(rows: list[dict]) -> dict:
    """The batch size with the highest median rate, per kind."""
    out = {}
    for k in ("forward", "backward"):
        measured = [r for r in rows if r[f"{k}_passes_per_s"] is not None]
        r = max(measured, key=lambda r: r[f"{k}_passes_per_s"]) if measured else None
        out[k] = {"batch_size": r["batch_size"], "passes_per_s": r[f"{k}_passes_per_s"]} if r else None
    return out


def _peak(rows: list[dict]) -> dict:
    """The fastest single block of any batch size, per kind: an upper bound on the limit, caught in a lull."""
    out = {}
    for k in ("forward", "backward"):
        blocks = [(v, r["batch_size"]) for r in rows for v in (r[f"{k}_rates"] or [])]
        out[k] = {"batch_size": max(blocks)[1], "passes_per_s": max(blocks)[0]} if blocks else None
    return out


def combine_limits(before: dict, after: dict) -> dict:
    """Both sweeps' blocks pooled per batch size: the median of all of them, the best size's median as the limit,
    and the fastest single block as the peak; ``measurements`` keeps both sweeps."""
    rows = [_row(a["batch_size"], {k: (a[f"{k}_rates"] or []) + (b[f"{k}_rates"] or [])
                                   for k in ("forward", "backward")})
            for a, b in zip(before["sweep"], after["sweep"])]
    return {"sweep": rows, **_best(rows), "peak": _peak(rows), "measurements": [before["sweep"], after["sweep"]]}


def efficiency(forward: float, backward: float, seconds: float, limit: dict) -> float:
    """``(F / limit_forward + B / limit_backward) / seconds`` (see the module docstring)."""
    ideal = forward / limit["forward"]["passes_per_s"]
    if backward:
        ideal += backward / limit["backward"]["passes_per_s"]
    return ideal / seconds if seconds > 0 else float("nan")
