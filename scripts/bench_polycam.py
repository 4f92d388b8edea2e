"""Throughput of Poly-CAM against its cost floor: maps per second, forward passes per second, and the model's plain
forward throughput at the same batch size (the limit).

A Poly-CAM map needs ``channels x (1 or 2) + 1`` forward passes (PCAM+- on VGG16: 2 x 1472 + 1 = 2945: the cost
floor of the reference, which runs them all), so without skipping the best possible rate is ``limit / floor``.
Channels whose activation is constant are skipped (their scores are known), so the passes actually run are counted
(a forward pre-hook on the network counts its inputs) and ``efficiency = passes run per second / limit``. The
limit is the plain forward rate on random inputs of the same shape at the same batch size, measured just before
and just after the Poly-CAM run (their mean is used: on a shared CPU both move with the load of other processes).

    python scripts/bench_polycam.py --model efficientnet_lite0 --batch-size 64
    python scripts/bench_polycam.py --model vgg16 --weights random --batch-size 32   # cost does not depend on weights
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def forward_rate(net, batch_size: int, size: int, device, seconds: float) -> float:
    """Inputs per second of plain forward passes at ``batch_size`` (no_grad, channels_last), after one warm-up."""
    import torch

    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    net(x)
    n, t0 = 0, time.perf_counter()
    while True:
        net(x)
        n += batch_size
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default=None, help="default: imagenet for efficientnet_lite0 (offline), random "
                   "for the others (throughput does not depend on the weights)")
    p.add_argument("--method", default="pcampm", choices=["pcampm", "pcamp", "pcamm"])
    p.add_argument("--batch-size", type=int, default=32, help="model inputs per forward pass (default 32)")
    p.add_argument("--images", type=int, default=1, help="images explained in one call (default 1)")
    p.add_argument("--ablations", action="store_true", help="also derive the ablation maps (same passes)")
    p.add_argument("--limit-seconds", type=float, default=15.0, help="duration of each plain-forward measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)

    import torch

    from benchmark.data import DEMO_IMAGES, DemoSource, preprocess
    from benchmark.models import load_model
    from methods import make_method

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    weights = args.weights or ("imagenet" if args.model == "efficientnet_lite0" else "random")
    model = load_model(args.model, weights, args.device)
    names = [f"{DEMO_IMAGES[i % len(DEMO_IMAGES)]}.png" for i in range(args.images)]
    src = DemoSource(sorted(set(names)))
    x = model.normalize(torch.stack([preprocess(src.open(n)) for n in names]).to(model.device))
    targets = model.net(x.contiguous(memory_format=torch.channels_last)).argmax(1)
    method = make_method(args.method, ablations=args.ablations)
    method.batch_size = args.batch_size
    passes = method.cost(model).forward

    limit_before = forward_rate(model.net, args.batch_size, x.shape[-1], model.device, args.limit_seconds)
    counted = {"inputs": 0, "calls": 0}

    def count(_m, inp):
        counted["inputs"] += inp[0].shape[0]
        counted["calls"] += 1

    handle = model.net.register_forward_pre_hook(count)
    try:
        t0 = time.perf_counter()
        maps = method.compute_all(model, x, targets)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds = time.perf_counter() - t0
    finally:
        handle.remove()
    limit_after = forward_rate(model.net, args.batch_size, x.shape[-1], model.device, args.limit_seconds)
    limit = (limit_before + limit_after) / 2
    run_passes = counted["inputs"]
    achieved = run_passes / seconds
    res = {
        "model": model.tag, "method": args.method, "layers": model.polycam_layers, "batch_size": args.batch_size,
        "images": args.images, "threads": torch.get_num_threads(), "device": str(model.device),
        "floor_passes_per_map": passes, "passes_run": run_passes, "forward_calls": counted["calls"],
        "seconds": round(seconds, 2), "maps_per_s": args.images / seconds, "passes_run_per_s": achieved,
        "limit_passes_per_s": limit, "limit_before": limit_before, "limit_after": limit_after,
        "floor_maps_per_s": limit / passes, "efficiency": achieved / limit, "outputs": len(maps),
    }
    print(f"{model.tag} {args.method}: {passes:.0f} forward passes per map (the cost floor), batch {args.batch_size}, "
          f"{args.images} image(s), {torch.get_num_threads()} thread(s)")
    print(f"  Poly-CAM : {seconds:.1f} s -> {res['maps_per_s']:.4f} maps/s; {run_passes} passes run "
          f"({run_passes / args.images:.0f} per map after skipping constant channels) in {counted['calls']} forward "
          f"calls: {achieved:.1f} passes/s")
    print(f"  limit    : plain forward {limit:.1f} inputs/s (before {limit_before:.1f}, after {limit_after:.1f}) "
          f"-> {res['floor_maps_per_s']:.4f} maps/s at the cost floor")
    print(f"  efficiency {100 * res['efficiency']:.0f} % of the plain-forward limit (passes run per second / limit)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
