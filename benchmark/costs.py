"""The cost model: model passes per stage of a run, a short calibration of the model's throughput, an ETA.

Every method declares ``Method.cost(model) -> Cost(forward, backward)`` and every metric
``Metric.cost(model, method_cost)``: model passes *per image* (``forward``: forward-only passes; ``backward``:
forward+backward passes). A run of ``N`` selected images needs

    clean forward:        N forward passes (the explained class)
    maps of method m:     N * cost_m                              (methods whose maps another one derives: 0)
    metric k on map id j: N * cost_k(model, cost_method(j))       (not applicable: 0)

``cost_method(j)`` is the cost of the registered method with id ``j`` (None for derived or imported maps: a
metric that re-runs the method is not applicable to them). Poly-CAM's cost is an upper bound: constant channels
are skipped at run time. The counts are for all selected images; a resumed run computes only what is missing.

Calibration measures the model's forward passes/s (no_grad) and forward+backward passes/s (gradient of the summed
target logits with respect to the input, as gradient methods do) at a few batch sizes up to the run's batch size,
within a time budget; the ETA prices the passes at the rate of the run's batch size (the largest one measured)::

    ETA = sum_stages forward / R_forward + backward / R_backward
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from methods.base import METHODS, Cost, NotApplicable


@dataclass
class StageCost:
    """Passes of one stage for ``images`` images: ``per_image`` and the totals."""

    stage: str  # "clean", "maps" or "metrics"
    key: str  # "targets", a method id, or "<metric>/<map id>"
    images: int
    per_image: Cost
    note: str = ""

    @property
    def forward(self) -> float:
        return self.per_image.forward * self.images

    @property
    def backward(self) -> float:
        return self.per_image.backward * self.images


@dataclass
class Calibration:
    """Measured passes per second by batch size; ``rate(kind)`` at the run's batch size."""

    device: str
    batch_size: int
    forward: dict[int, float] = field(default_factory=dict)  # batch size -> forward passes/s
    backward: dict[int, float] = field(default_factory=dict)  # batch size -> forward+backward passes/s
    seconds: float = 0.0

    def rate(self, kind: str) -> float:
        table = self.forward if kind == "forward" else self.backward
        usable = [b for b in table if b <= self.batch_size] or list(table)
        return table[max(usable)]

    def as_dict(self) -> dict:
        return {"device": self.device, "batch_size": self.batch_size, "seconds": round(self.seconds, 2),
                "forward_passes_per_s": {str(k): v for k, v in self.forward.items()},
                "backward_passes_per_s": {str(k): v for k, v in self.backward.items()}}


def sync(device: torch.device) -> None:
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

    def once():
        one_pass(net, x, backward)

    if warmup:
        once()
    sync(x.device)
    n, t0 = 0, time.perf_counter()
    while True:
        once()
        n += 1
        sync(x.device)
        dt = time.perf_counter() - t0
        if n >= min_reps and dt >= min_seconds:
            return n * x.shape[0] / dt


def round_robin_rates(net: torch.nn.Module, sizes: list[int], size: int, device: torch.device, backward: bool,
                      rounds: int, min_seconds: float) -> dict[int, list[float]]:
    """Passes/s at each batch size of ``sizes``, measured ``rounds`` times in rotating order (a b c, b c a, c a b,
    ...): a change of load on a shared machine then hits every size alike, and the median of a size's rounds is not
    the luck of one moment (on a 2-core CPU the rate of one size was seen to move by 20-30 % between consecutive
    blocks of a second). Each block is :func:`time_passes` after a warm-up pass, so the first pass after a change of
    size (cold caches, new buffers) is not timed; after the first round a size whose one pass already lasts
    ``min_seconds`` skips it (the cold start is then a small part of the block, and the warm-up would double it)."""
    inputs = {bs: probe_input(bs, size, device) for bs in sizes}
    rates: dict[int, list[float]] = {bs: [] for bs in sizes}
    for r in range(max(1, rounds)):
        k = r % len(sizes)
        for bs in sizes[k:] + sizes[:k]:
            long_pass = bool(rates[bs]) and bs / rates[bs][0] >= min_seconds
            rates[bs].append(time_passes(net, inputs[bs], backward, min_seconds, warmup=not long_pass))
    return rates


