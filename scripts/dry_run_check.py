"""The dry run's estimate against the real run, per item: is the cost model proportional to where the time goes?

    python scripts/dry_run_check.py --model efficientnet_lite0 --methods gradcam,occlusion,rise,scorecam --limit 2
    python scripts/dry_run_check.py --device cuda --model vgg16 --weights random --limit 16 --out check.json

One process: the plan and the calibration of the dry run (steady-state rates, stored per machine), then the maps and
metrics stages in a fresh results folder, each item timed by the stage itself (``StageReport.seconds``). Prints one
row per item (passes planned, estimated seconds, measured seconds, their ratio) and the totals; ``--out`` writes the
same as JSON. A ratio near 1 means the item runs at the model's steady rate; far above 1, the item's own code (or a
cold start) costs time the cost model does not see. Timings, so: read them as measurements of this machine now.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from runners.context import RunConfig, RunContext
    from runners.costs import calibrate, eta_seconds, plan
    from runners.maps import run_maps
    from runners.scoring import run_metrics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--data", default="demo")
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--methods", default="gradcam,occlusion,rise,scorecam")
    p.add_argument("--metrics", default="insertion,deletion")
    p.add_argument("--profile", default="quick")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON file")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="dry_run_check_")
    ctx = RunContext(RunConfig(model=args.model, weights=args.weights, data=args.data, limit=args.limit,
                               methods=args.methods.split(","), metrics=args.metrics.split(","), out=folder,
                               profile=args.profile, device=args.device, batch_size=args.batch_size,
                               progress=False))
    size = ctx.resolve_pass_batch_size()
    rows, _ = plan(ctx, ("maps", "metrics"))
    cal = calibrate(ctx, size, need_backward=any(r.per_image.backward for r in rows))
    maps = run_maps(ctx)
    metrics = run_metrics(ctx, map_ids=maps.produced)
    measured = {**{("maps", k): v for k, v in maps.seconds.items()},
                **{("metrics", k): v for k, v in metrics.seconds.items()}}
    out = []
    for r in rows:
        if r.stage == "clean" or (r.stage, r.key) not in measured:
            continue
        est, got = eta_seconds(r, cal), measured[(r.stage, r.key)]
        out.append({"stage": r.stage, "item": r.key, "passes": r.forward + r.backward, "estimate_s": round(est, 3),
                    "measured_s": round(got, 3), "measured_over_estimate": round(got / est, 3) if est else None})
    total_e, total_m = sum(o["estimate_s"] for o in out), sum(o["measured_s"] for o in out)
    res = {"model": ctx.tag, "device": str(ctx.device), "images": len(ctx.indices), "inputs_per_pass": size,
           "calibration": cal.as_dict(), "items": out, "total_estimate_s": round(total_e, 2),
           "total_measured_s": round(total_m, 2), "total_measured_over_estimate": round(total_m / total_e, 3)}
    print(f"{res['model']} on {res['device']}, {res['images']} image(s), {size} inputs per pass; rates: "
          f"{cal.forward:.1f} fwd/s, {cal.backward or 0:.1f} fwd+bwd/s ({cal.source})")
    print("| stage | item | passes | estimate s | measured s | measured / estimate |")
    print("|---|---|---:|---:|---:|---:|")
    for o in out:
        print(f"| {o['stage']} | {o['item']} | {o['passes']:g} | {o['estimate_s']:.2f} | {o['measured_s']:.2f} | "
              f"{o['measured_over_estimate']} |")
    print(f"| total | | | {total_e:.1f} | {total_m:.1f} | {res['total_measured_over_estimate']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
