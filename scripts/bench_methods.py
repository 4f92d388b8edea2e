"""Maps per second of the paper's fourteen baselines on this machine, and the model passes each needs per image.

    python scripts/bench_methods.py                        # efficientnet_lite0, quick parameters, 1 image
    python scripts/bench_methods.py --profile paper --images 2 --max-seconds 120

Prints a markdown table. ``fwd/img`` and ``bwd/img`` come from each method's ``cost(model)`` (forward-only passes
and forward+backward passes per image); ``est. s/map`` prices them with the measured time of one forward and
one forward+backward pass per image at the same batch size. A method whose estimate exceeds ``--max-seconds``
is not run (its row says so): the paper's SS-CAM on a 1280-channel layer is 44 800 forward passes per image.
Timings on a shared CPU vary with the other processes on it: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

BASELINES = ["cam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "iscam", "layercam", "zoomcam",
             "integratedgradient", "inputxgrad", "smoothgrad", "occlusion", "rise"]


def pass_times(model, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Seconds per image of one forward pass and of one forward+backward pass (to the input), at ``batch_size``."""
    xb = x[torch.arange(batch_size) % x.shape[0]].contiguous()
    with torch.no_grad():
        model.net(xb)
        t0 = time.perf_counter()
        model.net(xb)
        fwd = (time.perf_counter() - t0) / batch_size
    xg = xb.clone().requires_grad_(True)
    torch.autograd.grad(model.net(xg)[:, 0].sum(), xg)
    t0 = time.perf_counter()
    xg = xb.clone().requires_grad_(True)
    torch.autograd.grad(model.net(xg)[:, 0].sum(), xg)
    bwd = (time.perf_counter() - t0) / batch_size
    return fwd, bwd


def short(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--profile", choices=["quick", "paper"], default="quick", help="method parameters")
    ap.add_argument("--images", type=int, default=1, help="demo photos explained per call (1-5)")
    ap.add_argument("--batch-size", type=int, default=32, help="model inputs per forward pass")
    ap.add_argument("--methods", nargs="*", default=BASELINES)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="skip a method estimated to take longer")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from benchmark.data import DemoSource, preprocess
    from benchmark.models import load_model
    from methods import NotApplicable, make_method

    model = load_model(args.model, device=args.device)
    src = DemoSource()
    x = torch.stack([preprocess(src.open(n)) for n in src.names[:max(1, min(args.images, 5))]])
    x = model.normalize(x.to(model.device))
    with torch.no_grad():
        targets = model.net(x).argmax(1)
    fwd, bwd = pass_times(model, x, args.batch_size)

    rows = []
    for mid in args.methods:
        method = make_method(mid, quick=args.profile == "quick", seed=0)
        method.batch_size = args.batch_size
        try:
            method.check_applicable(model)
        except NotApplicable as err:
            rows.append((mid, method.family, short(method.params), "-", "-", "-", "-", f"not applicable: {err}"))
            continue
        cost = method.cost(model)
        est = cost.forward * fwd + cost.backward * bwd
        cells = [mid, method.family, short(method.params), f"{cost.forward:g}", f"{cost.backward:g}", f"{est:.2f}"]
        if est * x.shape[0] > args.max_seconds:
            rows.append((*cells, "-", f"not run (estimate > {args.max_seconds:g} s)"))
            continue
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        maps = method(model, x, targets)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        assert maps.shape == (x.shape[0], 224, 224)
        rows.append((*cells, f"{x.shape[0] / secs:.3g}", f"{secs / x.shape[0]:.2f} s/map"))

    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    print(f"model {args.model}, {args.profile} parameters, {x.shape[0]} image(s) per call, batch size "
          f"{args.batch_size}, device {args.device} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load} at the end)")
    print(f"one forward pass: {fwd * 1000:.1f} ms/image; one forward+backward pass: {bwd * 1000:.1f} ms/image\n")
    head = ("method", "family", "parameters", "fwd/img", "bwd/img", "est. s/map", "maps/s", "measured")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