def calibration_sizes(batch_size: int) -> list[int]:
    """``batch_size`` and its halvings down to at most 3 sizes (e.g. 32 -> [8, 16, 32])."""
    sizes = [batch_size]
    while len(sizes) < 3 and sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // 2))
    return sorted(set(sizes))


def calibrate(model, batch_size: int, budget_s: float = 4.0, size: int = 224,
              need_backward: bool = True) -> Calibration:
    """Forward (and forward+backward) passes/s at :func:`calibration_sizes` within about ``budget_s`` seconds.

    Sizes are measured smallest first; a size whose one pass would not fit the remaining budget is left out
    (the ETA then uses the largest size measured)."""
    cal = Calibration(device=str(model.device), batch_size=batch_size)
    t_start = time.perf_counter()
    kinds = ("forward", "backward") if need_backward else ("forward",)
    per = budget_s / (len(kinds) * len(calibration_sizes(batch_size)))
    for bs in calibration_sizes(batch_size):
        for kind in kinds:
            table = cal.forward if kind == "forward" else cal.backward
            if table:  # predict this size's pass time from the last one; stop if it would blow the budget
                last_bs = max(table)
                left = budget_s - (time.perf_counter() - t_start)
                if bs / table[last_bs] * 2 > max(left, 0.0):
                    continue
            table[bs] = time_passes(model.net, probe_input(bs, size, model.device), kind == "backward", per)
    cal.seconds = time.perf_counter() - t_start
    return cal


PASS_CANDIDATES = {"cpu": (2, 4, 8, 16, 32), "cuda": (32, 64, 128, 256, 512)}
PASS_TIE = 0.03  # a smaller batch within 3 % of the fastest is preferred (less memory, same speed)


def tune_pass_batch_size(net: torch.nn.Module, size: int, device: torch.device, cap: int | None = None,
                         min_seconds: float = 0.15, rounds: int = 3) -> tuple[int, dict]:
    """The model's fastest number of inputs per forward pass on ``device``: forward passes/s of seeded probe
    inputs at each candidate size (CPU 2..32, GPU 32..512; at most ``cap``), the median of ``rounds`` blocks of at
    least ``min_seconds`` taken in rotating order (:func:`round_robin_rates`); the smallest size within 3 % of the
    best median wins. On a 2-core CPU EfficientNet-Lite0 runs about 2x faster per pass at 4-8 inputs than at 32
    (the working set stays in cache); on a GPU the larger batches win. Returns (size, {"candidates": {size:
    median passes/s}, "rounds": {size: [passes/s per round]}, "chosen": size, "seconds": s})."""
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


# ---------------------------------------------------------------------------------------------------- plan

def _method_cost(model, mid: str, quick: bool, seed: int, cache: dict) -> Cost | None:
    if mid not in cache:
        cls = METHODS.get(mid)
        cache[mid] = None if cls is None else cls(quick=quick, seed=seed).cost(model)
    return cache[mid]


