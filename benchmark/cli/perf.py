"""``perf``: speed of methods and metrics against the model's own limit and against the peers (docs/performance.md)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from .options import csv_list, run_config


def perf_arguments(p) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per item; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before the repetitions (default 1)")
    p.add_argument("--sweep", default=None, help="batch sizes of the limit measurement (default: 2..128 CPU, "
                   "32..512 GPU, and --batch-size)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    p.add_argument("--no-polycam-reference", action="store_true", help="skip the Poly-CAM reference-style loop")


def cmd_perf(args) -> int:
    from benchmark.core.atomic import write_text
    from benchmark.perf.report import format_table
    from benchmark.perf.run import run_perf
    from runners.overrides import parse_overrides

    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    try:
        sweep = [int(s) for s in csv_list(args.sweep)] if args.sweep else None
    except ValueError:
        raise ValueError(f"--sweep takes comma-separated batch sizes, not {args.sweep!r}") from None
    if sweep and min(sweep) < 1:
        raise ValueError("--sweep batch sizes must be >= 1")
    # the timed work runs at --precision inside run_perf; the run context itself stays at fp32, and --out is the
    # JSON file, not a results folder
    cfg = dataclasses.replace(run_config(args), precision="fp32", out=None, progress=False, methods=None,
                              metrics=None, overrides={})
    res = run_perf(cfg, csv_list(args.methods) or [], csv_list(args.metrics) or [], args.repeats, args.warmup,
                   sweep, parse_overrides(args.set), peers=not args.no_peers,
                   polycam=not args.no_polycam_reference, echo=lambda s: print(s, file=sys.stderr, flush=True),
                   precision=args.precision)
    print(format_table(res))
    if args.out:
        path = write_text(Path(args.out), json.dumps(res, indent=2, default=str))
        print(f"JSON written to {path}")
    return 0
