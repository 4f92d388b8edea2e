"""CALM's cue localization on CUB-200-2011 class pairs, for any method (docs/calm.md): the loop over pairs and
images. The ground truth is :mod:`benchmark.data.cub`, the score (PxAP histograms, the clipping norm)
:mod:`metrics.cue_localization`.

:func:`run_cue_localization` writes ``<out>/cue_localization_<model tag>.csv`` (method, group, pxap, pairs, images)
and ``.json`` (every pair, the fix of the reference's histogram defect, the seed of the pair sample, the versions).
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
from benchmark.data.preprocess import preprocess
from benchmark.models import load_model
from methods.base import make_method
from metrics.base import MetricError
from metrics.cue_localization import FIX, GROUPS, PxAPHistogram, clip_norm

from .context import model_tag, resolve_device
from .provenance import environment


def cue_localization(model, method, cub_root, groups=GROUPS, max_pairs: int | None = None, seed: int = 0,
                     batch_size: int = 32, reset_per_pair: bool = True, progress: bool = False) -> dict:
    """Mean PxAP per group of 1/2/3 differing parts for ``method`` (a :class:`methods.base.Method`) on
    ``model`` (a ModelBundle: any classifier, or a CALM model for calm_em/calm_ml).

    Returns {"pxap": {group: mean PxAP}, "pairs": {group: [(c1, c2, PxAP, images)]}, "fix": ..., "seed": ...,
    "failed": [(c1, c2, reason)]}.
    ``max_pairs``: at most that many pairs per group, drawn with ``numpy.random.default_rng(seed)``."""
    cub = CUB(cub_root)
    by_group = cub.pairs_by_group()
    rng = np.random.default_rng(seed)
    method.check_applicable(model)
    result = {"pxap": {}, "pairs": {}, "fix": FIX if reset_per_pair else "none (reference behaviour)",
              "seed": seed, "max_pairs": max_pairs, "method": method.id, "failed": []}
    shared = PxAPHistogram()
    for g in groups:
        pairs = by_group.get(g, [])
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
        scores = []
        result["pairs"][g] = []
        for c1, c2 in tqdm(pairs, desc=f"cue localization, {g} part(s)", disable=not progress):
            hist = PxAPHistogram() if reset_per_pair else shared
            diff = cub.differing_parts(c1, c2)
            items = [(im, cub.cue_mask(im, diff)) for im in cub.test_images((c1, c2))]
            items = [(im, m) for im, m in items if m is not None]
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                x = model.normalize(torch.stack([preprocess(cub.open(im), 224, antialias=True) for im, _ in chunk])
                                    .to(model.device))
                t1 = torch.full((len(chunk),), c1, device=model.device)
                s1 = method(model, x, t1).cpu().numpy()
                s2 = method(model, x, torch.full_like(t1, c2)).cpu().numpy()
                for k, (_im, m) in enumerate(chunk):
                    hist.accumulate(clip_norm(np.abs(s1[k] - s2[k]).astype(np.float64)), m)
            if items:
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
                         reset_per_pair: bool = True, out: str = "results/cue_localization", progress: bool = True,
                         echo=print) -> Path:
    """Cue localization of every method of ``method_ids`` on ``model_name``; returns the CSV path."""
    if max_pairs is not None and max_pairs < 1:
        raise ValueError("--max-pairs must be >= 1")
    if not groups or any(g not in GROUPS for g in groups):
        raise ValueError("--groups must name 1, 2 and/or 3")
    dev = resolve_device(device)
    model = load_model(model_name, weights, dev, seed=seed)
    tag = model_tag(model_name, weights)
    out_dir = Path(out)
    rows, full = [], {"model": tag, "weights": weights, "cub": str(cub_root), "seed": seed, "max_pairs": max_pairs,
                      "environment": environment(dev), "methods": {}}
    for mid in method_ids:
        method = make_method(mid, seed=seed, batch_size=batch_size)
        res = cue_localization(model, method, cub_root, groups=groups, max_pairs=max_pairs, seed=seed,
                               batch_size=batch_size, reset_per_pair=reset_per_pair, progress=progress)
        full["methods"][mid] = {**res, "params": method.params}
        for g in groups:
            pairs = res["pairs"][g]
            rows.append({"method": mid, "group": g, "pxap": res["pxap"][g], "pairs": len(pairs),
                         "images": sum(p[3] for p in pairs)})
            echo(f"{mid:<20} {g} part(s): PxAP {res['pxap'][g]:.2f} over {len(pairs)} pair(s)")
        full["fix"] = res["fix"]
    csv = out_dir / f"cue_localization_{tag}.csv"
    write_text(csv, pd.DataFrame(rows).to_csv(index=False))
    write_text(csv.with_suffix(".json"), json.dumps(full, indent=1, default=str))
    echo(f"written: {csv} and {csv.with_suffix('.json')} (histograms: {full.get('fix')})")
    return csv
