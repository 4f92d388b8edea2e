"""One figure with every baseline's map side by side on the five demo photos (rows: photos; columns: the photo,
then one map per method, overlaid on the photo).

    python scripts/figure_methods.py methods.png                         # compute (efficientnet_lite0, quick)
    python scripts/figure_methods.py methods.png --maps RUN/maps.h5      # reuse the maps of a benchmark run

For display only, a non-negative map is min-max normalised per image (jet colours); a signed map (Integrated
Gradients, Input x Gradient, Occlusion) is shown blue-white-red centred on 0 and scaled to the 99.5th
percentile of its absolute value. With ``--maps`` the maps and target classes are read
from a run's ``maps.h5`` (``python -m benchmark run --model efficientnet_lite0 --profile quick``); methods
missing there are computed. ``--save-maps FILE.npz`` keeps the computed maps for re-plotting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BASELINES = ["cam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "iscam", "layercam", "zoomcam",
             "integratedgradient", "inputxgrad", "smoothgrad", "occlusion", "rise"]


def read_run_maps(path: str, names: list[str], methods: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    import h5py

    out, targets = {}, None
    with h5py.File(path, "r", locking=False) as f:
        stored = [n.decode() if isinstance(n, bytes) else n for n in f["names"][()]]
        rows = [stored.index(n) for n in names]
        if "clean" in f:
            targets = f["clean/target"][()][rows]
        for mid in methods:
            g = f"maps/{mid}"
            if g in f and (f[g]["status"][()][rows] == 1).all():
                out[mid] = f[g]["map"][()][rows]
    return out, targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="PNG file to write")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--profile", choices=["quick", "paper"], default="quick")
    ap.add_argument("--methods", nargs="*", default=BASELINES)
    ap.add_argument("--maps", help="maps.h5 of a benchmark run on the demo photos (same model and profile)")
    ap.add_argument("--save-maps", help="write the maps to this .npz")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.data import DemoSource, preprocess
    from benchmark.models import load_model
    from methods import NotApplicable, make_method

    model = load_model(args.model)
    src = DemoSource()
    x01 = torch.stack([preprocess(src.open(n)) for n in src.names])
    x = model.normalize(x01)
    with torch.no_grad():
        probs = torch.softmax(model.net(x), 1)
    targets = probs.argmax(1)
    maps: dict[str, np.ndarray] = {}
    if args.maps:
        maps, stored_targets = read_run_maps(args.maps, src.names, args.methods)
        if stored_targets is not None and not np.array_equal(stored_targets, targets.numpy()):
            raise SystemExit(f"{args.maps} explains other classes than {args.model} predicts here")
    for mid in args.methods:
        if mid in maps:
            continue
        method = make_method(mid, quick=args.profile == "quick", seed=args.seed, batch_size=args.batch_size)
        try:
            method.check_applicable(model)
        except NotApplicable:
            continue
        print(f"computing {mid} ...", flush=True)
        maps[mid] = method(model, x, targets).numpy()
    if args.save_maps:
        np.savez_compressed(args.save_maps, targets=targets.numpy(), **maps)

    cols = [m for m in args.methods if m in maps]
    n_rows, n_cols = len(src.names), 1 + len(cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.45 * n_cols, 1.55 * n_rows), squeeze=False)
    for r, name in enumerate(src.names):
        img = x01[r].permute(1, 2, 0).numpy()
        axes[r, 0].imshow(img)
        axes[r, 0].set_ylabel(f"{Path(name).stem}\nclass {int(targets[r])} ({float(probs[r, targets[r]]):.2f})",
                              fontsize=6)
        for c, mid in enumerate(cols, start=1):
            m = maps[mid][r].astype(np.float64)
            axes[r, c].imshow(img.mean(axis=2), cmap="gray", vmin=0, vmax=1)
            if m.min() < 0:  # signed attribution (IG, Input x Gradient, Occlusion): diverging, centred on 0
                a = np.percentile(np.abs(m), 99.5) + 1e-12
                axes[r, c].imshow(m, cmap="bwr", alpha=0.7, vmin=-a, vmax=a)
            else:
                m = (m - m.min()) / (m.max() - m.min() + 1e-12)
                axes[r, c].imshow(m, cmap="jet", alpha=0.55, vmin=0, vmax=1)
        for c in range(n_cols):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title("image" if c == 0 else cols[c - 1], fontsize=7)
    fig.suptitle(f"{args.model}, {args.profile} parameters, every baseline on the demo photos. Non-negative maps: "
                 "min-max normalised, jet; signed maps: blue < 0 < red, scaled to the 99.5th percentile of |map|",
                 fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.95))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(cols)} methods x {n_rows} photos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
