"""CALM's commands: ``train-calm`` and ``cue-localization``."""

from __future__ import annotations

from .options import csv_list


def cue_arguments(p) -> None:
    """The ``cue-localization`` options."""
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder (images, attributes, parts, "
                   "segmentations)")
    p.add_argument("--methods", default="gradcam", help="comma-separated method ids (default gradcam)")
    p.add_argument("--groups", default="1,2,3", help="numbers of differing parts to score (default 1,2,3)")
    p.add_argument("--max-pairs", type=int, default=None, help="at most this many class pairs per group, a seeded "
                   "sample (default: all; CUB has 19 900 pairs)")
    p.add_argument("--reference-defect", action="store_true", help="accumulate the histograms over all pairs "
                   "without reset, as the reference code does (for comparison with its numbers only)")


def cmd_cue_localization(args) -> int:
    from runners.cue_localization import run_cue_localization
    from runners.plugins import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    try:
        groups = tuple(int(g) for g in csv_list(args.groups) or [])
    except ValueError:
        raise ValueError(f"--groups must name 1, 2 and/or 3, not {args.groups!r}") from None
    run_cue_localization(args.model, args.weights, args.cub, csv_list(args.methods) or [], groups=groups,
                         max_pairs=args.max_pairs, seed=args.seed, batch_size=args.batch_size or 32,
                         device=args.device, reset_per_pair=not args.reference_defect,
                         out=args.out or "results/cue_localization", progress=not args.no_progress)
    return 0


def train_arguments(p) -> None:
    """The ``train-calm`` options."""
    p.add_argument("--model", default="resnet50", help="backbone: resnet50, vgg16, efficientnet_lite0 or a "
                   "torchvision CNN with a GAP + Linear head (default: resnet50)")
    p.add_argument("--loss", default="em", choices=["em", "ml"], help="CALM-EM or CALM-ML (default: em)")
    p.add_argument("--data", required=True, help="training folder in ImageFolder layout: DATA/<class>/<image> "
                   "(ImageNet train for the real thing)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: calm_checkpoints/<model>_<loss>); "
                   "an existing last.pt there is resumed")
    p.add_argument("--schedule", default="reference", choices=["reference", "constant"],
                   help="reference: 40 epochs, batch 64, lr 0.01 (10x heads), x0.1 from epoch 30; constant: no decay")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="backbone learning rate (heads: 10x; default 0.01)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the two heads only")
    p.add_argument("--feature-map", default=None, choices=["large", "reference", "standard"],
                   help="resnet50/vgg16 stride setting: large = 28x28 (default, the published models), reference = "
                   "14x14, standard = torchvision strides (other backbones: standard only)")
    p.add_argument("--large-feature-map", action="store_true", help="same as --feature-map large")
    p.add_argument("--base-weights", default="imagenet", help="classifier to start from: imagenet, random or a "
                   "state-dict FILE (default: imagenet)")
    p.add_argument("--image-size", type=int, default=224, help="crop size (default: 224)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default: 0)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (default: epoch ends)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (resumable)")


def cmd_train_calm(args) -> int:
    from runners.calm_train import TrainConfig, train_calm
    from runners.context import resolve_device

    device = str(resolve_device(args.device))
    feature_map = "large" if args.large_feature_map else args.feature_map
    cfg = TrainConfig(model=args.model, loss=args.loss, data=args.data,
                      out=args.out or f"calm_checkpoints/{args.model}_{args.loss}", epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      freeze_backbone=args.freeze_backbone, feature_map=feature_map, base_weights=args.base_weights,
                      image_size=args.image_size, seed=args.seed, workers=args.workers, device=device,
                      save_every=args.save_every, max_steps=args.max_steps, progress=not args.no_progress)
    res = train_calm(cfg)
    print(f"checkpoint: {res['checkpoint']} ({res['epochs_done']} epoch(s) done). Use it with: python -m benchmark "
          f"run --model calm_{args.model} --weights {res['checkpoint']}")
    return 0
