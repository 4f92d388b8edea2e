"""CALM's cue localization on CUB-200-2011 class pairs, for any method (docs/calm.md): the loop over pairs and
images. The ground truth is :mod:`benchmark.data.cub`, the score (PxAP histograms, the norms)
:mod:`metrics.cue_localization`, the protocol's choices :mod:`runners.calm_protocol` (``CUE_CHOICES``).

:func:`run_cue_localization` writes ``<out>/cue_localization_<model tag>_<protocol>.csv`` (method, group, pxap,
pairs, images, and every choice of the protocol) and ``.json`` (every pair, the protocol with each choice, the
seed of the pair sample, the versions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmark.core.atomic import write_text
from benchmark.data.cub import CUB
from benchmark.models import load_model
from methods.base import make_method
from metrics.base import MetricError
from metrics.cue_localization import ACCUMULATED, FIX, GROUPS, PxAPHistogram, clip_norm, normalize_scoremap

from .calm_protocol import CUE_CHOICES, describe, image_tensor, raw_variant, resolve
from .context import model_tag, resolve_device
from .provenance import environment


def pair_scores(model, method, x: torch.Tensor, c1: int, c2: int, protocol: dict) -> list[np.ndarray]:
    """The score maps ``s`` [224, 224] float64 of a batch for the pair (c1, c2) under ``protocol["normalise"]``:
    ``difference``: the method's norm on |R1 - R2| of its raw maps (the reference); ``per-map``: clip(|S1 - S2|) of
    its normalised maps."""
    t1 = torch.full((x.shape[0],), c1, device=x.device)
    if protocol["normalise"] == "difference":
        raw = raw_variant(method)
        norm = method.params.get("norm", "clipping")
        r1, r2 = raw(model, x, t1).cpu().numpy(), raw(model, x, torch.full_like(t1, c2)).cpu().numpy()
        return [normalize_scoremap(np.abs(a - b), norm) for a, b in zip(r1, r2)]
    s1, s2 = method(model, x, t1).cpu().numpy(), method(model, x, torch.full_like(t1, c2)).cpu().numpy()
    return [clip_norm(np.abs(a - b).astype(np.float64)) for a, b in zip(s1, s2)]


def cue_localization(model, method, cub_root, groups=GROUPS, max_pairs: int | None = None, seed: int = 0,
                     batch_size: int = 32, protocol: dict | None = None, progress: bool = False) -> dict:
    """Mean PxAP per group of 1/2/3 differing parts for ``method`` (a :class:`methods.base.Method`) on
    ``model`` (a ModelBundle: any classifier, or a CALM model for its own maps), under ``protocol`` (default: the
    ``calm`` protocol of :func:`runners.calm_protocol.resolve`).

    Returns {"pxap": {group: mean PxAP}, "pairs": {group: [(c1, c2, PxAP, images)]}, "protocol": ...,
    "fix": ..., "seed": ..., "failed": [(c1, c2, reason)]}. ``max_pairs``: at most that many pairs per group,
    drawn with ``numpy.random.default_rng(seed)``. With accumulated histograms every pair gets the PxAP of all
    pairs so far, even a pair with no image of its own (as the reference)."""
    protocol = protocol or resolve(CUE_CHOICES, "calm")
    cub = CUB(cub_root, test_list=protocol["test_images"])
    by_group = cub.pairs_by_group()
    rng = np.random.default_rng(seed)
    method.check_applicable(model)
    accumulate = protocol["histograms"] == "accumulate"
    result = {"pxap": {}, "pairs": {}, "protocol": protocol, "fix": ACCUMULATED if accumulate else FIX,
              "seed": seed, "max_pairs": max_pairs, "method": method.id, "failed": []}
    shared = PxAPHistogram()
    for g in groups:
        pairs = by_group.get(g, [])
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
        scores = []
        result["pairs"][g] = []
        for c1, c2 in tqdm(pairs, desc=f"cue localization, {g} part(s)", disable=not progress):
            hist = shared if accumulate else PxAPHistogram()
            diff = cub.differing_parts(c1, c2)
            items = [(im, cub.cue_mask(im, diff)) for im in cub.test_images((c1, c2))]
            items = [(im, m) for im, m in items if m is not None]
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                x = model.normalize(torch.stack([image_tensor(cub.open(im), protocol["resize"]) for im, _ in chunk])
                                    .to(model.device))
                for s, (_im, m) in zip(pair_scores(model, method, x, c1, c2, protocol), chunk):
                    hist.accumulate(s, m)
            if items or accumulate:
                try:
                    ap = hist.compute()
                except MetricError as err:  # recorded; the other pairs go on
                    result["failed"].append((c1, c2, str(err)))
                    continue
                scores.append(ap)
                result["pairs"][g].append((c1, c2, ap, len(items)))
        result["pxap"][g] = float(np.mean(scores)) if scores else float("nan")
    return result


def run_cue_localization(model_name: str, weights: str, cub_root: str, method_ids: list[str], groups=GROUPS,
                         max_pairs: int | None = None, seed: int = 0, batch_size: int = 32, device: str = "auto",
                         protocol: dict | None = None, out: str = "results/cue_localization", progress: bool = True,
                         echo=print) -> Path:
    """Cue localization of every method of ``method_ids`` on ``model_name``; returns the CSV path."""
    if max_pairs is not None and max_pairs < 1:
        raise ValueError("--max-pairs must be >= 1")
    if not groups or any(g not in GROUPS for g in groups):
        raise ValueError("--groups must name 1, 2 and/or 3")
    protocol = protocol or resolve(CUE_CHOICES, "calm")
    dev = resolve_device(device)
    model = load_model(model_name, weights, dev, seed=seed)
    tag = model_tag(model_name, weights)
    out_dir = Path(out)
    choices = {c.name: protocol[c.name] for c in CUE_CHOICES}
    rows, full = [], {"model": tag, "weights": weights, "cub": str(cub_root), "seed": seed, "max_pairs": max_pairs,
                      "protocol": {"name": protocol["name"], **describe(CUE_CHOICES, protocol)},
                      "environment": environment(dev), "model_description": model.describe(), "methods": {}}
    for mid in method_ids:
        method = make_method(mid, seed=seed, batch_size=batch_size)
        res = cue_localization(model, method, cub_root, groups=groups, max_pairs=max_pairs, seed=seed,
                               batch_size=batch_size, protocol=protocol, progress=progress)
        full["methods"][mid] = {**res, "params": method.params}
        for g in groups:
            pairs = res["pairs"][g]
            rows.append({"method": mid, "group": g, "pxap": res["pxap"][g], "pairs": len(pairs),
                         "images": sum(p[3] for p in pairs), "protocol": protocol["name"], **choices})
            echo(f"{mid:<20} {g} part(s): PxAP {res['pxap'][g]:.2f} over {len(pairs)} pair(s)")
        full["fix"] = res["fix"]
    csv = out_dir / f"cue_localization_{tag}_{protocol['name']}.csv"
    write_text(csv, pd.DataFrame(rows).to_csv(index=False))
    write_text(csv.with_suffix(".json"), json.dumps(full, indent=1, default=str))
    echo(f"written: {csv} and {csv.with_suffix('.json')} (protocol {protocol['name']}: "
         + ", ".join(f"{k} {v}" for k, v in choices.items()) + ")")
    return csv
