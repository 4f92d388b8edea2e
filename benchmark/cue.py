"""``python -m benchmark cue-localization``: CALM's cue localization on CUB-200-2011 class pairs, for any method.

    python -m benchmark cue-localization --cub CUB_200_2011 --model calm_em_resnet50 --weights CKPT \\
        --methods calm_em,gradcam --max-pairs 50

For each method: the mean pixel AP per group of class pairs that differ in 1, 2 or 3 parts
(:mod:`metrics.cue_localization`, histograms reset per pair: the reference's accumulation defect fixed). Written to
``<out>/cue_localization_<model tag>.csv`` (method, group, pxap, pairs, images) and ``.json`` (every pair, the fix,
the seed of the pair sample, the versions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder (images, attributes, parts, "
                   "segmentations)")
    p.add_argument("--model", required=True, help="a classifier trained on CUB's 200 classes: a CALM model "
                   "(calm_em_resnet50, ...) or any torchvision model with --weights FILE")
    p.add_argument("--weights", default="imagenet", help="state-dict file (or random, for tests)")
    p.add_argument("--methods", default="gradcam", help="comma-separated method ids (default gradcam)")
    p.add_argument("--groups", default="1,2,3", help="numbers of differing parts to score (default 1,2,3)")
    p.add_argument("--max-pairs", type=int, default=None, help="at most this many class pairs per group, a seeded "
                   "sample (default: all; CUB has 19 900 pairs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sample and of every random draw")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--reference-defect", action="store_true", help="accumulate the histograms over all pairs "
                   "without reset, as the reference code does (for comparison with its numbers only)")
    p.add_argument("--out", default="results/cue_localization", help="output folder")
    p.add_argument("--plugin", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")


def main(args) -> int:
    import pandas as pd

    from methods.base import load_builtin_methods, load_plugin, make_method
    from metrics.cue_localization import cue_localization

    from .cli import _csv_list
    from .models import load_model
    from .pipeline import model_tag, resolve_device
    from .provenance import environment

    for plugin in args.plugin:
        load_plugin(plugin)
    load_builtin_methods()
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError("--max-pairs must be >= 1")
    groups = tuple(int(g) for g in _csv_list(args.groups))
    if not groups or any(g not in (1, 2, 3) for g in groups):
        raise ValueError("--groups must name 1, 2 and/or 3")
    device = resolve_device(args.device)
    model = load_model(args.model, args.weights, device, seed=args.seed)
    tag = model_tag(args.model, args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, full = [], {"model": tag, "weights": args.weights, "cub": str(args.cub), "seed": args.seed,
                      "max_pairs": args.max_pairs, "environment": environment(device), "methods": {}}
    for mid in _csv_list(args.methods):
        method = make_method(mid, seed=args.seed)
        method.batch_size = args.batch_size
        res = cue_localization(model, method, args.cub, groups=groups, max_pairs=args.max_pairs, seed=args.seed,
                               batch_size=args.batch_size, reset_per_pair=not args.reference_defect,
                               progress=not args.no_progress)
        full["methods"][mid] = {**res, "params": method.params}
        for g in groups:
            pairs = res["pairs"][g]
            rows.append({"method": mid, "group": g, "pxap": res["pxap"][g], "pairs": len(pairs),
                         "images": sum(p[3] for p in pairs)})
            print(f"{mid:<20} {g} part(s): PxAP {res['pxap'][g]:.2f} over {len(pairs)} pair(s)")
        full["fix"] = res["fix"]
    csv = out / f"cue_localization_{tag}.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    (out / f"cue_localization_{tag}.json").write_text(json.dumps(full, indent=1, default=str))
    print(f"written: {csv} and {csv.with_suffix('.json')} (histograms: {full.get('fix')})")
    return 0
