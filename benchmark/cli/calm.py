"""CALM's commands: ``train-calm``, ``cue-localization`` and ``remove-classify``."""

from __future__ import annotations

from .options import csv_list


def _protocol_arguments(p, choices, evaluation: str) -> None:
    """``--protocol calm|harness`` and one option per choice of the protocol (default: the protocol's)."""
    p.add_argument("--protocol", default="calm", choices=["calm", "harness"], help=f"calm (default): {evaluation} "
                   "exactly as the authors' code runs it; harness: the harness's own choices. Each choice below "
                   "overrides one; all are recorded in the outputs")
    for c in choices:
        p.add_argument(f"--{c.name.replace('_', '-')}", dest=c.name, default=None, choices=list(c.values),
                       help=f"{c.help} (calm: {c.calm}; harness: {c.harness})")


def _protocol(args, choices) -> dict:
    from runners.calm_protocol import resolve

    return resolve(choices, args.protocol, **{c.name: getattr(args, c.name) for c in choices})


def cue_arguments(p) -> None:
    """The ``cue-localization`` options."""
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder (images, attributes, parts, "
                   "segmentations)")
    p.add_argument("--methods", default="gradcam", help="comma-separated method ids (default gradcam)")
    p.add_argument("--groups", default="1,2,3", help="numbers of differing parts to score (default 1,2,3)")
    p.add_argument("--max-pairs", type=int, default=None, help="at most this many class pairs per group, a seeded "
                   "sample (default: all; CUB has 19 900 pairs)")
    p.add_argument("--reference-defect", action="store_true", help="same as --histograms accumulate")
    from runners.calm_protocol import CUE_CHOICES

    _protocol_arguments(p, CUE_CHOICES, "cue localization")


def cmd_cue_localization(args) -> int:
    from runners.calm_protocol import CUE_CHOICES
    from runners.cue_localization import run_cue_localization
    from runners.plugins import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    try:
        groups = tuple(int(g) for g in csv_list(args.groups) or [])
    except ValueError:
        raise ValueError(f"--groups must name 1, 2 and/or 3, not {args.groups!r}") from None
    if args.reference_defect:
        if args.histograms == "reset":
            raise ValueError("--reference-defect (accumulate) contradicts --histograms reset")
        args.histograms = "accumulate"
    run_cue_localization(args.model, args.weights, args.cub, csv_list(args.methods) or [], groups=groups,
                         max_pairs=args.max_pairs, seed=args.seed, batch_size=args.batch_size or 32,
                         device=args.device, protocol=_protocol(args, CUE_CHOICES),
                         out=args.out or "results/cue_localization", progress=not args.no_progress)
    return 0


def rc_arguments(p) -> None:
    """The ``remove-classify`` options."""
    p.add_argument("--labels", default=None, help="ground-truth labels, 'name class' or 'name,class' lines (default: "
                   "image_lists/ilsvrc2012_val_labels.txt, the 50 000 ILSVRC2012 val images)")
    from runners.calm_protocol import RC_CHOICES

    _protocol_arguments(p, RC_CHOICES, "remove-and-classify")


def cmd_remove_classify(args) -> int:
    from runners.calm_protocol import RC_CHOICES
    from runners.plugins import load_plugin
    from runners.remove_classify import run_remove_classify

    for plugin in args.plugin:
        load_plugin(plugin)
    run_remove_classify(args.model, args.weights, args.data, args.image_list, csv_list(args.methods) or [],
                        protocol=_protocol(args, RC_CHOICES), labels=args.labels,
                        out=args.out or "results/remove_classify", seed=args.seed, batch_size=args.batch_size,
                        device=args.device, limit=args.limit, progress=not args.no_progress)
    return 0


def train_arguments(p) -> None:
    """The ``train-calm`` options."""
    p.add_argument("--model", default="resnet50", help="backbone: resnet50, vgg16, inception_v3, efficientnet_lite0 "
                   "or a torchvision CNN with a GAP + Linear head (default: resnet50)")
    p.add_argument("--loss", "--method", dest="loss", default="em", choices=["em", "ml", "cam"],
                   help="em: CALM-EM (default), ml: CALM-ML, cam: the authors' CAM baseline on the same trunk (class "
                   "maps, then global average pooling, cross-entropy)")
    p.add_argument("--head-init", default="official", choices=["official", "classifier"],
                   help="official (default): the heads as the authors' code, Xavier-uniform with zero bias (He-normal "
                   "for vgg16); classifier: class head from the classifier's fc (maps start equal to CAM), uniform "
                   "cue head")
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
    cfg = TrainConfig(model=args.model, loss=args.loss, head_init=args.head_init, data=args.data,
                      out=args.out or f"calm_checkpoints/{args.model}_{args.loss}", epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      freeze_backbone=args.freeze_backbone, feature_map=feature_map, base_weights=args.base_weights,
                      image_size=args.image_size, seed=args.seed, workers=args.workers, device=device,
                      save_every=args.save_every, max_steps=args.max_steps, progress=not args.no_progress)
    res = train_calm(cfg)
    methods = {"cam": "calm_cam", "em": "calm_em", "ml": "calm_ml"}[args.loss]
    print(f"checkpoint: {res['checkpoint']} ({res['epochs_done']} epoch(s) done). Use it with: python -m benchmark "
          f"run --model calm_{args.model} --weights {res['checkpoint']} --methods {methods}")
    return 0
