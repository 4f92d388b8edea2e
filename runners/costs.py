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

import time
from dataclasses import dataclass, field

from benchmark.core.cost import Cost
from benchmark.core.timing import probe_input, time_passes
from methods.base import METHODS, NotApplicable
from metrics.base import MetricError

from .context import DEFAULT_METRICS, RunContext
from .factory import build_methods, build_metrics, in_run_order


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


# ---------------------------------------------------------------------------------------------------- plan

def _method_cost(model, mid: str, quick: bool, seed: int, cache: dict) -> Cost | None:
    if mid not in cache:
        cls = METHODS.get(mid)
        cache[mid] = None if cls is None else cls(quick=quick, seed=seed).cost(model)
    return cache[mid]


def plan(ctx: RunContext, stages: tuple[str, ...] = ("maps", "metrics"), map_ids: list[str] | None = None) -> tuple[
        list[StageCost], dict[str, str]]:
    """Passes per stage for the selected images of ``ctx``.

    ``stages``: "maps" (clean forward + maps of every asked method) and/or "metrics" (every asked metric on every
    map id: the outputs of the planned methods, or ``map_ids`` when given). Returns the stages and the items
    left out with the reason (not applicable)."""
    model, n = ctx.model, len(ctx.indices)
    quick, seed = ctx.profile.quick, ctx.cfg.seed
    rows: list[StageCost] = [StageCost("clean", "targets", n, Cost(forward=1.0), "top-1 of the clean image")]
    methods, skipped = build_methods(ctx, ctx.cfg.methods if "maps" in stages or map_ids is None else [])
    produced: list[str] = []
    costs: dict[str, Cost | None] = {}
    for method in in_run_order(methods):
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
        for metric in build_metrics(ctx, ctx.cfg.metrics or list(DEFAULT_METRICS)):
            for mid in ids:
                mcost = _method_cost(model, mid, quick, seed, costs)
                if metric.needs_method and mcost is None:
                    skipped[f"{metric.id}/{mid}"] = "no registered method computes it on its own"
                    continue
                try:
                    c = metric.cost(model, mcost)
                except (NotApplicable, MetricError) as err:
                    skipped[f"{metric.id}/{mid}"] = str(err)
                    continue
                rows.append(StageCost("metrics", f"{metric.id}/{mid}", n, c))
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


def dry_run(ctx: RunContext, stages: tuple[str, ...], map_ids: list[str] | None = None, budget_s: float = 4.0,
            echo=print) -> dict:
    """Print the plan and the ETA before any work (``--dry-run``); return them as a dict."""
    rows, skipped = plan(ctx, stages, map_ids)
    need_bwd = any(r.per_image.backward for r in rows)
    cal = calibrate(ctx.model, ctx.resolve_pass_batch_size(), budget_s, ctx.profile.image_size,
                    need_backward=need_bwd)
    echo(f"dry run: {len(ctx.indices)} image(s), model {ctx.tag}, profile {ctx.profile.name}, device "
         f"{ctx.device}, batch size {ctx.batch_size}; nothing is computed or written")
    echo(format_plan(rows, skipped, cal))
    return {"rows": [{"stage": r.stage, "key": r.key, "images": r.images, "forward": r.forward,
                      "backward": r.backward, "eta_s": eta_seconds(r, cal)} for r in rows],
            "skipped": skipped, "calibration": cal.as_dict()}
