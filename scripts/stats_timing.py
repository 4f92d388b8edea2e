"""Time the tables with their bootstrap intervals, ranks and pairwise tests on a fabricated results folder.

Writes, in a temporary folder, one model folder as a quick run leaves it: ``provenance.json`` and the insertion and
deletion AUC CSVs of ``--maps`` methods over ``--images`` images (method j: a per-image base, a small effect growing
with j, Gaussian noise; seeded), then times ``build_results_tables`` (the ``tables`` command over the results
folder) and ``build_tables`` (the same model folder alone) with ``time.perf_counter``. With ``--store``, the
folder also holds the ``metrics.h5`` the CSV files agree with, so the times include checking every file against it
(``runners/csvcheck.py``). Prints JSON.

    python scripts/stats_timing.py                    # 2000 images x 50 maps, 10 000 resamples
    python scripts/stats_timing.py --store            # the same, every CSV checked against its metrics.h5
    python scripts/stats_timing.py --images 200 --maps 10 --keep /tmp/fabricated
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TAG = "efficientnet_lite0"


def fabricate(root: Path, n_images: int, n_maps: int, seed: int = 0, store: bool = False) -> Path:
    run = root / TAG
    (run / "csv").mkdir(parents=True)
    prov = {"protocol": {"profile": {"name": "quick", "quick": True, "image_size": 224, "antialias": False},
                         "model": TAG, "weights": "imagenet", "seed": 0},
            "metrics": {m: {"steps": 16, "blur_kernel": 11, "blur_sigma": 5.0} for m in ("insertion", "deletion")}}
    (run / "provenance.json").write_text(json.dumps(prov))
    rng = np.random.default_rng(seed)
    names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n_images)]
    base_ins, base_del = rng.uniform(0.3, 0.8, n_images), rng.uniform(0.05, 0.3, n_images)
    for j in range(n_maps):
        effect = 0.05 * j / max(n_maps - 1, 1)
        ins = np.clip(base_ins + effect + rng.normal(0, 0.1, n_images), 0, 1)
        dele = np.clip(base_del - effect / 2 + rng.normal(0, 0.05, n_images), 0, 1)
        for prefix, v in (("ins", ins), ("del", dele)):
            pd.DataFrame({0: v}, index=names).to_csv(run / "csv" / f"{prefix}_auc_{TAG}_m{j:02d}.csv")
        if store:
            _store(run / "metrics.h5", names, f"m{j:02d}", {"insertion": ins, "deletion": dele}, prov)
    return run


def _store(path: Path, names: list[str], method: str, values: dict[str, np.ndarray], prov: dict,
           steps: int = 17) -> None:
    """The values (and constant curves, which the tables do not read) of one method, as the metrics stage stores
    them, with the protocol and parameters of ``prov``."""
    from runners.store import H5Store

    with H5Store(path, names, {"protocol": prov["protocol"]}) as st:
        for metric, v in values.items():
            key = f"{metric}/{method}"
            st.ensure_group(key, {"value": ((), "f8"), "curve": ((steps,), "f4")},
                            {"params": prov["metrics"][metric]})
            st.write(key, list(range(len(names))), value=v, curve=np.zeros((len(names), steps), np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--maps", type=int, default=50)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="fabricate in this (new) folder and keep it")
    ap.add_argument("--store", action="store_true", help="also write the metrics.h5 the CSV files are checked against")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from benchmark.outputs.tables import build_results_tables, build_tables
    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "quick"
        t0 = time.perf_counter()
        run = fabricate(root, args.images, args.maps, store=args.store)
        fabricate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        built = build_results_tables(root, seed=args.seed, resamples=args.resamples)
        results_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_tables(run, TAG, seed=args.seed, resamples=args.resamples)
        model_s = time.perf_counter() - t0
        assert not built["disagree"] and not built["unchecked"], built["disagree"] + built["unchecked"]
        comps = built["analyses"][TAG]["comparisons"]
        best = {m: {"best_significant": bool(c["best_significant"]), "group_size": len(c["group"]),
                    "significant_pairs": int(c["significant"].sum())} for m, c in comps.items()}
    print(json.dumps({
        "images": args.images, "maps": args.maps, "resamples": args.resamples, "seed": args.seed,
        "checked_against_metrics_h5": args.store,
        "pairs_per_metric": args.maps * (args.maps - 1) // 2, "tables_written": len(built["tables"]),
        "build_results_tables_s": round(results_s, 2), "build_tables_s": round(model_s, 2),
        "import_s": round(import_s, 2), "fabricate_s": round(fabricate_s, 2),
        "torch_imported": "torch" in sys.modules, "comparisons": best,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
