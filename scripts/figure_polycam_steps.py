"""Figure: the five fusion steps of Poly-CAM (paper Figure 1 / Tables 2-3 rows) on the scikit-image cat photo.

Runs PCAM+- (and its PCAM+ / PCAM- variants) with the ablations on the pretrained EfficientNet-Lite0 (offline
weights), full layer preset, and draws, for each weighting, the reported map after each fusion step (step 1 = the
deepest layer alone, step 5 = the Poly-CAM map) over the photo, plus the map without LNorm (Eq. 7).

    python scripts/figure_polycam_steps.py [OUT.png] [--batch-size 64] [--save-maps maps.pt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default="/tmp/polycam_steps.png", help="PNG path (default /tmp/polycam_steps.png)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--image", default="chelsea.png", help="a demo photo of scikit-image (default: the cat)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--save-maps", default=None, help="also save every map as a torch file")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from benchmark.data import DemoSource, preprocess
    from benchmark.models import load_model
    from methods import make_method

    torch.set_grad_enabled(False)
    model = load_model(args.model, args.weights)
    img = preprocess(DemoSource([args.image]).open(args.image))
    x = model.normalize(img[None].to(model.device))
    probs = torch.softmax(model.net(x), 1)
    target = probs.argmax(1)
    method = make_method("pcampm", batch_size=args.batch_size, ablations=True)
    t0 = time.perf_counter()
    maps = method.compute_all(model, x, target)
    print(f"{model.name}: class {target.item()} (p = {probs.max().item():.3f}), layers {model.polycam_layers}, "
          f"{method.cost(model).forward:.0f} passes, {time.perf_counter() - t0:.1f} s")
    if args.save_maps:
        torch.save({k: v.cpu() for k, v in maps.items()}, args.save_maps)

    layers = model.polycam_layers
    n = len(layers)
    rows = [("pm", "PCAM+-"), ("p", "PCAM+"), ("m", "PCAM-")]
    fig, axes = plt.subplots(len(rows), n + 2, figsize=(2.2 * (n + 2), 2.4 * len(rows)))
    shown = img.permute(1, 2, 0).numpy()
    for r, (w, label) in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(shown)
        ax.set_title(f"{label}\n{args.image}", fontsize=8)
        for k in range(1, n + 1):
            key = f"pcam{w}_step{k}" if k < n else f"pcam{w}"
            ax = axes[r, k]
            ax.imshow(shown)
            ax.imshow(maps[key][0].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            res = "+".join(layers[n - k:][::-1]) if k <= 2 else f"... + {layers[n - k]}"
            ax.set_title(f"step {k}: {res}\n{key}", fontsize=7)
        ax = axes[r, n + 1]
        ax.imshow(shown)
        ax.imshow(maps[f"pcam{w}_nolnorm"][0].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"no LNorm (Eq. 7)\npcam{w}_nolnorm", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"Poly-CAM fusion steps, {model.name}, deepest layer first", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
