"""Every command of ``python -m benchmark``, wired one way: a name, a help line, the shared option groups it takes
(:mod:`.options`), its own arguments, and its handler ``module:function`` (imported when the command runs, so
``--help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: str  # "module:function" taking the parsed arguments, returning the exit status
    options: tuple[str, ...] = ()  # shared option groups or single shared options
    arguments: str | None = None  # "module:function" adding the command's own arguments
    overrides: dict = field(default_factory=dict)  # {shared option: {kwarg: value}}


_RESULTS = {"model": {"default": None, "help": "one model folder (default: every model folder in the results "
                                                 "folder, side by side)"},
            "weights": {"help": "with --model: random selects <model>-random"},
            "out": {"help": "results folder (default: results/<profile>)"}}

COMMANDS = [
    Command("run", "maps, then metrics, the sanity check, tables and the report", "benchmark.cli.stages:cmd_run",
            ("run", "methods", "metrics", "dry_run", "compact", "recompute", "scale", "drift_images")),
    Command("maps", "compute and store saliency maps", "benchmark.cli.stages:cmd_maps",
            ("run", "methods", "dry_run", "compact", "recompute", "scale")),
    Command("metrics", "score stored maps; write the CSV files", "benchmark.cli.stages:cmd_metrics",
            ("run", "methods", "metrics", "dry_run", "recompute", "scale")),
    Command("sanity", "cascading-randomisation sanity check: maps of every method on the network randomised layer "
            "by layer from the top, their similarity to the trained one (CSV, figures)",
            "benchmark.cli.stages:cmd_sanity", ("run", "methods", "recompute"),
            "benchmark.cli.stages:sanity_arguments"),
    Command("perf", "images/s, passes/s and efficiency of methods and metrics against the model's limit, and the "
            "speed-up over the peer libraries (JSON with --out)", "benchmark.cli.perf:cmd_perf",
            ("run", "methods", "metrics"), "benchmark.cli.perf:perf_arguments",
            {"model": {"default": "efficientnet_lite0", "help": "default: efficientnet_lite0 (offline)"},
             "limit": {"default": 1, "help": "images measured together in each call (default 1)"},
             "methods": {"default": "pcampm,rise,scorecam,occlusion",
                         "help": "comma-separated method ids (default: pcampm,rise,scorecam,occlusion)"},
             "metrics": {"default": "insertion,deletion", "help": "comma-separated metric ids, scored on the maps of "
                         "the first method (default: insertion,deletion)"},
             "profile": {"default": "quick", "help": "method and metric parameters (default: quick)"},
             "precision": {"help": "precision of the timed work (default fp32); with tf32 or bf16 the JSON also says "
                           "how far each method's maps and the metrics' values move from fp32 on the same images "
                           "(precision_drift)"},
             "out": {"help": "write the JSON result to this file"}}),
    Command("merge", "merge finished shard stores into maps.h5 / metrics.h5, CSV files, tables",
            "benchmark.cli.stages:cmd_merge", ("run", "methods", "metrics")),
    Command("status", "what a results folder holds: done, missing, failed (with the reason)",
            "benchmark.cli.results:cmd_status", (), "benchmark.cli.results:status_arguments"),
    Command("tables", "rebuild the paper's tables from the CSV files alone", "benchmark.cli.results:cmd_tables",
            ("results",), "benchmark.cli.results:tables_arguments", _RESULTS),
    Command("report", "write report.md/.html: every table and figure of a run", "benchmark.cli.results:cmd_report",
            ("results",), "benchmark.cli.results:report_arguments", _RESULTS),
    Command("methods", "list the registered methods", "benchmark.cli.info:cmd_methods", ("plugin",),
            "benchmark.cli.info:methods_arguments"),
    Command("models", "list the usable models", "benchmark.cli.info:cmd_models"),
    Command("export-npz", "write <model>_<method>.npz files (the authors' format)", "benchmark.cli.results:cmd_export",
            ("run", "methods"), "benchmark.cli.results:export_arguments"),
    Command("import-npz", "store maps from <model>_<method>.npz files for scoring", "benchmark.cli.results:cmd_import",
            ("run",), "benchmark.cli.results:import_arguments"),
    Command("cue-localization", "CALM's cue localization on CUB-200-2011 class pairs (PxAP per group of 1/2/3 "
            "differing parts), for any method", "benchmark.cli.calm:cmd_cue_localization",
            ("model", "weights", "seed", "batch_size", "device", "out", "plugin", "no_progress"),
            "benchmark.cli.calm:cue_arguments",
            {"model": {"required": True, "help": "a classifier trained on CUB's 200 classes: a CALM model "
                       "(calm_em_resnet50, ...) or any torchvision model with --weights FILE"},
             "out": {"help": "output folder (default: results/cue_localization)"}}),
    Command("remove-classify", "CALM's remove-and-classify under a named protocol (calm: the authors' choices, the "
            "ground-truth label explained and counted; harness: the metrics stage's), for any method",
            "benchmark.cli.calm:cmd_remove_classify",
            ("model", "weights", "data", "image_list", "limit", "out", "device", "seed", "batch_size", "methods",
             "plugin", "no_progress"), "benchmark.cli.calm:rc_arguments",
            {"model": {"required": True, "help": "the classifier: a CALM model (calm_em_resnet50, calm_cam_resnet50, "
                       "...) or any model of the harness"},
             "methods": {"default": "gradcam", "help": "comma-separated method ids (default gradcam)"},
             "batch_size": {"help": "images per batch and model inputs per pass (default 64, the authors'; with "
                            "--random numpy it decides which pixels are drawn)"},
             "out": {"help": "results folder (default: results/remove_classify; one folder per model inside, read by "
                     "'tables')"}}),
    Command("train-calm", "train a CALM-EM, CALM-ML or CAM-baseline model on an ImageFolder dataset (resumable)",
            "benchmark.cli.calm:cmd_train_calm", ("seed", "device", "no_progress"),
            "benchmark.cli.calm:train_arguments"),
]
