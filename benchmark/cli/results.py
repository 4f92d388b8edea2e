"""The commands that read results: ``tables``, ``report``, ``status``, ``export-npz`` and ``import-npz``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from runners.store import RunLock

from .options import csv_list, run_config


def _lock(folder: Path):
    """The folder's lock (a missing folder is not created: the command then says there are no results)."""
    return RunLock(folder) if folder.is_dir() else contextlib.nullcontext()


def _results_folder(args) -> Path:
    from runners.context import model_tag

    out = Path(args.out or Path("results") / args.profile)
    return out / model_tag(args.model, args.weights) if args.model else out


def warn_disagree(disagree: list[str]) -> int:
    """Say on stderr which files disagree with the stores they were written from (:mod:`runners.csvcheck`); the
    exit status: 1 when any does."""
    for line in disagree:
        print(f"warning: {line}", file=sys.stderr)
    return 1 if disagree else 0


def cmd_tables(args) -> int:
    """Exit status 1 when a CSV file disagrees with its store (left out of the tables, and named)."""
    from benchmark.outputs.tables import build_results_tables, build_tables
    from runners.context import model_tag

    folder = _results_folder(args)
    boot = {"seed": args.bootstrap_seed, "resamples": args.bootstrap_resamples}
    with _lock(folder):  # no two commands write the tables of one folder at once
        if args.model:
            built = build_tables(folder, model_tag(args.model, args.weights), **boot)
        else:
            built = build_results_tables(folder, **boot)
            print("models: " + ", ".join(r.tag for r in built["runs"]))
    print(built["markdown"].read_text())
    print(f"tables (CSV, Markdown, LaTeX) written to {built['markdown'].parent}")
    return warn_disagree(built["disagree"])


def cmd_report(args) -> int:
    """Exit status 1 when a CSV file disagrees with its store (left out of the report, and named)."""
    from benchmark.outputs.report import build_report

    folder = _results_folder(args)
    with _lock(folder):
        path, disagree = build_report(folder, n_map_images=args.images, seed=args.bootstrap_seed,
                                      resamples=args.bootstrap_resamples)
    print(f"report: {path} (and {path.with_suffix('.html').name}; figures in {path.parent / 'figures'})")
    return warn_disagree(disagree)


# The defaults of benchmark.outputs.stats, written here rather than imported: the parser is built for every command
# and scipy is slow to import (tests/test_stats.py checks that they agree).
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 10_000, 0


def tables_arguments(p) -> None:
    p.add_argument("--bootstrap-resamples", type=int, default=BOOTSTRAP_RESAMPLES, metavar="R",
                   help=f"resamples of the paired bootstrap behind every interval (default {BOOTSTRAP_RESAMPLES})")
    p.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, metavar="S",
                   help=f"seed of the bootstrap's resamples (default {BOOTSTRAP_SEED})")


def report_arguments(p) -> None:
    p.add_argument("--images", type=int, default=4, help="images in the side-by-side map figure")
    tables_arguments(p)


def cmd_status(args) -> int:
    """Exit status 0 when nothing is damaged, 1 when something is (after ``--repair``: when it could not be fixed)."""
    from runners.status import status_text

    if args.folder is not None and args.out is not None and Path(args.folder) != Path(args.out):
        print(f"status: two folders given ({args.folder} and --out {args.out}): give one", file=sys.stderr)
        return 2
    args.folder = args.folder or args.out or "results"
    text, code = status_text(args.folder, verify=not args.no_verify, repair=args.repair)
    print(text)
    if args.top1:
        from runners.agreement import check_folder, summary
        from runners.status import find_run_dirs

        for run_dir in find_run_dirs(Path(args.folder)):
            res = check_folder(run_dir)
            print(f"{run_dir}: {summary(res)}")
            for d in res.get("differ", []):
                print(f"  {d['image']}: ours {d['ours']}, the authors' {d['authors']}")
            if res.get("differ_count", 0) > len(res.get("differ", [])):
                print(f"  ... and {res['differ_count'] - len(res['differ'])} more")
            if res.get("warning"):
                print(f"WARNING: {res['warning']}", file=sys.stderr)
    return code


def status_arguments(p) -> None:
    p.add_argument("folder", nargs="?", default=None, help="a run folder or a folder of them (default: results)")
    p.add_argument("--out", default=None, help="the same folder, named as the other commands name it")
    p.add_argument("--no-verify", action="store_true", help="do not check the stored rows' checksums and the shard "
                   "files' sha256 (faster)")
    p.add_argument("--top1", action="store_true", help="compare each run's stored clean top-1 classes with the "
                   "Poly-CAM authors' (vgg16/resnet50, ImageNet weights, their image list); computes nothing")
    p.add_argument("--repair", action="store_true", help="salvage damaged stores: a store that cannot be read is "
                   "rebuilt from what can (the damaged file is kept aside); rows failing their checksum are marked "
                   "to be recomputed by the next run")


def cmd_export(args) -> int:
    from runners.context import RunContext
    from runners.npz import export_npz

    ctx = RunContext(run_config(args))
    out = Path(args.to) if args.to else ctx.run_dir / "npz"
    with ctx.lock(), ctx.open_maps(mode="r") as store:
        paths = export_npz(store, ctx.tag, out, csv_list(args.methods), log=lambda m: print(m, file=sys.stderr))
    for p in paths:
        print(p)
    return 0


def export_arguments(p) -> None:
    p.add_argument("--to", default=None, help="folder for the npz files (default: <run folder>/npz)")


def cmd_import(args) -> int:
    from runners.context import RunContext
    from runners.npz import import_npz, method_from_filename

    ctx = RunContext(run_config(args))
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no such npz file(s): {missing}")
    if args.method and len(files) > 1:
        raise ValueError("--method names one method: give one file with it")
    with ctx.lock(), ctx.open_maps() as store:
        for f in files:
            method = args.method or method_from_filename(f, ctx.tag)
            counts = import_npz(store, f, method, ctx.profile.image_size)
            print(f"{f.name} -> maps/{method}: {counts['imported']} imported, {counts['not_in_list']} not in the "
                  f"image list, {counts['bad']} unusable")
    return 0


def import_arguments(p) -> None:
    p.add_argument("files", nargs="+", help="npz files")
    p.add_argument("--method", default=None, help="method id for the maps (default: from the file name)")
