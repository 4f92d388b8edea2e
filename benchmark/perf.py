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
  (Until 2026-11 the limit was the best of per-size medians of 3 single passes, maximised over the two sweeps:
  close to the peak, and it under-reported every efficiency on a noisy CPU.)
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
              spearman_min, spearman_mean, metrics: {metric: {fp32, <precision>, mean_abs_diff, max_abs_diff}}}],
    targets: {efficiency_min_forward_only, efficiency_target (0.8), efficiency_met,
              efficiency_vs_peak_min_forward_only, polycam_speedup,
              polycam_speedup_target (2), polycam_passes_within_pcampm}
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: `python -m benchmark --help` stays fast
    import torch

SCHEMA = "benchmark-perf/1"
EFFICIENCY_TARGET = 0.8
POLYCAM_SPEEDUP_TARGET = 2.0
REFERENCE_CHUNK = 32  # channels per forward pass in the reference Poly-CAM code


# ------------------------------------------------------------------------------------------------ counting

class PassCounter:
    """Counts the inputs through ``net`` (forward pre-hook) and those whose output received a gradient."""

    def __init__(self, net: torch.nn.Module):
        self.net, self.handles = net, []
        self.reset()

    def reset(self) -> None:
        self.inputs = 0
        self.backward = 0
        self.calls = 0

    @property
    def forward_only(self) -> int:
        return self.inputs - self.backward

    def __enter__(self):
        import torch

        def pre(_m, inp):
            self.inputs += int(inp[0].shape[0])
            self.calls += 1

        def post(_m, inp, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                n = int(out.shape[0])

                def grad_hook(g):
                    self.backward += n
                out.register_hook(grad_hook)

        self.handles = [self.net.register_forward_pre_hook(pre), self.net.register_forward_hook(post)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def timed(fn, device: torch.device, counter: PassCounter, warmup: int, repeats: int) -> dict:
    """``warmup`` untimed calls, then ``repeats`` timed ones; the passes of the first timed call."""
    from .costs import sync

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
    from .costs import sync

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


# ------------------------------------------------------------------------------------------------ the limit

def measure_limit(net: torch.nn.Module, sweep: list[int], size: int, device: torch.device, repeats: int,
                  backward: bool = True, min_seconds: float | None = None) -> dict:
    """Forward and forward+backward passes/s at each batch size of ``sweep``: ``repeats`` timed blocks of at least
    ``min_seconds`` per size (0.3 s CPU, 0.1 s GPU), taken in rotating order across the sizes
    (:func:`benchmark.costs.round_robin_rates`); each size's rate is the median of its blocks, and the best size's
    median is the limit (``backward=False``: forward only, the backward entries are None)."""
    from .costs import round_robin_rates

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


def efficiency(forward: float, backward: float, seconds: float, limit: dict) -> float:
    """``(F / limit_forward + B / limit_backward) / seconds`` (see the module docstring)."""
    ideal = forward / limit["forward"]["passes_per_s"]
    if backward:
        ideal += backward / limit["backward"]["passes_per_s"]
    return ideal / seconds if seconds > 0 else float("nan")


# ------------------------------------------------------------------------------------------------ Poly-CAM

def reference_polycam(model, x: torch.Tensor, targets: torch.Tensor, layers: list[str], percent: float = 0.1,
                      chunk: int = REFERENCE_CHUNK, weightings: tuple[str, ...] = ("p", "m", "pm"),
                      ablations: bool = True) -> dict[str, torch.Tensor]:
    """Poly-CAM the way the reference code computes it: a plain loop, image by image, PCAM+ then PCAM- then PCAM+-,
    each with its own hooked clean pass and its own masked passes (per layer, ``chunk`` channels per forward pass;
    masked inputs for PCAM+, complement inputs for PCAM-, both for PCAM+-), no channel skipped, inputs in the
    default (contiguous) memory format. Same formulas as :mod:`methods.polycam` (so the same maps):
    ``{"pcam<w>": [B,H,W]}`` and, with ``ablations``, the fusion steps, isolated-layer maps and no-LNorm maps.
    Passes per image: ``3 + C (PCAM+) + C (PCAM-) + 2 C (PCAM+-)`` with ``C`` the channels of all layers."""
    import torch

    with torch.no_grad():
        return _reference_polycam(model, x, targets, layers, percent, chunk, weightings, ablations)


def _reference_polycam(model, x, targets, layers, percent, chunk, weightings, ablations):
    import torch

    from methods.polycam import _Recorder, class_scores, fuse, percentile_normalize, resize

    net, out_size = model.net, tuple(x.shape[-2:])
    out: dict[str, list[torch.Tensor]] = {}
    for w in weightings:
        for i in range(x.shape[0]):
            xi, ci = x[i:i + 1], targets[i:i + 1]
            with _Recorder(net, layers) as rec:
                clean = class_scores(net(xi), ci)[0]
            cams = []
            for name in layers:
                a = rec.out[name][0]  # [C, h, w]
                u = percentile_normalize(a, percent)
                weights = []
                for s in range(0, a.shape[0], chunk):
                    m = resize(u[s:s + chunk], out_size)[:, None]  # [k, 1, H, W]
                    cls = ci.expand(m.shape[0])
                    if w in ("p", "pm"):
                        sp = class_scores(net(m * xi), cls)
                    if w in ("m", "pm"):
                        sm = class_scores(net((1.0 - m) * xi), cls)
                    weights.append(sp if w == "p" else torch.relu(clean - sm) if w == "m" else
                                   torch.relu(sp + clean - sm))
                wt = torch.cat(weights)
                cams.append(torch.relu(torch.einsum("k,khw->hw", wt, a.float()))[None])
            steps = fuse(cams, out_size, percent, use_lnorm=True, all_steps=ablations)
            maps = {f"pcam{w}": steps[-1]}
            if ablations:
                maps.update({f"pcam{w}_step{k}": m for k, m in enumerate(steps[:-1], start=1)})
                maps.update({f"cam{w}_l{k}": resize(c, out_size) for k, c in enumerate(cams, start=1)})
                maps[f"pcam{w}_nolnorm"] = fuse(cams, out_size, percent, use_lnorm=False, all_steps=False)[-1]
            for k, m in maps.items():
                out.setdefault(k, []).append(m)
    return {k: torch.cat(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------ peers

def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def peer_torchcam_score(model, method, x, t):
    """torchcam ScoreCAM / SSCAM / ISCAM on the whole batch, torchcam's default batch_size (32)."""
    import torch
    import torchcam.methods as tcm

    from methods.cam_family import seeded_rng

    kwargs = {k: method.params[k] for k in ("num_samples", "std") if k in method.params}
    cls = getattr(tcm, method.extractor_name)

    def run():
        with seeded_rng(method.seed, x.device), cls(model.net, target_layer=model.last_conv, **kwargs) as ex:
            with torch.no_grad():
                scores = model.net(x)
            return ex(class_idx=[int(c) for c in t.tolist()], scores=scores)

    return run, {"batch_size": 32, **kwargs, "target_layer": model.last_conv}


def peer_gradcam_scorecam(model, method, x, t):
    """pytorch-grad-cam ScoreCAM at its defaults (16 inputs per pass, images one by one)."""
    from .tv_compat import import_torchvision

    import_torchvision()
    from pytorch_grad_cam import ScoreCAM as GScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in t.tolist()]

    def run():
        with contextlib.redirect_stderr(io.StringIO()), GScoreCAM(model=model.net,
                                                                   target_layers=[model.module(model.last_conv)]) as c:
            return c(input_tensor=x, targets=targets)

    return run, {"batch_size": 16, "target_layers": [model.last_conv]}


def peer_captum_occlusion(model, method, x, t):
    """captum Occlusion at its default perturbations_per_eval=1, our windows, strides and baseline."""
    from captum.attr import Occlusion

    p = method.params

    def run():
        return Occlusion(model.net).attribute(x, sliding_window_shapes=tuple(p["window"]), strides=tuple(p["stride"]),
                                              baselines=float(p["baseline"]), target=t)

    return run, {"perturbations_per_eval": 1, "window": p["window"], "stride": p["stride"]}


def peer_torchcam_insdel(model, x, t, profile):
    """torchcam DeletionInsertionMetric (default batch_size 32) with our steps and blurred baseline."""
    from functools import partial

    import torch
    import torchcam.methods as tcm
    from torchcam.metrics import DeletionInsertionMetric

    from metrics.insertion_deletion import blur_baseline

    def baseline(inp):
        return blur_baseline(inp, profile.blur_kernel, profile.blur_sigma)

    use_cam = model.fc is not None

    def run():
        extractor = (tcm.CAM(model.net, target_layer=model.last_conv, fc_layer=model.fc) if use_cam else
                     tcm.GradCAM(model.net, target_layer=model.last_conv))
        with extractor:
            metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=profile.insdel_steps,
                                             baseline=baseline)
            inp = x if use_cam else x.detach().requires_grad_(True)
            with torch.enable_grad() if not use_cam else torch.no_grad():
                metric.update(inp, class_idx=[int(c) for c in t.tolist()])
            return metric.summary()

    return run, {"batch_size": 32, "steps": profile.insdel_steps, "extractor": "CAM" if use_cam else "GradCAM"}


def peer_captum_sensitivity(model, metric, explainer, x, t):
    """captum sensitivity_max at its default max_examples_per_batch=None, the metric's radius and samples."""
    from captum.metrics import sensitivity_max

    p = metric.params
    radius = p.get("perturb_radius", p.get("radius"))
    n = p.get("n_perturb_samples", p.get("n_perturb", p.get("samples")))
    if radius is None or n is None:
        return None, {}

    def run():
        return sensitivity_max(lambda inp, target: explainer(inp, target), x, perturb_radius=float(radius),
                               n_perturb_samples=int(n), target=t)

    return run, {"max_examples_per_batch": None, "perturb_radius": radius, "n_perturb_samples": n}


# ------------------------------------------------------------------------------------------------ the run

def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``["rise.n_masks=1000", 'pcampm.layers=["a","b"]']`` -> ``{"rise": {"n_masks": 1000}, "pcampm": {...}}``
    (values parsed as JSON, else kept as strings)."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        mid, dot, param = key.partition(".")
        if not sep or not dot or not mid or not param:
            raise ValueError(f"--set takes METHOD.PARAM=VALUE (e.g. rise.n_masks=1000), not {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(mid, {})[param] = parsed
    return out


def default_sweep(device: torch.device, batch_size: int) -> list[int]:
    base = [32, 64, 128, 256, 512] if device.type == "cuda" else [2, 4, 8, 16, 32, 64, 128]
    return sorted(set(base) | {batch_size})


def run_perf(cfg, methods: list[str], metrics: list[str], repeats: int = 3, warmup: int = 1,
             sweep: list[int] | None = None, overrides: dict | None = None, peers: bool = True,
             polycam: bool = True, echo=print, precision: str = "fp32") -> dict:
    """Measure everything (see the module docstring); ``cfg`` is a :class:`benchmark.pipeline.RunConfig` giving the
    model, weights, data, limit, device, profile, seed and batch size. Returns the JSON-ready result."""
    import torch

    from methods.base import NotApplicable, make_method
    from metrics.base import get_metric_class
    from runners.batched import predict

    from . import data as data_mod
    from . import precision as precision_mod
    from .pipeline import Benchmark
    from .provenance import environment

    overrides = overrides or {}
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    bench = Benchmark(cfg)
    model, device, profile, bs = bench.model, bench.device, bench.profile, bench.batch_size
    pbs = bench.resolve_pass_batch_size()  # deterministic work and metrics: --batch-size, else the tuned size
    names = [bench.source.names[i] for i in bench.indices]
    x = torch.stack([data_mod.preprocess(bench.source.open(n), profile.image_size, profile.antialias) for n in names])
    x = model.normalize(x.to(device))
    targets, _ = predict(model.net, x, bs)
    n_img = x.shape[0]
    quick = profile.quick_methods
    unknown = set(overrides) - set(methods)
    if unknown:
        raise ValueError(f"--set names method(s) {sorted(unknown)} that are not measured (--methods)")

    sweep = sorted(set(sweep or default_sweep(device, bs) + [pbs]))
    echo(f"perf: {model.tag} on {device}, {n_img} image(s), profile {profile.name}, batch size {bs}, inputs per "
         f"pass {pbs}" + (f" (tuned: {bench.pass_tuning['candidates']} passes/s)" if bench.pass_tuning else "") + ", "
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
            method = make_method(mid, quick=quick, seed=cfg.seed, **overrides.get(mid, {}))
            method.batch_size = bench.pass_size_for(method)
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
            echo(_line(items[-1]))

        metric_objs = []
        for metric_id in metrics:
            metric = get_metric_class(metric_id)(profile, pbs, cfg.seed)
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
            echo(_line(items[-1]))

        if peers:
            peer_rows = _run_peers(model, x, targets, profile, objs, metric_objs, counter, device, warmup, repeats,
                                   limit, pbs, quick, cfg.seed, echo)
        poly = None
        if polycam and "pcampm" in objs:
            poly = _run_polycam(model, x, targets, profile, overrides.get("pcampm", {}), counter, device, warmup,
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
        "pass_batch_size": pbs, "pass_batch_tuning": bench.pass_tuning, "repeats": repeats,
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
    import numpy as np

    from metrics.randomisation import spearman

    from . import precision as precision_mod

    rows = []
    for mid, method in methods.items():
        runs = {}
        for prec in ("fp32", precision):
            with precision_mod.active(prec, device):
                maps = method.compute_all(model, x, targets, size)[mid].float()
                values = {m.id: m.compute(model, x, maps, targets)["value"].float().cpu().numpy()
                          for m, _e, _m in metric_objs if not m.needs_method}
            runs[prec] = (maps.cpu().numpy().astype(np.float64), values)
        a, b = runs["fp32"][0], runs[precision][0]
        rho = [spearman(a[i], b[i]) for i in range(a.shape[0])]
        row = {"method": mid, "precision": precision, "images": int(a.shape[0]),
               "map_max_abs_diff": float(np.abs(a - b).max()), "map_mean_abs_diff": float(np.abs(a - b).mean()),
               "spearman_min": float(np.nanmin(rho)) if not np.isnan(rho).all() else None,
               "spearman_mean": float(np.nanmean(rho)) if not np.isnan(rho).all() else None, "metrics": {}}
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


def _line(it: dict) -> str:
    return (f"  {it['kind']} {it['id']}: {it['seconds']:.2f} s, {it['passes_per_s']:.1f} passes/s, efficiency "
            f"{it['efficiency']:.2f} (against the first limit sweep; the table uses both)")


def _peer_row(ours, peer, library, defaults, r, n_img, limit, ours_s) -> dict:
    fwd, bwd = r["forward"], r["backward"]
    lib = library.split(".")[0].replace("pytorch_grad_cam", "grad-cam")
    return {"ours": ours, "peer": peer, "library": library, "version": _version(lib), "defaults": defaults,
            "seconds": r["seconds"], "seconds_all": r["seconds_all"],
            "measured": {"forward": fwd / n_img, "backward": bwd / n_img},
            "passes_per_s": (fwd + bwd) / r["seconds"], "efficiency": efficiency(fwd, bwd, r["seconds"], limit),
            "ours_seconds": ours_s, "speedup": r["seconds"] / ours_s}


def _run_peers(model, x, t, profile, objs, metric_objs, counter, device, warmup, repeats, limit, bs, quick, seed,
               echo) -> list[dict]:
    """Each peer (module docstring) against our same work, timed interleaved."""
    from methods.base import make_method

    rows, n_img = [], x.shape[0]
    jobs = []
    for mid in ("scorecam", "sscam", "iscam"):
        if mid in objs and _installed("torchcam"):
            jobs.append((mid, f"torchcam.methods.{objs[mid].extractor_name}", "torchcam",
                         peer_torchcam_score(model, objs[mid], x, t)))
    if "scorecam" in objs and _installed("pytorch_grad_cam"):
        jobs.append(("scorecam", "pytorch_grad_cam.ScoreCAM", "pytorch_grad_cam",
                     peer_gradcam_scorecam(model, objs["scorecam"], x, t)))
    if "occlusion" in objs and _installed("captum"):
        jobs.append(("occlusion", "captum.attr.Occlusion", "captum", peer_captum_occlusion(model, objs["occlusion"],
                                                                                           x, t)))
    for mid, peer, lib, (run, defaults) in jobs:
        method = objs[mid]
        r_ours, r = timed_pair(lambda m=method: m.compute_all(model, x, t, profile.image_size), run, device,
                               counter, warmup, repeats)
        rows.append(_peer_row(mid, peer, lib, defaults, r, n_img, limit, r_ours["seconds"]))
        echo(f"  peer {peer} vs {mid}: {r['seconds']:.2f} s, speed-up {rows[-1]['speedup']:.2f}x")

    ids = {m[0].id for m in metric_objs}
    if {"insertion", "deletion"} <= ids and _installed("torchcam"):
        run, defaults = peer_torchcam_insdel(model, x, t, profile)
        cam_id = "cam" if model.fc is not None else "gradcam"
        cam = make_method(cam_id, quick=quick, seed=seed)
        cam.batch_size = bs
        ins, dele = (next(m[0] for m in metric_objs if m[0].id == k) for k in ("insertion", "deletion"))

        def ours():
            maps = cam.compute_all(model, x, t, profile.image_size)[cam_id]
            return ins.compute(model, x, maps, t), dele.compute(model, x, maps, t)

        r_ours, r = timed_pair(ours, run, device, counter, warmup, repeats)
        row = _peer_row(f"{cam_id}+insertion+deletion", "torchcam.metrics.DeletionInsertionMetric", "torchcam",
                        defaults, r, n_img, limit, r_ours["seconds"])
        row["ours_measured"] = {"forward": r_ours["forward"] / n_img, "backward": r_ours["backward"] / n_img}
        rows.append(row)
        echo(f"  peer torchcam DeletionInsertionMetric vs {row['ours']}: {r['seconds']:.2f} s, speed-up "
             f"{row['speedup']:.2f}x")
    for metric, explainer, maps in metric_objs:
        if metric.id == "sensitivity" and explainer is not None and _installed("captum"):
            run, defaults = peer_captum_sensitivity(model, metric, explainer, x, t)
            if run is None:
                continue
            r_ours, r = timed_pair(lambda m=metric, e=explainer, mp=maps: m.compute(model, x, mp, t, explainer=e),
                                   run, device, counter, warmup, repeats)
            rows.append(_peer_row("sensitivity", "captum.metrics.sensitivity_max", "captum", defaults, r, n_img,
                                  limit, r_ours["seconds"]))
            echo(f"  peer captum sensitivity_max: {r['seconds']:.2f} s, speed-up {rows[-1]['speedup']:.2f}x")
    return rows


def _run_polycam(model, x, t, profile, over, counter, device, warmup, repeats, limit, bs, quick, seed,
                 echo) -> dict:
    """pcampm with ablations and :func:`reference_polycam` on the same images, timed interleaved."""
    from methods.base import make_method
    from methods.polycam import channel_counts, resolve_layers

    over = {**over, "ablations": True}
    method = make_method("pcampm", quick=quick, seed=seed, **over)
    method.batch_size = bs
    layers = resolve_layers(model, method.params["layers"])
    n_img = x.shape[0]
    r, ref = timed_pair(lambda: method.compute_all(model, x, t, profile.image_size),
                        lambda: reference_polycam(model, x, t, layers, float(method.params["outlier_percent"])),
                        device, counter, warmup, repeats)  # interleaved: both see the same load
    seconds = r["seconds"]
    run_passes = (r["forward"] + r["backward"]) / n_img
    outputs = len(r["result"])
    declared = method.cost(model).forward
    alone = make_method("pcampm", quick=quick, seed=seed, **{**over, "ablations": False})
    alone_declared = alone.cost(model).forward
    chans = channel_counts(model, layers)
    out = {"method": "pcampm", "params": method.params, "layers": layers, "channels": chans, "outputs": outputs,
           "declared_passes_per_image": declared, "pcampm_alone_declared": alone_declared,
           "passes_run_per_image": run_passes, "passes_saved_per_image": declared - run_passes,
           "seconds": seconds, "seconds_all": r["seconds_all"],
           "efficiency": efficiency(run_passes * n_img, 0, seconds, limit),
           "reference": {"seconds": ref["seconds"], "seconds_all": ref["seconds_all"],
                         "passes_per_image": (ref["forward"] + ref["backward"]) / n_img, "chunk": REFERENCE_CHUNK,
                         "memory_format": "contiguous",
                         "efficiency": efficiency(ref["forward"], ref["backward"], ref["seconds"], limit)},
           "speedup": ref["seconds"] / seconds}
    echo(f"  Poly-CAM: pcampm + {outputs - 1} derived maps {seconds:.2f} s ({run_passes:.0f} passes/img, "
         f"{declared - run_passes:.0f} saved by skipping constant channels) vs reference loop {ref['seconds']:.2f} s "
         f"({out['reference']['passes_per_image']:.0f} passes/img): speed-up {out['speedup']:.2f}x")
    return out


# ------------------------------------------------------------------------------------------------ output

def format_table(res: dict) -> str:
    lim = res["limit"]
    lines = [f"perf {res['date']}: {res['model']} on {res['environment']['device']}, {res['precision']}, "
             f"{res['images']} image(s), profile {res['profile']}, batch size {res['batch_size']}, median of "
             f"{res['repeats']} after {res['warmup']} warm-up; load average {res['load_average']}",
             f"limit: forward {lim['forward']['passes_per_s']:.1f} passes/s (batch {lim['forward']['batch_size']}), "
             + (f"forward+backward {lim['backward']['passes_per_s']:.1f} passes/s (batch "
                f"{lim['backward']['batch_size']})" if lim["backward"] else "forward+backward not needed"),
             f"limit peak (fastest single block): forward {lim['peak']['forward']['passes_per_s']:.1f} passes/s "
             f"(batch {lim['peak']['forward']['batch_size']})", "",
             "| item | passes/img declared | passes/img run | s | img/s | passes/s | efficiency | vs peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def passes(d):
        return f"{d['forward']:g}" + (f" + {d['backward']:g} bwd" if d["backward"] else "")

    for it in res["items"]:
        if "not_applicable" in it:
            lines.append(f"| {it['kind']} {it['id']} | not applicable: {it['not_applicable']} | | | | | | |")
            continue
        lines.append(f"| {it['kind']} {it['id']} | {passes(it['declared'])} | {passes(it['measured'])} | "
                     f"{it['seconds']:.2f} | {it['images_per_s']:.3g} | {it['passes_per_s']:.1f} | "
                     f"{it['efficiency']:.2f} | {it['efficiency_vs_peak']:.2f} |")
    if res["peers"] or res["polycam"]:
        lines += ["", "| ours | peer (defaults) | ours s | peer s | peer passes/img | peer efficiency | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for p in res["peers"]:
            d = ", ".join(f"{k}={v}" for k, v in p["defaults"].items())
            lines.append(f"| {p['ours']} | {p['peer']} {p['version']} ({d}) | {p['ours_seconds']:.2f} | "
                         f"{p['seconds']:.2f} | {passes(p['measured'])} | {p['efficiency']:.2f} | "
                         f"{p['speedup']:.2f}x |")
        poly = res["polycam"]
        if poly:
            ref = poly["reference"]
            lines.append(f"| pcampm + {poly['outputs'] - 1} derived maps ({poly['passes_run_per_image']:g} passes/img, "
                         f"{poly['passes_saved_per_image']:g} saved) | reference-style loop (PCAM+, PCAM-, PCAM+-, "
                         f"chunks of {ref['chunk']}) | {poly['seconds']:.2f} | {ref['seconds']:.2f} | "
                         f"{ref['passes_per_image']:g} | {ref['efficiency']:.2f} | {poly['speedup']:.2f}x |")
    if res.get("precision_drift"):
        lines += ["", f"| method | {res['precision']} vs fp32: map max abs diff | mean abs diff | Spearman min / mean "
                  "| metric values (fp32 -> " + res["precision"] + ", mean abs diff) |", "|---|---:|---:|---|---|"]
        for d in res["precision_drift"]:
            rho = "n/a" if d["spearman_min"] is None else f"{d['spearman_min']:.4f} / {d['spearman_mean']:.4f}"
            mets = "; ".join(f"{k} {v['fp32']:.4f} -> {v[res['precision']]:.4f} ({v['mean_abs_diff']:.1e})"
                             for k, v in d["metrics"].items())
            lines.append(f"| {d['method']} | {d['map_max_abs_diff']:.2e} | {d['map_mean_abs_diff']:.2e} | {rho} | "
                         f"{mets} |")
    tg = res["targets"]
    if tg["efficiency_min_forward_only"] is not None:
        lines.append(f"\nforward-only efficiency: min {tg['efficiency_min_forward_only']:.2f} (target "
                     f"{tg['efficiency_target']}: {'met' if tg['efficiency_met'] else 'NOT met'}); against the "
                     f"peak: min {tg['efficiency_vs_peak_min_forward_only']:.2f}")
    if tg["polycam_speedup"] is not None:
        lines.append(f"Poly-CAM speed-up over the reference-style loop: {tg['polycam_speedup']:.2f}x (target "
                     f"{tg['polycam_speedup_target']}x); all variants within PCAM+- passes: "
                     f"{tg['polycam_passes_within_pcampm']}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet_lite0", help="default: efficientnet_lite0 (offline)")
    p.add_argument("--weights", default="imagenet", help="imagenet, random or a state-dict file")
    p.add_argument("--data", default=None, help="image folder or 'demo' (default: $BENCHMARK_DATA, else demo)")
    p.add_argument("--image-list", default=None)
    p.add_argument("--limit", type=int, default=1, help="images measured together in each call (default 1)")
    p.add_argument("--methods", default="pcampm,rise,scorecam,occlusion",
                   help="comma-separated method ids (default: pcampm,rise,scorecam,occlusion)")
    p.add_argument("--metrics", default="insertion,deletion", help="comma-separated metric ids, scored on the maps "
                   "of the first method (default: insertion,deletion)")
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", default="quick", choices=["paper", "quick"],
                   help="method and metric parameters (default: quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"], help="precision of the timed "
                   "work (default fp32); with tf32 or bf16 the JSON also says how far each method's maps and the "
                   "metrics' values move from fp32 on the same images (precision_drift)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's default (32 CPU, 128 GPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per item; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before the repetitions (default 1)")
    p.add_argument("--sweep", default=None, help="batch sizes of the limit measurement (default: 2..128 CPU, "
                   "32..512 GPU, and --batch-size)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="override a method parameter (JSON value), e.g. pcampm.layers='[\"stem\",\"head\"]'")
    p.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    p.add_argument("--no-polycam-reference", action="store_true", help="skip the Poly-CAM reference-style loop")
    p.add_argument("--out", default=None, help="write the JSON result to this file")
    p.add_argument("--plugin", action="append", default=[])


def main(args) -> int:
    from .cli import _csv_list
    from .pipeline import RunConfig

    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    sweep = [int(s) for s in _csv_list(args.sweep)] if args.sweep else None
    if sweep and min(sweep) < 1:
        raise ValueError("--sweep batch sizes must be >= 1")
    cfg = RunConfig(model=args.model, weights=args.weights, data=args.data, image_list=args.image_list,
                    limit=args.limit, device=args.device, profile=args.profile, seed=args.seed,
                    batch_size=args.batch_size, plugins=args.plugin, progress=False)
    res = run_perf(cfg, _csv_list(args.methods) or [], _csv_list(args.metrics) or [], args.repeats, args.warmup,
                   sweep, parse_overrides(args.set), peers=not args.no_peers,
                   polycam=not args.no_polycam_reference, echo=lambda s: print(s, file=sys.stderr, flush=True),
                   precision=args.precision)
    print(format_table(res))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2, default=str))
        print(f"JSON written to {path}")
    return 0
