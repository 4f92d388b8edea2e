r"""The CALM network (Kim, Choe, Akata, Oh, ICCV 2021; docs/calm.md): the model, its losses, backbones,
checkpoints and loading. The attribution maps are the methods ``calm_em`` / ``calm_ml`` (methods/calm.py).

CALM is not post hoc: it is its own classifier. A backbone's last feature map ``g`` feeds two 1x1 heads,

    f = conv_last(g)                     class maps,   [B, C, h, w] (with bias)
    a = ReLU(attention(g))               cue location, [B, 1, h, w] (non-negative)
    p(z|x)     = a_z / sg(sum_z' a_z')   (the normaliser is detached from the graph, as in the reference)
    p(y|x,z)   = softmax_y f[:, :, z]
    p(y,z|x)   = p(y|x,z) p(z|x)         ("jointll": the CALM attribution map of class y)
    p(y|x)     = sum_z p(y,z|x)

:class:`CalmNet` ``forward(x)`` returns ``log p(y|x)`` [B, C]. Every metric of the benchmark takes
``softmax(net(x))``; ``softmax(log p) = p / sum_y p = p`` exactly (``p`` sums to 1), so CALM maps -- and any other
method run on a CALM model -- are scored against the CALM model's own ``p(y|x)`` and its own top-1 class.

Losses (``-log`` of the target's term, averaged over the batch; ``y*`` the label):

    CALM-ML:  -log sum_z p(y*,z|x)
    CALM-EM:  -sum_z sg(p(z|x,y*)) [log p(y*|x,z) + log(p(z|x) + 1e-8 [p(z|x) < 1e-8])]
              with the posterior p(z|x,y*) = p(y*,z|x) / (p(y*|x) + 1e-10)

(the reference floors ``p(z|x)`` by adding 1e-8 where it is below 1e-8; ``log p(y|x,z)`` is a log-softmax and
needs no floor).

State-dict layout: the heads are ``conv_last`` and ``attention.0`` as in the authors' code (naver-ai/calm,
``network/resnet.py``, ``network/vgg.py``); their backbone keys (``conv1``, ``bn1``, ``layer1..4`` for ResNet50;
``features.N``, ``conv6``, ``bn6`` for VGG16) sit here under ``backbone.``. :func:`load_calm_model` reads both
our checkpoints (``train-calm``) and the authors' ``last_checkpoint.pth.tar`` files (a dict with ``state_dict``;
``module.`` prefixes removed).

Backbones: ``resnet50`` (``feature_map``: ``large`` = stride-1 layer3 and layer4, 28x28 maps, the published
models; ``reference`` = stride-1 layer4 only, 14x14, the reference code without ``--large_feature_map``;
``standard`` = torchvision strides, 7x7), ``vgg16`` (the reference's design, with its construction crash fixed:
its ``attention`` head reads ``512 * self.block.expansion`` channels, but VGG has no ``block``; here it reads the
1024 channels of ``conv6``), and any CNN whose last feature map can feed the two heads (``efficientnet_lite0``
and torchvision classifiers: the network up to its last spatial stage).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.core.hooks import Hooks

from .bundle import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, ModelBundle, ModelError
from .classifiers import load_classifier
from .layers import discover_layers, layer_resolutions
from .tv_compat import import_torchvision
from .weights import state_dict_sha256, weights_file_sha256

LOSSES = ("em", "ml")
FEATURE_MAPS = ("large", "reference", "standard")
EM_FLOOR = 1e-8
POSTERIOR_EPS = 1e-10

# VGG16 convolution configs of the reference (14x14: torchvision's features without the last max-pool;
# 28x28: without the 4th max-pool as well).
VGG_CONFIGS = {
    "reference": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "large": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512],
}


# ------------------------------------------------------------------------------------------------ the model

def calm_scores(f: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every CALM quantity from the class maps ``f`` [B,C,h,w] and the location map ``a`` [B,1,h,w] (>= 0)."""
    pz = a / a.sum(dim=(2, 3), keepdim=True).detach()
    py_z = torch.softmax(f, dim=1)
    joint = py_z * pz
    py = joint.sum(dim=(2, 3))
    return {"f": f, "a": a, "p_z": pz, "p_y_given_z": py_z, "joint": joint, "p_y": py}


