"""The peers of ``perf``: the same work done the way torchcam, pytorch-grad-cam and captum do it at their defaults,
and the reference-style Poly-CAM loop, each timed interleaved with ours (speed-up = peer seconds / ours)."""

from __future__ import annotations

import contextlib
import io

import torch

from benchmark.models.tv_compat import import_torchvision
from methods.base import make_method
from methods.cam_family import seeded_rng
from methods.polycam import channel_counts, resolve_layers
from metrics.insertion_deletion import blur_baseline

from .reference_polycam import REFERENCE_CHUNK, reference_polycam
from .timing import efficiency, timed_pair


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
    import torchcam.methods as tcm

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


def peer_torchcam_insdel(model, x, t, ins):
    """torchcam DeletionInsertionMetric (default batch_size 32) with the steps and blurred baseline of our
    insertion metric ``ins``."""
    from functools import partial

    import torchcam.methods as tcm
    from torchcam.metrics import DeletionInsertionMetric

    def baseline(inp):
        return blur_baseline(inp, int(ins.params["blur_kernel"]), float(ins.params["blur_sigma"]))

    use_cam = model.fc is not None

    def run():
        extractor = (tcm.CAM(model.net, target_layer=model.last_conv, fc_layer=model.fc) if use_cam else
                     tcm.GradCAM(model.net, target_layer=model.last_conv))
        with extractor:
            metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=ins.steps,
                                             baseline=baseline)
            inp = x if use_cam else x.detach().requires_grad_(True)
            with torch.enable_grad() if not use_cam else torch.no_grad():
                metric.update(inp, class_idx=[int(c) for c in t.tolist()])
            return metric.summary()

    return run, {"batch_size": 32, "steps": ins.steps, "extractor": "CAM" if use_cam else "GradCAM"}


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


def peer_row(ours, peer, library, defaults, r, n_img, limit, ours_s) -> dict:
    fwd, bwd = r["forward"], r["backward"]
    lib = library.split(".")[0].replace("pytorch_grad_cam", "grad-cam")
    return {"ours": ours, "peer": peer, "library": library, "version": _version(lib), "defaults": defaults,
            "seconds": r["seconds"], "seconds_all": r["seconds_all"],
            "measured": {"forward": fwd / n_img, "backward": bwd / n_img},
            "passes_per_s": (fwd + bwd) / r["seconds"], "efficiency": efficiency(fwd, bwd, r["seconds"], limit),
            "ours_seconds": ours_s, "speedup": r["seconds"] / ours_s}


def run_peers(model, x, t, profile, objs, metric_objs, counter, device, warmup, repeats, limit, bs, quick, seed,
               echo) -> list[dict]:
    """Each peer (module docstring) against our same work, timed interleaved."""
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
        rows.append(peer_row(mid, peer, lib, defaults, r, n_img, limit, r_ours["seconds"]))
        echo(f"  peer {peer} vs {mid}: {r['seconds']:.2f} s, speed-up {rows[-1]['speedup']:.2f}x")

    ids = {m[0].id for m in metric_objs}
    if {"insertion", "deletion"} <= ids and _installed("torchcam"):
        ins, dele = (next(m[0] for m in metric_objs if m[0].id == k) for k in ("insertion", "deletion"))
        run, defaults = peer_torchcam_insdel(model, x, t, ins)
        cam_id = "cam" if model.fc is not None else "gradcam"
        cam = make_method(cam_id, quick=quick, seed=seed, batch_size=bs)

        def ours():
            maps = cam.compute_all(model, x, t, profile.image_size)[cam_id]
            return ins.compute(model, x, maps, t), dele.compute(model, x, maps, t)

        r_ours, r = timed_pair(ours, run, device, counter, warmup, repeats)
        row = peer_row(f"{cam_id}+insertion+deletion", "torchcam.metrics.DeletionInsertionMetric", "torchcam",
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
            rows.append(peer_row("sensitivity", "captum.metrics.sensitivity_max", "captum", defaults, r, n_img,
                                  limit, r_ours["seconds"]))
            echo(f"  peer captum sensitivity_max: {r['seconds']:.2f} s, speed-up {rows[-1]['speedup']:.2f}x")
    return rows


def run_polycam(model, x, t, profile, over, counter, device, warmup, repeats, limit, bs, quick, seed,
                 echo) -> dict:
    """pcampm with ablations and :func:`reference_polycam` on the same images, timed interleaved."""
    over = {**over, "ablations": True}
    method = make_method("pcampm", quick=quick, seed=seed, batch_size=bs, **over)
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
