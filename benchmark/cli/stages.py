"""The commands that compute: ``run``, ``maps``, ``metrics``, ``sanity`` and ``merge``."""

from __future__ import annotations

import contextlib
import sys
import time

from runners.store import RunLock

from .options import csv_list, positive_int, run_config
from .results import warn_disagree


def _context(args):
    """The run context of the parsed options."""
    from runners.context import RunContext

    return RunContext(run_config(args))


def print_report(report, stage: str) -> None:
    """The lines of a stage report and its not-applicable items."""
    print(f"{stage}:\n" + "\n".join(report.lines()))
    for key, reason in report.not_applicable.items():
        print(f"  not applicable: {key}: {reason}")
    for note in report.all_notices():
        print(f"  {note}")


def print_failures(report, what: str) -> None:
    for key, failed in report.failed.items():
        for name, reason in list(failed.items())[:10]:
            print(f"  FAILED {what} {key} on {name}: {reason}", file=sys.stderr)
        if len(failed) > 10:
            print(f"  ... and {len(failed) - 10} more failures of {key}", file=sys.stderr)


def print_agreement(ctx) -> None:
    """The run's top-1 agreement with the Poly-CAM authors (from provenance.json), loudly when it is low."""
    from benchmark.core.atomic import read_json_object
    from runners.agreement import summary

    try:
        res = read_json_object(ctx.run_dir / "provenance.json").get("top1_agreement")
    except (OSError, ValueError):
        return
    if res:
        print(summary(res))
        if res.get("warning"):
            print(f"WARNING: {res['warning']}", file=sys.stderr)


def _planned_passes(ctx) -> dict[str, float]:
    """The model passes left of the whole run (maps, metrics, sanity) per item key, for its bar; none without
    progress bars."""
    if not ctx.cfg.progress:
        return {}
    from runners.costs import plan

    rows, _ = plan(ctx, ("maps", "metrics", "sanity"), left=True)
    out: dict[str, float] = {}
    for r in rows:
        key = {"clean": "clean", "maps": f"maps/{r.key}", "sanity": "sanity"}.get(r.stage, r.key)
        out[key] = out.get(key, 0.0) + r.forward + r.backward
    return out


def _dry_run(ctx, command: str) -> int:
    """``--dry-run``: print the passes of each stage and an ETA from a short calibration; compute nothing."""
    from runners.costs import dry_run

    stages = {"maps": ("maps",), "metrics": ("metrics",), "run": ("maps", "metrics", "sanity")}[command]
    map_ids = None
    if command == "metrics":
        map_ids = ctx.cfg.methods
        if map_ids is None and (ctx.run_dir / "maps.h5").is_file():
            with ctx.open_maps(mode="r") as store:
                map_ids = store.groups("maps")
        if map_ids is None:
            raise ValueError(f"no maps stored in {ctx.run_dir}: give --methods for the dry run of metrics")
    dry_run(ctx, stages, map_ids)
    return 0


def _sharded(ctx, command: str) -> int:
    """``run`` / ``maps`` / ``metrics`` with ``--executor ray``, ``--shards N`` or ``--shard i/n``."""
    # the folder's lock for the whole command (merge, tables and report included), as in the one-process run; a
    # driver of one shard (--shard i/n) locks only its shard: the other shards' drivers share the folder
    with contextlib.nullcontext() if ctx.cfg.shard else ctx.lock():
        return _sharded_locked(ctx, command)


def _sharded_locked(ctx, command: str) -> int:
    from runners.sharded import run_sharded

    stages = {"run": ("maps", "metrics"), "maps": ("maps",), "metrics": ("metrics",)}[command]
    print(f"data: {ctx.source.description}; {len(ctx.indices)} image(s); profile {ctx.profile.name}; "
          f"device {ctx.device}; executor {ctx.cfg.executor}; results in {ctx.run_dir}")
    res = run_sharded(ctx, stages)
    only, n = res["shard"]
    for stage in stages:
        rep = res["reports"][stage]
        print_report(rep, stage)
        print_failures(rep, stage)
    for key, err in res["errors"].items():
        print(f"  TASK FAILED {key}: {err.splitlines()[0]}", file=sys.stderr)
    if only is not None:
        print(f"shard {only}/{n} done; when every shard is, run `python -m benchmark merge` with the same options "
              f"(status: python -m benchmark status {ctx.run_dir})")
    else:
        m = res["merged"] or {}
        print(f"merged into {ctx.run_dir}: {m.get('maps', 0)} map rows, {m.get('metrics', 0)} metric rows, "
              f"{m.get('csv', 0)} CSV file pair(s)")
        if command == "run" and (ctx.run_dir / "csv").is_dir():
            from benchmark.outputs.tables import build_tables

            print(build_tables(ctx.run_dir, ctx.tag)["markdown"].read_text())
            _report_locked(ctx, "(the sanity check is not sharded: run `python -m benchmark sanity` with the same "
                                "options)")
    ok = not res["errors"] and all(r.ok for r in res["reports"].values())
    return 0 if ok else 1


