r"""``python -m benchmark perf``: throughput of each method and metric against the model's own limit, and the
speed-up over the way the peer libraries do the same work, measured in one run on one device and model.

Definitions (all measured in the same process, on the same device, model, images and precision):

* passes: model inputs that went through the network, counted by a forward pre-hook on the network; a pass whose
  output received a gradient (a tensor hook on the output) is a forward+backward pass, the others forward-only.
* limit: the model's best passes/s over a sweep of batch sizes (``--sweep``), forward-only (no_grad) and
  forward+backward (gradient of the summed logits of one class with respect to the input, as gradient methods do).
  Each batch size is timed in ``--repeats`` blocks of at least 0.3 s (GPU 0.1 s) taken in rotating order across
  the sizes; the sweep runs before and after the items, and a size's rate is the median of its blocks from both
  sweeps. The limit is the best size's median. ``peak`` is the fastest single block of any size: on a shared
  machine the load moves, and a block caught in a lull can run 20-30 % above what the model sustains (seen on the
  2-core CPU this was built on), so ``efficiency_vs_peak`` (the same formula against the peak) is a lower bound.
* efficiency of an item: the time its counted passes would take at the limit divided by the time it took::

      efficiency = (F / limit_forward + B / limit_backward) / seconds

  (``F`` forward-only passes, ``B`` forward+backward passes). For forward-only work this is achieved passes/s
  divided by the forward limit; for gradient work, by the forward+backward limit.
* each item: ``--warmup`` untimed calls, then ``--repeats`` timed calls; ``seconds`` is their median. Items run on
  all ``--limit`` images in one call (``method.compute_all`` / ``metric.compute``), at the method's and metric's
  batch size (the run's default unless ``--batch-size``).
* speed-up = peer seconds / our seconds for the same images and the same work; ours and the peer's calls are
  interleaved (A B, B A, ...) so that both see the same load on a shared machine, and both are timed afresh.

Peers (the peers' own code at their defaults, run in the same process):

* ``scorecam``, ``sscam``, ``iscam``: torchcam ``ScoreCAM`` / ``SSCAM`` / ``ISCAM`` on the whole batch at
  torchcam's default ``batch_size=32`` (our parameters ``num_samples``/``std`` passed so the work is the same);
  ``scorecam`` also against pytorch-grad-cam ``ScoreCAM`` (its default: 16 inputs per pass, images one by one,
  one ``.item()`` per score).
* ``occlusion``: captum ``Occlusion.attribute`` at its default ``perturbations_per_eval=1``, same windows.
* ``insertion`` + ``deletion``: torchcam ``metrics.DeletionInsertionMetric`` (default ``batch_size=32``; our steps
  and blurred baseline so the work is the same; it computes its CAM itself), against our CAM (``cam`` if the model
  has a GAP + Linear head, else ``gradcam``, the same torchcam extractor) followed by our insertion and deletion.
* ``sensitivity`` (if registered): captum ``metrics.sensitivity_max`` at its default ``max_examples_per_batch=None``
  with the metric's radius and number of perturbations and the scored method as explanation function.
* Poly-CAM (when ``pcampm`` is measured): :func:`reference_polycam`, a plain per-image loop with the reference
  code's structure (per variant PCAM+, PCAM-, PCAM+- one after the other, each with its own hooked clean pass; per
  layer, per chunk of 32 channels, one masked forward pass, and one complement pass for PCAM- / PCAM+-), against our
  ``pcampm`` with ablations (all three variants and every ablation map from one set of passes, constant channels
  skipped).

JSON written by ``--out FILE.json`` (schema ``benchmark-perf/1``)::

    schema, date (UTC ISO), precision (of the timed work: fp32, tf32 or bf16; --precision), device,
    environment (provenance.environment(): versions, git commit, device, command, time), load_average {before,
    after}, threads, model, weights, profile, seed, images, image_names, batch_size (stochastic methods),
    pass_batch_size (inputs per pass of the other methods and the metrics: --batch-size, else tuned),
    pass_batch_tuning ({candidates: {size: median passes/s}, rounds: {size: [passes/s]}, chosen, seconds}
    or null), repeats, warmup,
    overrides {method: {param: value}},
    limit: {sweep: [{batch_size, forward_passes_per_s, backward_passes_per_s (medians of both sweeps' blocks),
                     forward_rates, backward_rates (every block)}],
            forward: {batch_size, passes_per_s}, backward: {batch_size, passes_per_s} (null when no measured
            work has gradients; then the sweep's backward entries are null too),
            peak: {forward, backward} (the fastest single block), measurements: [sweep before the items, after]},
    items: [{kind: "method"|"metric", id, maps_from (metrics), params, batch_size, images, forward_only,
             declared: {forward, backward} per image, measured: {forward, backward} per image, exact (declared ==
             measured), passes_saved_per_image (declared - measured), seconds, seconds_all, images_per_s,
             passes_per_s, efficiency, efficiency_vs_peak} or {kind, id, not_applicable: reason}],
    peers: [{ours, peer, library, version, defaults, seconds, seconds_all, measured {forward, backward} per image,
             passes_per_s, efficiency, efficiency_vs_peak, ours_seconds, speedup}],
    polycam: {method, params, layers, channels, outputs, declared_passes_per_image, pcampm_alone_declared,
              passes_run_per_image, passes_saved_per_image, seconds, seconds_all, efficiency, efficiency_vs_peak,
              reference: {seconds, seconds_all, passes_per_image, chunk, memory_format, efficiency}, speedup} or null,
    precision_drift: [] at fp32, else per method [{method, precision, images, map_max_abs_diff, map_mean_abs_diff,
              map_max_rel_diff (the largest per-image max |diff| / max |fp32 map|),
              spearman_min, spearman_mean, metrics: {metric: {fp32, <precision>, mean_abs_diff, max_abs_diff}}}],
    targets: {efficiency_min_forward_only, efficiency_target (0.8), efficiency_met,
              efficiency_vs_peak_min_forward_only, polycam_speedup,
              polycam_speedup_target (2), polycam_passes_within_pcampm}
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np
import torch

from benchmark.core import precision as precision_mod
from benchmark.core.passes import predict
from methods.base import NotApplicable, make_method
from runners.context import RunContext
from runners.drift import compare_maps
from runners.factory import build_method, build_metric
from runners.provenance import environment

from .peers import run_peers, run_polycam
from .report import item_line
from .timing import PassCounter, combine_limits, efficiency, measure_limit, timed

SCHEMA = "benchmark-perf/1"
EFFICIENCY_TARGET = 0.8
POLYCAM_SPEEDUP_TARGET = 2.0


def default_sweep(device: torch.device, batch_size: int) -> list[int]:
    base = [32, 64, 128, 256, 512] if device.type == "cuda" else [2, 4, 8, 16, 32, 64, 128]
    return sorted(set(base) | {batch_size})


def run_perf(cfg, methods: list[str], metrics: list[str], repeats: int = 3, warmup: int = 1,
             sweep: list[int] | None = None, overrides: dict | None = None, peers: bool = True,
             polycam: bool = True, echo=print, precision: str = "fp32") -> dict:
    """Measure everything (see the module docstring); ``cfg`` is a :class:`runners.context.RunConfig` giving the
    model, weights, data, limit, device, profile, seed and batch size. Returns the JSON-ready result."""
    overrides = overrides or {}
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    ctx = RunContext(cfg)
    model, device, profile, bs = ctx.model, ctx.device, ctx.profile, ctx.batch_size
    pbs = ctx.resolve_pass_batch_size()  # deterministic work and metrics: --batch-size, else the tuned size
    names = [ctx.source.names[i] for i in ctx.indices]
    x = ctx.load_images(ctx.indices)
    targets, _ = predict(model.net, x, bs)
    n_img = x.shape[0]
    quick = profile.quick
    unknown = set(overrides) - set(methods)
    if unknown:
        raise ValueError(f"--set names method(s) {sorted(unknown)} that are not measured (--methods)")

    sweep = sorted(set(sweep or default_sweep(device, bs) + [pbs]))
    echo(f"perf: {model.tag} on {device}, {n_img} image(s), profile {profile.name}, batch size {bs}, inputs per "
         f"pass {pbs}" + (f" (tuned: {ctx.pass_tuning['candidates']} passes/s)" if ctx.pass_tuning else "") + ", "
         f"{repeats} repetition(s) after {warmup} warm-up call(s); limit sweep {sweep}")
    # the forward+backward limit only where some work has gradients (it is the slow half of the sweep)
    need_bwd = any(make_method(mid, quick=quick, seed=cfg.seed, **overrides.get(mid, {})).needs_grad for mid in methods)
    with precision_mod.active(precision, device):
        limit = measure_limit(model.net, sweep, profile.image_size, device, repeats, need_bwd)  # again at the end

    counter = PassCounter(model.net)
    items, peer_rows = [], []
    objs: dict[str, object] = {}
    maps_for_metrics = None
    with counter, precision_mod.active(precision, device):
        for mid in methods:
            method = build_method(ctx, mid, **overrides.get(mid, {}))
            try:
                method.check_applicable(model)
            except NotApplicable as err:
                items.append({"kind": "method", "id": mid, "not_applicable": str(err)})
                continue
            declared = method.cost(model)
            r = timed(lambda: method.compute_all(model, x, targets, profile.image_size), device, counter, warmup,
                      repeats)
            if maps_for_metrics is None:
                maps_for_metrics = (mid, method, r["result"][mid])
            objs[mid] = method
            items.append(_item("method", mid, method.params, method.batch_size, n_img, declared, r, limit))
            echo(item_line(items[-1]))

        metric_objs = []
        for metric_id in metrics:
            metric = build_metric(ctx, metric_id)
            if maps_for_metrics is None:
                raise ValueError("metrics need maps: give at least one applicable method in --methods")
            src_id, src_method, maps = maps_for_metrics
            explainer = _explainer(model, src_method, src_id, profile.image_size) if metric.needs_method else None
            declared = metric.cost(model, src_method.cost(model))
            r = timed(lambda: metric.compute(model, x, maps, targets, explainer=explainer), device, counter,
                      warmup, repeats)
            item = _item("metric", metric_id, metric.params, pbs, n_img, declared, r, limit)
            item["maps_from"] = src_id
            items.append(item)
            metric_objs.append((metric, explainer, maps))
            echo(item_line(items[-1]))

        if peers:
            peer_rows = run_peers(model, x, targets, profile, objs, metric_objs, counter, device, warmup, repeats,
                                   limit, pbs, quick, cfg.seed, echo)
        poly = None
        if polycam and "pcampm" in objs:
            poly = run_polycam(model, x, targets, profile, overrides.get("pcampm", {}), counter, device, warmup,
                                repeats, limit, pbs, quick, cfg.seed, echo)

    # the limit is measured before and after the items (the best of both per batch size: on a shared machine the
    # load moves); every efficiency is computed with the final limit
    with precision_mod.active(precision, device):
        limit = combine_limits(limit, measure_limit(model.net, sweep, profile.image_size, device, repeats,
                                                    need_bwd))
    _reprice(items, peer_rows, poly, limit, n_img)
    drift = precision_drift(model, x, targets, profile.image_size, precision, objs, metric_objs, device, echo) \
        if precision != "fp32" else []
    fwd_items = [i for i in items if "efficiency" in i and i["forward_only"]]
    fwd_only = [i["efficiency"] for i in fwd_items]
    fwd_only_peak = [i["efficiency_vs_peak"] for i in fwd_items]
    result = {
        "schema": SCHEMA, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "precision": precision,
        "device": str(device), "environment": environment(device),
        "load_average": {"before": load_before,
                         "after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "threads": torch.get_num_threads(), "model": model.tag, "weights": cfg.weights, "profile": profile.name,
        "seed": cfg.seed, "images": n_img, "image_names": names, "batch_size": bs,
        "pass_batch_size": pbs, "pass_batch_tuning": ctx.pass_tuning, "repeats": repeats,
        "warmup": warmup, "overrides": overrides, "limit": limit, "items": items, "peers": peer_rows,
        "polycam": poly, "precision_drift": drift,
        "targets": {
            "efficiency_min_forward_only": min(fwd_only) if fwd_only else None,
            "efficiency_target": EFFICIENCY_TARGET,
            "efficiency_met": bool(fwd_only) and min(fwd_only) >= EFFICIENCY_TARGET,
            "efficiency_vs_peak_min_forward_only": min(fwd_only_peak) if fwd_only_peak else None,
            "polycam_speedup": poly["speedup"] if poly else None,
            "polycam_speedup_target": POLYCAM_SPEEDUP_TARGET,
            "polycam_passes_within_pcampm": (poly["declared_passes_per_image"] <= poly["pcampm_alone_declared"]
                                             and poly["passes_run_per_image"] <= poly["pcampm_alone_declared"])
            if poly else None,
        },
    }
    return result


def precision_drift(model, x, targets, size: int, precision: str, methods: dict, metric_objs: list, device,
                    echo=print) -> list[dict]:
    """How far ``precision`` moves each method's maps and the metrics' values from fp32, on the same images.

    Per method: the maps at fp32 and at ``precision`` (each made under its own precision), their largest and mean
    absolute difference and their Spearman rank correlation per image (min and mean); per metric that scores a
    stored map (not max-sensitivity, which re-runs the method): the value at fp32 (fp32 maps scored by the fp32
    model) and at ``precision`` (its maps scored under it), with the mean and largest absolute difference."""
    rows = []
    for mid, method in methods.items():
        runs = {}
        for prec in ("fp32", precision):
            with precision_mod.active(prec, device):
                maps = method.compute_all(model, x, targets, size)[mid].float()
                values = {m.id: m.compute(model, x, maps, targets)["value"].float().cpu().numpy()
                          for m, _e, _m in metric_objs if not m.needs_method}
            runs[prec] = (maps.cpu().numpy().astype(np.float64), values)
        row = {"method": mid, "precision": precision, **compare_maps(runs["fp32"][0], runs[precision][0]),
               "metrics": {}}
        for key, va in runs["fp32"][1].items():
            vb = runs[precision][1][key]
            row["metrics"][key] = {"fp32": float(va.mean()), precision: float(vb.mean()),
                                   "mean_abs_diff": float(np.abs(va - vb).mean()),
                                   "max_abs_diff": float(np.abs(va - vb).max())}
        rows.append(row)
        echo(f"  {precision} vs fp32, {mid}: map |diff| max {row['map_max_abs_diff']:.2e} mean "
             f"{row['map_mean_abs_diff']:.2e}, Spearman min {row['spearman_min']}; "
             + ", ".join(f"{k} |diff| mean {v['mean_abs_diff']:.2e}" for k, v in row["metrics"].items()))
    return rows


def _explainer(model, method, mid: str, size: int):
    """``explainer(x, targets) -> [B,H,W]`` maps of ``mid`` (for metrics that re-run the method)."""

    def explain(x, targets):
        return method.compute_all(model, x, targets, size)[mid]

    explain.method = method
    return explain


def _item(kind, iid, params, bs, n_img, declared, r, limit) -> dict:
    fwd, bwd = r["forward"], r["backward"]
    meas = {"forward": fwd / n_img, "backward": bwd / n_img}
    decl = {"forward": float(declared.forward), "backward": float(declared.backward)}
    return {"kind": kind, "id": iid, "params": params, "batch_size": bs, "images": n_img,
            "forward_only": bwd == 0 and decl["backward"] == 0, "declared": decl, "measured": meas,
            "exact": decl == meas,
            "passes_saved_per_image": decl["forward"] + decl["backward"] - meas["forward"] - meas["backward"],
            "seconds": r["seconds"], "seconds_all": r["seconds_all"], "images_per_s": n_img / r["seconds"],
            "passes_per_s": (fwd + bwd) / r["seconds"], "efficiency": efficiency(fwd, bwd, r["seconds"], limit)}


def _reprice(items: list[dict], peers: list[dict], poly: dict | None, limit: dict, n_img: int) -> None:
    """Recompute every efficiency with ``limit`` (``efficiency``) and with its peak (``efficiency_vs_peak``)."""
    for key, lim in (("efficiency", limit), ("efficiency_vs_peak", limit["peak"])):
        for it in items + peers:
            if "measured" in it:
                m = it["measured"]
                it[key] = efficiency(m["forward"] * n_img, m["backward"] * n_img, it["seconds"], lim)
        if poly:
            poly[key] = efficiency(poly["passes_run_per_image"] * n_img, 0, poly["seconds"], lim)
    if poly:
        ref = poly["reference"]
        ref["efficiency"] = efficiency(ref["passes_per_image"] * n_img, 0, ref["seconds"], limit)
