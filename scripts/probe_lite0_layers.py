"""Which layers should Poly-CAM use on EfficientNet-Lite0? Insertion / deletion AUCs of PCAM+- with several
layer lists on one demo photo, next to Grad-CAM, per-pixel noise and smooth random maps (random values on a
7x7 / 14x14 / 28x28 grid, upsampled).

    python scripts/probe_lite0_layers.py [--image chelsea.png] [--steps 16] [--full]

``--full`` adds the full automatic preset (with the 1280-channel head: 4737 passes, minutes on a CPU).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.data import DemoSource, preprocess  # noqa: E402
from benchmark.models import load_model  # noqa: E402
from methods.base import make_method  # noqa: E402
from metrics.insertion_deletion import blur_baseline, perturbation_curves  # noqa: E402

LAYER_LISTS = {
    "linear block outputs": ["stem", "blocks.2", "blocks.4", "blocks.10"],
    "expand ReLU6 before each stride": ["stem", "blocks.3.expand", "blocks.5.expand", "blocks.11.expand"],
    "depthwise ReLU6 of each stage's last block": ["stem", "blocks.2.depthwise", "blocks.4.depthwise",
                                                   "blocks.10.depthwise"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="chelsea.png")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    m = load_model("efficientnet_lite0")
    x = m.normalize(preprocess(DemoSource().open(args.image))[None])
    with torch.no_grad():
        t = m.net(x).argmax(1)
    g = torch.Generator().manual_seed(0)
    maps = {"per-pixel noise": torch.rand(1, 224, 224, generator=g)}
    for r in (7, 14, 28):
        for k in range(2):
            maps[f"smooth random {r}x{r} #{k}"] = F.interpolate(torch.rand(1, 1, r, r, generator=g), size=224,
                                                               mode="bilinear")[:, 0]
    maps["gradcam"] = make_method("gradcam")(m, x, t)
    lists = dict(LAYER_LISTS)
    if args.full:
        lists["full automatic preset"] = m.polycam_layers
    for name, layers in lists.items():
        t0 = time.perf_counter()
        method = make_method("pcampm", batch_size=64, ablations=False, layers=layers)
        maps[f"pcampm: {name}"] = method(m, x, t)
        print(f"pcampm {layers}: {time.perf_counter() - t0:.0f} s", flush=True)
    base = blur_baseline(x)
    print(f"\n{args.image}, class {t.item()}, {args.steps} steps, blurred baseline")
    print(f"{'map':<52} {'insertion':>9} {'deletion':>9}")
    for name, mp in maps.items():
        ins, dele = (perturbation_curves(m.net, x, base, mp, t, args.steps, mode, 64).mean().item()
                     for mode in ("insertion", "deletion"))
        print(f"{name:<52} {ins:9.3f} {dele:9.3f}", flush=True)


if __name__ == "__main__":
    main()