def _report_locked(ctx, note: str = ""):
    """The report of the results folder, which every model of it shares: built under that folder's lock, or left
    to `python -m benchmark report` when another process holds it (this run's results are all stored)."""
    from runners.store import StoreError

    try:
        with RunLock(ctx.run_dir.parent):
            return _report(ctx, note)
    except StoreError as err:
        print(f"the report was not rebuilt ({err}); run `python -m benchmark report` once it is free",
              file=sys.stderr)
        return None


def _report(ctx, note: str = ""):
    """Build the report of the run's results folder; say why when it cannot be built (the run's exit status
    stays what the computation decided)."""
    from benchmark.outputs.report import build_report

    try:
        path, disagree = build_report(ctx.run_dir.parent)
    except (ValueError, OSError) as err:
        print(f"the report could not be built ({err}); fix it and run `python -m benchmark report`", file=sys.stderr)
        return None
    print(f"report (every table and figure of the models in {ctx.run_dir.parent}): {path}" + (f"  {note}" if note
                                                                                             else ""))
    warn_disagree(disagree)
    return path


def cmd_maps(args) -> int:
    from runners.maps import run_maps

    ctx = _context(args)
    if args.dry_run:
        return _dry_run(ctx, "maps")
    if ctx.cfg.sharded:
        return _sharded(ctx, "maps")
    print(f"data: {ctx.source.description}; {len(ctx.indices)} image(s); profile {ctx.profile.name}; "
          f"results in {ctx.run_dir}")
    report = run_maps(ctx)
    print_report(report, "maps")
    print_failures(report, "maps")
    print_agreement(ctx)
    return 0 if report.ok else 1


def cmd_metrics(args) -> int:
    from runners.scoring import run_metrics

    ctx = _context(args)
    if args.dry_run:
        return _dry_run(ctx, "metrics")
    if ctx.cfg.sharded:
        return _sharded(ctx, "metrics")
    report = run_metrics(ctx)
    print_report(report, "metrics")
    print_failures(report, "metric")
    print(f"CSV files in {ctx.run_dir / 'csv'}")
    return 0 if report.ok else 1


def print_sanity(ctx, rep) -> None:
    """The sanity check's report, with its figure grids (drawn here from the stored units)."""
    from benchmark.outputs.randomisation_grid import sanity_grids

    print("sanity check (cascading randomisation):\n" + "\n".join(rep.lines()))
    for mid, reason in rep.not_applicable.items():
        print(f"  not applicable: {mid}: {reason}")
    for note in rep.notices:
        print(f"  {note}")
    if rep.csv is not None:
        print(f"  {len(rep.layers)} layers randomised; similarities: {rep.csv}; classes: {rep.targets_csv}; "
              f"parameters: {rep.params_json}")
    for fig in sanity_grids(ctx.run_dir, ctx.tag, ctx.source, ctx.profile.image_size, ctx.profile.antialias,
                            rep.images, set(rep.touched)):
        print(f"  figure: {fig}")


def _sanity_in_run(ctx, produced: list[str]):
    """The sanity stage of `run`: the profile's ``sanity_methods`` among the methods the run computed."""
    from runners.sanity import run_sanity

    ids = [m for m in ctx.profile.sanity_methods if m in produced]
    if not ids:
        print(f"sanity check: skipped (none of the profile's sanity methods {', '.join(ctx.profile.sanity_methods)}"
              " was computed); `python -m benchmark sanity --methods ID,...` checks any method")
        return None
    rep = run_sanity(ctx, methods=ids)
    print_sanity(ctx, rep)
    return rep


