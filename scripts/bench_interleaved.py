"""Passes/s of plain forward passes and of forward-only work items, timed in alternation on one machine.

    python scripts/bench_interleaved.py                    # efficientnet_lite0, inputs per pass 4 and 8, 8 rounds
    python scripts/bench_interleaved.py --sizes 4 --rounds 6 --polycam-layer blocks.4.depthwise

Each round times every job once, the jobs in a rotated order (a b c d, b c d a, ...), so that a change of load on a
shared machine hits all of them alike; the table gives each job's median and best passes/s over the rounds and its
ratio to the plain forward passes at the same size (``plain``: seeded random inputs, 40 per block). The work items
are insertion (16 steps on 4 demo photos), occlusion (quick parameters, one photo) and Poly-CAM (PCAM+- on one
layer, one photo), each at the job's inputs per pass. It answers "does the method's own code slow the model
down?" without the bias of comparing against a limit measured at another moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def main() -> None:
    from benchmark.core.passes import predict
    from benchmark.core.timing import one_pass, probe_input
    from benchmark.data import DemoSource, preprocess
    from benchmark.models import load_model
    from benchmark.perf.timing import PassCounter
    from methods.base import make_method
    from metrics.insertion_deletion import blur_baseline, perturbation_curves

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--sizes", default="4,8", help="inputs per pass (comma-separated)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--polycam-layer", default="blocks.4.depthwise", help="one Poly-CAM layer ('' to skip)")
    args = p.parse_args()

    model = load_model(args.model)
    src = DemoSource()
    x = model.normalize(torch.stack([preprocess(src.open(n)) for n in src.names[:4]]))
    targets, _ = predict(model.net, x, 8)
    base, maps = blur_baseline(x), torch.rand(x.shape[0], *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    counter = PassCounter(model.net)

    def counted(fn):
        def run():
            with counter:
                counter.reset()
                fn()
                return counter.inputs
        return run

    jobs = {}
    for bs in (int(s) for s in args.sizes.split(",")):
        probe = probe_input(bs, 224, model.device)

        def plain(probe=probe, bs=bs):
            for _ in range(max(1, 40 // bs)):
                one_pass(model.net, probe, False)
            return max(1, 40 // bs) * bs

        occ = make_method("occlusion", quick=True, batch_size=bs)
        jobs[f"plain@{bs}"] = plain
        jobs[f"insertion@{bs}"] = counted(lambda bs=bs: perturbation_curves(model.net, x, base, maps, targets, 16,
                                                                            "insertion", bs))
        jobs[f"occlusion@{bs}"] = counted(lambda occ=occ: occ.compute_all(model, x[:1], targets[:1]))
        if args.polycam_layer:
            pc = make_method("pcampm", quick=True, batch_size=bs, layers=[args.polycam_layer])
            jobs[f"pcampm@{bs}"] = counted(lambda pc=pc: pc.compute_all(model, x[:1], targets[:1]))

    names = list(jobs)
    for n in names:  # warm-up
        jobs[n]()
    rates = {n: [] for n in names}
    for r in range(args.rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            passes = jobs[n]()
            rates[n].append(passes / (time.perf_counter() - t0))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{args.model}, {torch.get_num_threads()} threads, {args.rounds} rounds, load average {load}\n")
    print("| job | median passes/s | best | median / plain at the same size |")
    print("|---|---:|---:|---:|")
    for n in names:
        med = statistics.median(rates[n])
        ref = statistics.median(rates["plain@" + n.split("@")[1]])
        print(f"| {n} | {med:.1f} | {max(rates[n]):.1f} | {med / ref:.2f} |")


if __name__ == "__main__":
    main()