class CalmNet(nn.Module):
    """A CNN trunk and the two CALM heads; ``forward(x)`` = log p(y|x) (see the module docstring)."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int, loss: str, arch: str,
                 feature_map: str = "standard"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"CALM loss must be one of {LOSSES}, not {loss!r}")
        self.backbone = backbone
        self.conv_last = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.attention = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1), nn.ReLU())
        with torch.no_grad():  # uniform p(z|x) until trained (a random start can be 0 everywhere: 0/0)
            self.attention[0].weight.zero_()
            self.attention[0].bias.fill_(1.0)
        self.loss, self.arch, self.feature_map = loss, arch, feature_map
        self.channels, self.num_classes = channels, num_classes

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.backbone(x)
        return self.conv_last(g), self.attention(g)

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{f, a, p_z [B,1,h,w], p_y_given_z [B,C,h,w], joint p(y,z|x) [B,C,h,w], p_y [B,C]}."""
        return calm_scores(*self.heads(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        py = self.scores(x)["p_y"]
        return py.clamp_min(torch.finfo(py.dtype).tiny).log()

    def meta(self) -> dict:
        return {"loss": self.loss, "backbone": self.arch, "feature_map": self.feature_map,
                "channels": self.channels, "num_classes": self.num_classes}


def calm_em_loss(f: torch.Tensor, a: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CALM-EM: mean_b -sum_z sg(p(z|x,y*)) [log p(y*|x,z) + log(p(z|x) floored at 1e-8)]."""
    s = calm_scores(f, a)
    posterior = (s["joint"] / (s["p_y"][:, :, None, None] + POSTERIOR_EPS)).detach()
    pz = s["p_z"]
    log_pz = torch.log(pz + EM_FLOOR * (pz < EM_FLOOR).to(pz.dtype))
    log_joint = F.log_softmax(f, dim=1) + log_pz
    per_class = (posterior * log_joint).sum(dim=(2, 3))  # [B, C]
    return F.nll_loss(per_class, targets)


def calm_ml_loss(f: torch.Tensor, a: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CALM-ML: mean_b -log sum_z p(y*,z|x)."""
    return F.nll_loss(calm_scores(f, a)["p_y"].log(), targets)


def calm_loss(loss: str, f, a, targets) -> torch.Tensor:
    if loss == "em":
        return calm_em_loss(f, a, targets)
    if loss == "ml":
        return calm_ml_loss(f, a, targets)
    raise ValueError(f"CALM loss must be one of {LOSSES}, not {loss!r}")


# --------------------------------------------------------------------------------------------- backbones

def _resnet_trunk(net: nn.Module, feature_map: str) -> nn.Module:
    """torchvision ResNet up to layer4, named like the authors' keys; stride 1 in layer4 (``reference``) or in
    layer3 and layer4 (``large``). Strides change no weight shape."""
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, not {feature_map!r}")
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    trunk = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    stride1 = {"large": ["layer3", "layer4"], "reference": ["layer4"], "standard": []}[feature_map]
    for layer in stride1:
        block = getattr(trunk, layer)[0]
        for m in block.modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    return trunk


class VggTrunk(nn.Module):
    """The reference CALM VGG16 trunk: conv1_1..conv5_3 (``features``), conv6 3x3 512->1024, optional bn6, ReLU."""

    def __init__(self, feature_map: str = "reference", use_bn: bool = False):
        super().__init__()
        if feature_map not in VGG_CONFIGS:
            raise ValueError(f"VGG16 CALM feature_map must be one of {sorted(VGG_CONFIGS)}, not {feature_map!r}")
        layers, c = [], 3
        for v in VGG_CONFIGS[feature_map]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if use_bn else []) + [nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        if use_bn:
            self.bn6 = nn.BatchNorm2d(1024)
        self.use_bn = use_bn
        self.relu = nn.ReLU()
        for m in self.modules():  # the reference's 'he' initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.conv6(self.features(x))
        return self.relu(self.bn6(x) if self.use_bn else x)


class _Stop(Exception):
    def __init__(self, out):
        self.out = out


class TruncatedNet(nn.Module):
    """Any CNN run up to (and including) module ``layer``; its output is the trunk's feature map.

    The network's forward is cut by a hook on ``layer``, held for the duration of each call (the modules after it
    never run)."""

    def __init__(self, net: nn.Module, layer: str):
        super().__init__()
        self.net = net
        self.layer = layer
        if layer not in dict(net.named_modules()):
            raise ValueError(f"no module {layer!r} in the network")

    @staticmethod
    def _stop(_m, _inp, out):
        raise _Stop(out)

    def forward(self, x):
        with Hooks() as hooks:
            hooks.forward(dict(self.net.named_modules())[self.layer], self._stop)
            try:
                self.net(x)
            except _Stop as stop:
                return stop.out
        raise ModelError(f"module {self.layer} did not run")


@dataclass
class Base:
    """What a CALM model is built from: the trunk, its channels, the torchvision Linear to start the class head."""

    trunk: nn.Module
    channels: int
    fc: nn.Linear | None


def _base_from_classifier(arch: str, bundle, feature_map: str) -> Base:
    net = bundle.net
    if arch == "resnet50":
        return Base(_resnet_trunk(net, feature_map), net.fc.in_features, net.fc)
    if arch == "vgg16":
        fm = "reference" if feature_map == "standard" else feature_map
        trunk = VggTrunk(fm)
        src = [m for m in net.features if isinstance(m, nn.Conv2d)]
        dst = [m for m in trunk.features if isinstance(m, nn.Conv2d)]
        with torch.no_grad():  # the reference's key alignment: convolutions in order
            for s, d in zip(src, dst):
                d.weight.copy_(s.weight)
                d.bias.copy_(s.bias)
        return Base(trunk, 1024, None)  # VGG16 has no GAP + Linear head: the class head starts random
    if feature_map != "standard":
        raise ValueError(f"feature_map {feature_map!r} exists for resnet50 and vgg16 only; use 'standard' for {arch}")
    layer = bundle.last_conv
    trunk = TruncatedNet(net, layer)
    with torch.no_grad():
        g = trunk(torch.zeros(1, 3, 224, 224, device=next(net.parameters()).device))
    fc = dict(net.named_modules()).get(bundle.fc) if bundle.fc else None
    if fc is not None and fc.in_features != g.shape[1]:
        fc = None
    return Base(trunk, int(g.shape[1]), fc)


def init_heads(model: CalmNet, fc: nn.Linear | None, seed: int = 0) -> None:
    """Class head from the classifier's ``fc`` (maps start equal to CAM); cue head uniform: weight 0, bias 1,
    so ``a = ReLU(1) = 1`` everywhere and ``p(z|x) = 1/(hw)``. Without an ``fc`` the class head gets the
    reference's Xavier initialisation with zero bias (seeded)."""
    with torch.no_grad():
        if fc is not None and fc.out_features == model.num_classes:
            model.conv_last.weight.copy_(fc.weight.view(*fc.weight.shape, 1, 1))
            model.conv_last.bias.copy_(fc.bias)
        else:
            gen = torch.Generator().manual_seed(seed)
            bound = math.sqrt(6.0 / (model.channels + model.num_classes))
            model.conv_last.weight.copy_(torch.empty_like(model.conv_last.weight, device="cpu")
                                         .uniform_(-bound, bound, generator=gen))
            model.conv_last.bias.zero_()
        model.attention[0].weight.zero_()
        model.attention[0].bias.fill_(1.0)


# ------------------------------------------------------------------------------------------ checkpoints

def authors_layout(sd: dict) -> bool:
    """True for the authors' state dict (heads ``conv_last``/``attention.0``, backbone keys at the top level)."""
    keys = [k.removeprefix("module.") for k in sd]
    return "conv_last.weight" in keys and "attention.0.weight" in keys and not any(
        k.startswith("backbone.") for k in keys)


def from_authors_layout(sd: dict) -> OrderedDict:
    """The authors' keys -> ours: ``module.`` dropped, heads kept, every backbone key under ``backbone.``."""
    out = OrderedDict()
    for k, v in sd.items():
        k = k.removeprefix("module.")
        out[k if k.split(".")[0] in ("conv_last", "attention") else f"backbone.{k}"] = v
    return out


def to_authors_layout(sd: dict) -> OrderedDict:
    """Our keys -> the authors' (for ResNet50 and VGG16)."""
    return OrderedDict((k.removeprefix("backbone."), v) for k, v in sd.items())


def read_checkpoint(path: str | Path) -> dict:
    """``{"state_dict", "meta", "layout", ...}`` from our checkpoint or the authors' file (tensors only:
    ``weights_only=True``, no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CALM checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {path} as a tensor checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ck, dict):
        raise ValueError(f"{path} does not hold a state dict or a checkpoint dict")
    sd = ck.get("state_dict", ck) if isinstance(ck.get("state_dict"), dict) else ck
    meta = dict(ck.get("meta", {})) if isinstance(ck.get("meta"), dict) else {}
    if authors_layout(sd):
        layout = "authors"
        sd = from_authors_layout(sd)
        if "architecture" in ck:
            meta.setdefault("authors_architecture", ck["architecture"])
        if "epoch" in ck:
            meta.setdefault("epoch", ck["epoch"])
    elif any(k.startswith("backbone.") for k in sd) and "conv_last.weight" in sd:
        layout = "benchmark"
        sd = OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())
    else:
        raise ValueError(f"{path} is not a CALM checkpoint: no conv_last/attention heads among its keys "
                         f"(first keys: {list(sd)[:5]})")
    return {"state_dict": sd, "meta": meta, "layout": layout, "raw": ck}


# ------------------------------------------------------------------------------------------ construction

def parse_calm_name(name: str) -> tuple[str | None, str]:
    """``calm_resnet50`` -> (None, resnet50); ``calm_em_vgg16`` -> (em, vgg16)."""
    if not name.startswith("calm_"):
        raise ValueError(f"{name!r} is not a CALM model name (calm_[em_|ml_]<backbone>)")
    rest = name[len("calm_"):]
    for loss in LOSSES:
        if rest.startswith(loss + "_"):
            return loss, rest[len(loss) + 1:]
    return None, rest


def build_calm(arch: str, loss: str, base_weights: str = "imagenet", feature_map: str | None = None,
               num_classes: int | None = None, device="cpu", seed: int = 0) -> CalmNet:
    """A CALM model on ``arch`` initialised from the torchvision (or EfficientNet-Lite0) classifier with
    ``base_weights`` (``imagenet``, ``random`` or a state-dict file); heads as in :func:`init_heads`.
    ``num_classes`` other than the classifier's gives a fresh class head (e.g. a 200-class CUB model)."""
    feature_map = feature_map or ("large" if arch in ("resnet50", "vgg16") else "standard")
    bundle = load_classifier(arch, base_weights, device=device, seed=seed, channels_last=False)
    base = _base_from_classifier(arch, bundle, feature_map)
    classes = num_classes or bundle.num_classes
    torch.manual_seed(seed)
    model = CalmNet(base.trunk, base.channels, classes, loss, arch, feature_map)
    init_heads(model, base.fc if base.fc is not None and base.fc.out_features == classes else None, seed)
    return model.to(device)


def calm_from_checkpoint(path: str | Path, loss: str | None = None, arch: str | None = None,
                         feature_map: str | None = None, device="cpu") -> tuple[CalmNet, dict]:
    """Build the CALM model a checkpoint describes and load it (strict). The authors' files carry no loss and
    no stride setting: ``loss`` must be given, ``feature_map`` defaults to ``large`` (their published models)."""
    ck = read_checkpoint(path)
    meta = ck["meta"]
    sd = ck["state_dict"]
    arch = arch or meta.get("backbone") or meta.get("authors_architecture")
    if arch is None:
        raise ValueError(f"{path}: the backbone is not recorded; name it in the model (calm_em_resnet50)")
    if meta.get("loss") and loss and meta["loss"] != loss:
        raise ValueError(f"{path} holds a CALM-{meta['loss'].upper()} model, not CALM-{loss.upper()}: use "
                         f"calm_{meta['loss']}_{arch} or calm_{arch}")
    loss = loss or meta.get("loss")
    if loss is None:
        raise ValueError(f"{path} does not say which loss trained it (the authors' files do not): name it in the "
                         f"model, --model calm_em_{arch} or --model calm_ml_{arch}")
    feature_map = feature_map or meta.get("feature_map") or ("large" if arch in ("resnet50", "vgg16") else
                                                            "standard")
    num_classes = int(sd["conv_last.weight"].shape[0])
    use_bn = any(k.startswith("backbone.bn6") for k in sd)
    if arch == "vgg16":
        trunk, channels = VggTrunk("reference" if feature_map == "standard" else feature_map, use_bn), 1024
        model = CalmNet(trunk, channels, num_classes, loss, arch, feature_map)
    elif arch == "resnet50":  # no classifier to load, no forward pass
        trunk = _resnet_trunk(import_torchvision().models.resnet50(weights=None), feature_map)
        model = CalmNet(trunk, 2048, num_classes, loss, arch, feature_map)
    else:
        model = build_calm(arch, loss, "random", feature_map, num_classes, device="cpu")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit a CALM {arch} ({ck['layout']} layout): missing keys "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    info = {"layout": ck["layout"], **meta, "loss": loss, "backbone": arch, "feature_map": feature_map}
    return model.to(device), info


def calm_layers(net: CalmNet, device="cpu") -> list[str]:
    """Poly-CAM / CAM-family layers of a CALM model: the trunk's stages (one per resolution, as
    :func:`benchmark.models.discover_layers`), the deepest replaced by ``backbone`` (the map both heads read)."""
    size = 96  # the stage structure does not depend on the input size; small inputs keep this cheap
    names = discover_layers(net.backbone, size=size, device=device)
    sizes = {n: (h, w) for n, h, w in layer_resolutions(net.backbone, size=size, device=device)}
    with torch.no_grad():
        final = tuple(net.backbone(torch.zeros(1, 3, size, size, device=device)).shape[-2:])
    names = [n for n in names if sizes.get(n) != final]
    return [f"backbone.{n}" for n in names] + ["backbone"]


def load_calm_model(name: str, weights: str, device="cpu", seed: int = 0, channels_last: bool = True):
    """A :class:`benchmark.models.ModelBundle` for ``calm_[em_|ml_]<backbone>``.

    ``weights``: a checkpoint (ours from ``train-calm``, or the authors' state dict), or ``imagenet``/``random``
    (the untrained initialisation from the classifier: p(y|x) then equals CAM's classifier only up to the
    heads' starting point; ``calm_em_efficientnet_lite0 --weights imagenet`` works offline)."""
    loss, arch = parse_calm_name(name)
    try:
        if weights in ("imagenet", "random"):
            if loss is None:
                raise ValueError(f"--model {name} --weights {weights} builds an untrained CALM model: say which "
                                 f"loss it is for, --model calm_em_{arch} or calm_ml_{arch}")
            net = build_calm(arch, loss, weights, device="cpu", seed=seed)
            info = {"layout": "init", "loss": loss, "backbone": arch, "feature_map": net.feature_map,
                    "base_weights": weights}
            sha = state_dict_sha256(net)
        else:
            net, info = calm_from_checkpoint(weights, loss, arch, device="cpu")
            sha = weights_file_sha256(weights)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise ModelError(f"CALM model {name} from {weights}: {err}") from None
    device = torch.device(device)
    net = net.eval().requires_grad_(False).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    layers = calm_layers(net, device)
    mean, std = (LITE_MEAN, LITE_STD) if arch == "efficientnet_lite0" else (IMAGENET_MEAN, IMAGENET_STD)
    if info.get("mean") and info.get("std"):  # what train-calm normalised with
        mean, std = tuple(info["mean"]), tuple(info["std"])
    return CalmBundle(name=name, net=net, mean=mean, std=std, weights=weights, weights_sha256=sha,
                      layer_sets={"auto": layers}, polycam_preset="auto", fc=None, device=device,
                      num_classes=net.num_classes, calm=info)


@dataclass
class CalmBundle(ModelBundle):
    """A ModelBundle whose ``net`` is a :class:`CalmNet`; ``describe()`` says how it is scored."""

    calm: dict | None = None

    def describe(self) -> dict:
        d = super().describe()
        d["calm"] = {**(self.calm or {}), "output": "log p(y|x)", "scored_with":
                     "softmax(net(x)) = the CALM model's own p(y|x) = sum_z p(y,z|x); the explained class is its "
                     "top-1"}
        return d


def is_calm(model) -> bool:
    return isinstance(getattr(model, "net", None), CalmNet)