def plan(bench, stages: tuple[str, ...] = ("maps", "metrics"), map_ids: list[str] | None = None) -> tuple[
        list[StageCost], dict[str, str]]:
    """Passes per stage for the selected images of ``bench`` (a :class:`benchmark.pipeline.Benchmark`).

    ``stages``: "maps" (clean forward + maps of every asked method) and/or "metrics" (every asked metric on every
    map id: the outputs of the planned methods, or ``map_ids`` when given). Returns the stages and the items
    left out with the reason (not applicable)."""
    from metrics.base import MetricError, get_metric_class

    from .pipeline import DEFAULT_METRICS, StageReport

    model, n = bench.model, len(bench.indices)
    quick, seed = bench.profile.quick_methods, bench.cfg.seed
    rows: list[StageCost] = [StageCost("clean", "targets", n, Cost(forward=1.0), "top-1 of the clean image")]
    skipped: dict[str, str] = {}
    report = StageReport()
    methods = bench.make_methods(bench.cfg.methods if "maps" in stages or map_ids is None else [], report)
    skipped.update(report.not_applicable)
    produced: list[str] = []
    costs: dict[str, Cost | None] = {}
    for method in sorted(methods, key=lambda m: -len(m.variants)):  # the pipeline's order
        if all(oid in produced for oid in method.output_ids):
            if "maps" in stages:
                rows.append(StageCost("maps", method.id, n, Cost(), "derived by an earlier method"))
            continue
        costs[method.id] = method.cost(model)
        if "maps" in stages:
            extra = f" (+{len(method.variants)} derived maps)" if method.variants else ""
            bound = "upper bound: constant channels are skipped" if method.family == "polycam" else ""
            rows.append(StageCost("maps", method.id, n, costs[method.id], bound + extra))
        produced.extend(oid for oid in method.output_ids if oid not in produced)
    if "metrics" in stages:
        ids = map_ids if map_ids is not None else produced
        for metric_id in bench.cfg.metrics or list(DEFAULT_METRICS):
            metric = get_metric_class(metric_id)(bench.profile, bench.resolve_pass_batch_size(), seed)
            for mid in ids:
                mcost = _method_cost(model, mid, quick, seed, costs)
                if metric.needs_method and mcost is None:
                    skipped[f"{metric_id}/{mid}"] = "no registered method computes it on its own"
                    continue
                try:
                    c = metric.cost(model, mcost)
                except (NotApplicable, MetricError) as err:
                    skipped[f"{metric_id}/{mid}"] = str(err)
                    continue
                rows.append(StageCost("metrics", f"{metric_id}/{mid}", n, c))
    return rows, skipped


def eta_seconds(row: StageCost, cal: Calibration) -> float:
    fwd = row.forward / cal.rate("forward") if row.forward else 0.0
    bwd = row.backward / cal.rate("backward") if row.backward else 0.0
    return fwd + bwd


def _fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_plan(rows: list[StageCost], skipped: dict[str, str], cal: Calibration | None) -> str:
    """A markdown table: stage, item, images, forward and backward passes per image and in total, ETA."""
    head = "| stage | item | images | fwd/img | bwd/img | fwd total | bwd total | ETA |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    total_f = total_b = total_t = 0.0
    for r in rows:
        t = eta_seconds(r, cal) if cal else float("nan")
        total_f, total_b, total_t = total_f + r.forward, total_b + r.backward, total_t + (t if cal else 0.0)
        item = r.key + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.stage} | {item} | {r.images} | {r.per_image.forward:g} | {r.per_image.backward:g} | "
                     f"{r.forward:g} | {r.backward:g} | {_fmt_s(t) if cal else '-'} |")
    lines.append(f"| **total** | | | | | {total_f:g} | {total_b:g} | {_fmt_s(total_t) if cal else '-'} |")
    out = "\n".join(lines)
    if cal:
        f = ", ".join(f"{v:.1f}/s at {k}" for k, v in sorted(cal.forward.items()))
        b = ", ".join(f"{v:.1f}/s at {k}" for k, v in sorted(cal.backward.items()))
        out += (f"\ncalibration on {cal.device} ({cal.seconds:.1f} s): forward {f}; forward+backward "
                f"{b or 'not measured'}; ETA at batch size {cal.batch_size}")
    for key, reason in skipped.items():
        out += f"\nnot applicable: {key}: {reason}"
    return out


def dry_run(bench, stages: tuple[str, ...], map_ids: list[str] | None = None, budget_s: float = 4.0,
            echo=print) -> dict:
    """Print the plan and the ETA before any work (``--dry-run``); return them as a dict."""
    rows, skipped = plan(bench, stages, map_ids)
    need_bwd = any(r.per_image.backward for r in rows)
    cal = calibrate(bench.model, bench.resolve_pass_batch_size(), budget_s, bench.profile.image_size,
                    need_backward=need_bwd)
    echo(f"dry run: {len(bench.indices)} image(s), model {bench.tag}, profile {bench.profile.name}, device "
         f"{bench.device}, batch size {bench.batch_size}; nothing is computed or written")
    echo(format_plan(rows, skipped, cal))
    return {"rows": [{"stage": r.stage, "key": r.key, "images": r.images, "forward": r.forward,
                      "backward": r.backward, "eta_s": eta_seconds(r, cal)} for r in rows],
            "skipped": skipped, "calibration": cal.as_dict()}
