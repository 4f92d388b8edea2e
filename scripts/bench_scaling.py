"""Scaling of the Ray executor: the same CPU-bound maps stage with 1 and with 2 Ray workers.

Each Ray task runs torch with ``--threads`` threads (default 1), so k workers use k cores; the split is the same
for every worker count (``--shards``, default 4), so the work is identical and only the parallelism changes. Each
measurement starts a fresh local Ray (``ray.init(num_cpus=workers)``) and a fresh results folder; it reports the
Ray start-up time and the time of the tasks plus the merge (what scales) separately, with the load average.

    python scripts/bench_scaling.py --workers 1,2 --methods occlusion,scorecam,integratedgradient,smoothgrad \
        --limit 5 --shards 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def measure(workers: int, args) -> dict:
    import ray

    from runners.context import RunConfig, RunContext
    from runners.sharded import run_sharded

    out = tempfile.mkdtemp(prefix=f"scaling{workers}_")
    cfg = RunConfig(model=args.model, profile="quick", limit=args.limit, methods=args.methods.split(","),
                    out=out, progress=False, executor="ray", workers=workers, shards=args.shards,
                    threads=args.threads, device="cpu")
    ctx = RunContext(cfg)
    t0 = time.perf_counter()
    ray.init(num_cpus=workers * args.threads, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}})
    t1 = time.perf_counter()
    res = run_sharded(ctx, ("maps",), log=lambda *_: None)
    t2 = time.perf_counter()
    ray.shutdown()
    assert not res["errors"], res["errors"]
    return {"workers": workers, "threads_per_worker": args.threads, "shards": args.shards,
            "ray_start_s": round(t1 - t0, 1), "tasks_and_merge_s": round(t2 - t1, 1),
            "maps": {k: v for k, v in res["reports"]["maps"].computed.items()},
            "load_after": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--methods", default="integratedgradient,smoothgrad")
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per Ray task")
    args = p.parse_args()
    print(json.dumps({"cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "config": vars(args)}))
    rows = []
    for w in [int(x) for x in args.workers.split(",")]:
        rows.append(measure(w, args))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["tasks_and_merge_s"]
    for r in rows:
        speedup = base / r["tasks_and_merge_s"]
        print(f"{r['workers']} worker(s): {r['tasks_and_merge_s']:.1f} s (speed-up {speedup:.2f}x;"
              f" Ray start {r['ray_start_s']:.1f} s; load after {r['load_after'][0]:.2f})")


if __name__ == "__main__":
    main()