def _drift_in_run(ctx, n_images: int) -> None:
    """At tf32 / bf16: the drift of the first ``n_images`` images' maps and values from fp32 (runners/drift.py)."""
    import json

    from runners.drift import check_drift

    if ctx.precision == "fp32" or not n_images:
        return
    print(f"precision drift: redoing the maps and metric values of {n_images} image(s) at fp32")
    path = check_drift(ctx, n_images)
    worst = {oid: r["map_max_rel_diff"] for oid, r in json.loads(path.read_text())["methods"].items()} if path else {}
    if worst:
        oid = max(worst, key=worst.get)
        print(f"precision drift ({ctx.precision} vs fp32): largest relative map difference {worst[oid]:.2e} ({oid}); "
              f"per method and metric in {path}")


def cmd_run(args) -> int:
    from benchmark.outputs.tables import build_tables
    from runners.maps import run_maps
    from runners.scoring import run_metrics

    t0 = time.perf_counter()
    ctx = _context(args)
    if args.dry_run:
        return _dry_run(ctx, "run")
    if ctx.cfg.sharded:
        return _sharded(ctx, "run")
    print(f"data: {ctx.source.description} (from {ctx.source.origin}); {len(ctx.indices)} image(s); profile "
          f"{ctx.profile.name}; device {ctx.device}; results in {ctx.run_dir}")
    if ctx.source.origin == "no --data given":
        print("no --data given: using the embedded demo photos (pass --data DIR for ILSVRC2012 val)")
    with ctx.lock(), ctx.progress.run(_planned_passes(ctx), "run (all stages)"):  # one lock for the whole command
        maps = run_maps(ctx)
        print_report(maps, "maps")
        metrics = run_metrics(ctx, map_ids=maps.produced)
        if metrics.corrupt_maps:  # stored maps that failed their checksum: computed again, then scored
            print(f"maps failing their checksum while scoring: {dict(metrics.corrupt_maps)}; computing them again")
            maps = run_maps(ctx)
            print_report(maps, "maps (again)")
            metrics = run_metrics(ctx, map_ids=maps.produced)
        print_report(metrics, "metrics")
        _drift_in_run(ctx, args.drift_images)
        sanity = _sanity_in_run(ctx, maps.produced)
        paths = build_tables(ctx.run_dir, ctx.tag)
        print_failures(maps, "maps")
        print_failures(metrics, "metric")
        if sanity is not None:
            print_failures(sanity, "sanity check")
        print()
        print(paths["markdown"].read_text())
        print_agreement(ctx)
        report = _report_locked(ctx)
    print(f"done in {time.perf_counter() - t0:.0f} s. Tables: {paths['markdown']}; CSV: {ctx.run_dir / 'csv'}; "
          f"maps: {ctx.run_dir / 'maps.h5'}" + (f"; report: {report}" if report else ""))
    return 0 if maps.ok and metrics.ok and (sanity is None or sanity.ok) else 1


def cmd_sanity(args) -> int:
    from runners.sanity import run_sanity

    ctx = _context(args)
    print(f"data: {ctx.source.description}; profile {ctx.profile.name}; results in {ctx.run_dir}")
    rep = run_sanity(ctx, methods=csv_list(args.methods), n_images=args.images, conventions=csv_list(args.conventions))
    print_sanity(ctx, rep)
    print_failures(rep, "sanity check")
    return 0 if rep.ok else 1


def sanity_arguments(p) -> None:
    p.add_argument("--images", type=positive_int, default=None, help="the first N usable images of the run "
                   "(default: the profile's sanity_images: paper 8, quick 2)")
    p.add_argument("--conventions", default=None, help="original_top1 (explain the trained model's class, Adebayo "
                   "et al.), randomised_top1 (the randomised model's own top-1, the Poly-CAM reference code), or "
                   "both comma-separated (default: both)")


def cmd_merge(args) -> int:
    """``merge``: every finished shard of this configuration into the model stores, CSV files, tables. Exit status 1
    when a shard could not be merged (its reason is printed)."""
    from benchmark.outputs.tables import build_tables
    from runners.sharded import merge
    from runners.status import status_text

    ctx = _context(args)
    with ctx.lock():
        counts = merge(ctx, log=lambda msg: print(msg, file=sys.stderr))
        print(f"merged into {ctx.run_dir}: {counts['clean']} clean rows, {counts['maps']} map rows, "
              f"{counts['metrics']} metric rows, {counts['csv']} CSV file pair(s)")
        if counts["csv"]:
            print(build_tables(ctx.run_dir, ctx.tag)["markdown"].read_text())
    print(status_text(ctx.run_dir, verify=False)[0])
    if counts["not_merged"]:
        print(f"{len(counts['not_merged'])} shard(s) not merged (listed above): run the same sharded command again "
              "to recompute them, then `merge`", file=sys.stderr)
        return 1
    return 0
