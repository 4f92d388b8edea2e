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

The CAM baseline of the reference (``attribution_method=CAM``, training method ``cam``): the same trunk and heads,
``p(y|x) = softmax_y(mean_z f[:, y, z])`` (class maps, then global average pooling), loss ``-log p(y*|x)``; its cue
head is built and saved but never used. :class:`CalmNet` with ``loss="cam"`` is that model.

Head initialisation (:func:`init_heads`): ``official`` (default), as the reference: Xavier-uniform weights and zero
biases for both heads (He-normal, fan-out, for VGG16); ``classifier``: the class head copied from the classifier's
fc (maps start equal to CAM), the cue head uniform (weight 0, bias 1).

State-dict layout: the heads are ``conv_last`` and ``attention.0`` as in the authors' code (naver-ai/calm,
``network/resnet.py``, ``network/vgg.py``); their backbone keys (``conv1``, ``bn1``, ``layer1..4`` for ResNet50;
``features.N``, ``conv6``, ``bn6`` for VGG16) sit here under ``backbone.``. :func:`load_calm_model` reads both
our checkpoints (``train-calm``) and the authors' ``last_checkpoint.pth.tar`` files (a dict with ``state_dict``;
``module.`` prefixes removed).

Backbones: ``resnet50`` (``feature_map``: ``large`` = stride-1 layer3 and layer4, 28x28 maps, the published
models; ``reference`` = stride-1 layer4 only, 14x14, the reference code without ``--large_feature_map``;
``standard`` = torchvision strides, 7x7), ``vgg16`` (the reference's design, with its construction crash fixed:
its ``attention`` head reads ``512 * self.block.expansion`` channels, but VGG has no ``block``; here it reads the
1024 channels of ``conv6``), ``inception_v3`` (:class:`InceptionTrunk`, the reference's design with its two defects
fixed: see there), and any CNN whose last feature map can feed the two heads (``efficientnet_lite0`` and
torchvision classifiers: the network up to its last spatial stage).

The authors' files do not record the training method, and CAM, CALM-EM and CALM-ML checkpoints have the same keys:
such a file is loaded as the model name states (``calm_cam_``, ``calm_em_``, ``calm_ml_``) with a
:class:`CalmMethodWarning` saying that the keys cannot tell; without the method in the name it is refused.
"""

from __future__ import annotations

import warnings
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

LOSSES = ("em", "ml")  # the CALM losses
TRAININGS = ("cam", "em", "ml")  # what a model of this module can be trained with: the CAM baseline or CALM
TRAINING_LABELS = {"cam": "CAM", "em": "CALM-EM", "ml": "CALM-ML"}
HEAD_INITS = ("official", "classifier")
FEATURE_MAPS = ("large", "reference", "standard")
EM_FLOOR = 1e-8
POSTERIOR_EPS = 1e-10

# VGG16 convolution configs of the reference (14x14: torchvision's features without the last max-pool;
# 28x28: without the 4th max-pool as well).
VGG_CONFIGS = {
    "reference": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "large": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512],
}



class CalmMethodWarning(UserWarning):
    """A checkpoint whose training method (CAM, CALM-EM, CALM-ML) cannot be told from its keys."""


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
        if loss not in TRAININGS:
            raise ValueError(f"the training method must be one of {TRAININGS}, not {loss!r}")
        self.backbone = backbone
        self.conv_last = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.attention = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1), nn.ReLU())
        with torch.no_grad():  # uniform p(z|x) until trained (a random start can be 0 everywhere: 0/0)
            self.attention[0].weight.zero_()
            self.attention[0].bias.fill_(1.0)
        self.loss, self.arch, self.feature_map = loss, arch, feature_map
        self.channels, self.num_classes = channels, num_classes
        self.head_init = "uniform"  # until init_heads says otherwise

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.backbone(x)
        return self.conv_last(g), self.attention(g)

    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{f, a, p_z [B,1,h,w], p_y_given_z [B,C,h,w], joint p(y,z|x) [B,C,h,w], p_y [B,C]}."""
        return calm_scores(*self.heads(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y|x): CALM's ``log sum_z p(y,z|x)``; for the CAM baseline ``log_softmax(mean_z f)``."""
        f, a = self.heads(x)
        if self.loss == "cam":
            return F.log_softmax(f.mean(dim=(2, 3)), dim=1)
        py = calm_scores(f, a)["p_y"]
        return py.clamp_min(torch.finfo(py.dtype).tiny).log()

    def meta(self) -> dict:
        return {"loss": self.loss, "backbone": self.arch, "feature_map": self.feature_map,
                "channels": self.channels, "num_classes": self.num_classes, "head_init": self.head_init}


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


def cam_loss(f: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference's CAM baseline: mean_b -log softmax(mean_z f)[y*]."""
    return F.nll_loss(F.log_softmax(f.mean(dim=(2, 3)), dim=1), targets)


def calm_loss(loss: str, f, a, targets) -> torch.Tensor:
    if loss == "em":
        return calm_em_loss(f, a, targets)
    if loss == "ml":
        return calm_ml_loss(f, a, targets)
    if loss == "cam":
        return cam_loss(f, targets)
    raise ValueError(f"the training method must be one of {TRAININGS}, not {loss!r}")


def class_probabilities(loss: str, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """p(y|x) [B, C] of a model trained with ``loss``: softmax(mean_z f) for CAM, sum_z p(y,z|x) for CALM."""
    if loss == "cam":
        return torch.softmax(f.mean(dim=(2, 3)), dim=1)
    return calm_scores(f, a)["p_y"]


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
        _conv_init(self.modules(), "he")  # the reference's 'he' initialisation

    def forward(self, x):
        x = self.conv6(self.features(x))
        return self.relu(self.bn6(x) if self.use_bn else x)


def _conv_init(modules, mode: str, generator: torch.Generator | None = None) -> None:
    """The reference's ``initialize_weights``: convolutions Xavier-uniform (``xavier``) or He-normal with fan-out
    (``he``), biases 0; batch norms weight 1, bias 0."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            if mode == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif mode == "xavier":
                nn.init.xavier_uniform_(m.weight, generator=generator)
            else:
                raise ValueError(f"initialisation must be he or xavier, not {mode!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _ReductionStride1(nn.Module):
    """The reference's ``Mixed_6a``: torchvision's InceptionB (same keys) with stride 1 and padding 1 in its two
    strided convolutions and its max-pool, so the 28x28 resolution is kept."""

    def __init__(self, in_channels: int, basic_conv):
        super().__init__()
        self.branch3x3 = basic_conv(in_channels, 384, kernel_size=3, stride=1, padding=1)
        self.branch3x3dbl_1 = basic_conv(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = basic_conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = basic_conv(96, 96, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        b1 = self.branch3x3(x)
        b2 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b2, F.max_pool2d(x, kernel_size=3, stride=1, padding=1)], 1)


class InceptionTrunk(nn.Module):
    """The reference CALM InceptionV3 trunk (naver-ai/calm ``network/inception.py``, key names kept): torchvision's
    Inception blocks up to ``Mixed_6e`` with the reference's changes (``Conv2d_1a_3x3`` padded by 1, max-pools
    padded by 1 with ceil mode, ``Mixed_6a`` at stride 1), then ``A3_1b`` (3x3 768->1024) and ``A3_2b`` (3x3
    1024->1024), each with an optional batch norm and a ReLU. ``feature_map``: ``large`` (the reference's
    ``--large_feature_map``: 28x28 at 224 px) or ``reference`` (a further 3x3 stride-2 max-pool after ``Mixed_5d``:
    14x14).

    How it differs from the reference, which cannot run: (1) the reference's cue head reads
    ``512 * self.block.expansion`` channels from a model without ``block`` and crashes at construction; here both
    heads read A3_2b's 1024 channels; (2) the reference computes ``Mixed_6e`` but feeds ``Mixed_6d``'s output to
    ``A3_1b`` (``feat = self.Mixed_6e(x)`` is never used), so its Mixed_6e weights are dead; here A3_1b reads
    Mixed_6e's output, as the block order says. The state-dict keys are the reference's, so a checkpoint made by a
    patched reference loads, but its A3_1b was trained on Mixed_6d's features."""

    def __init__(self, feature_map: str = "large", use_bn: bool = False):
        super().__init__()
        if feature_map not in ("large", "reference"):
            raise ValueError(f"InceptionV3 CALM feature_map must be large or reference, not {feature_map!r}")
        inc = import_torchvision().models.inception
        conv = inc.BasicConv2d
        self.feature_map, self.use_bn = feature_map, use_bn
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2, padding=1)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = inc.InceptionA(192, pool_features=32)
        self.Mixed_5c = inc.InceptionA(256, pool_features=64)
        self.Mixed_5d = inc.InceptionA(288, pool_features=64)
        self.Mixed_6a = _ReductionStride1(288, conv)
        self.Mixed_6b = inc.InceptionC(768, channels_7x7=128)
        self.Mixed_6c = inc.InceptionC(768, channels_7x7=160)
        self.Mixed_6d = inc.InceptionC(768, channels_7x7=160)
        self.Mixed_6e = inc.InceptionC(768, channels_7x7=192)

        def a3(c_in):
            return nn.Sequential(nn.Conv2d(c_in, 1024, 3, padding=1), *([nn.BatchNorm2d(1024)] if use_bn else []),
                                 nn.ReLU())

        self.A3_1b, self.A3_2b = a3(768), a3(1024)
        _conv_init(self.modules(), "xavier")  # the reference's initialisation (pretrained weights then load over it)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        if self.feature_map == "reference":
            x = F.max_pool2d(x, kernel_size=3, stride=2, ceil_mode=True)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        return self.A3_2b(self.A3_1b(x))

    def load_torchvision(self, sd: dict) -> list[str]:
        """Load torchvision's InceptionV3 weights (``Mixed_7*``, ``AuxLogits``, ``fc`` dropped, as the reference
        does); returns the keys left at their initialisation (``A3_*``)."""
        sd = {k: v for k, v in sd.items() if not k.startswith(("Mixed_7", "AuxLogits", "fc."))}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if unexpected or any(not k.startswith("A3_") for k in missing):
            raise ValueError(f"InceptionV3 weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return list(missing)


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


def _inception_base(base_weights: str, feature_map: str, device, seed: int) -> Base:
    fm = "reference" if feature_map == "standard" else feature_map
    torch.manual_seed(seed)
    trunk = InceptionTrunk(fm)
    if base_weights != "random":  # torchvision's InceptionV3 weights (the reference's inception_v3_google file)
        bundle = load_classifier("inception_v3", base_weights, device="cpu", seed=seed, channels_last=False)
        trunk.load_torchvision(bundle.net.state_dict())
    return Base(trunk.to(device), 1024, None)


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


def init_heads(model: CalmNet, fc: nn.Linear | None = None, seed: int = 0, mode: str = "official") -> None:
    """Initialise the two heads (seeded: a CPU generator seeded with ``seed``, class head drawn first).

    ``official`` (the reference's ``initialize_weights``, run over the whole model at construction): both heads
    Xavier-uniform with zero biases, He-normal (fan-out, ReLU) with zero biases for VGG16; other backbones, which
    the reference does not have, as ResNet50. A Xavier/He cue head can be 0 at every location of an image
    (``p(z|x) = 0/0``), as in the reference. ``classifier``: the class head copied from the classifier's ``fc``
    (its maps start equal to CAM; Xavier with zero bias when there is none or its classes differ) and a uniform
    cue head (weight 0, bias 1: ``a = 1``, ``p(z|x) = 1/(hw)``)."""
    if mode not in HEAD_INITS:
        raise ValueError(f"head initialisation must be one of {HEAD_INITS}, not {mode!r}")
    gen = torch.Generator().manual_seed(seed)
    heads = (model.conv_last, model.attention[0])
    with torch.no_grad():
        if mode == "official":
            kind = "he" if model.arch == "vgg16" else "xavier"
            for conv in heads:
                w = torch.empty_like(conv.weight, device="cpu")
                if kind == "he":
                    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
                else:
                    nn.init.xavier_uniform_(w, generator=gen)
                conv.weight.copy_(w)
                conv.bias.zero_()
            model.head_init = mode
            return
        if fc is not None and fc.out_features == model.num_classes:
            model.conv_last.weight.copy_(fc.weight.view(*fc.weight.shape, 1, 1))
            model.conv_last.bias.copy_(fc.bias)
        else:
            w = torch.empty_like(model.conv_last.weight, device="cpu")
            model.conv_last.weight.copy_(nn.init.xavier_uniform_(w, generator=gen))
            model.conv_last.bias.zero_()
        model.attention[0].weight.zero_()
        model.attention[0].bias.fill_(1.0)
    model.head_init = mode


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
    """``calm_resnet50`` -> (None, resnet50); ``calm_em_vgg16`` -> (em, vgg16); ``calm_cam_resnet50`` -> (cam,
    resnet50): the reference's CAM baseline on the same trunk."""
    if not name.startswith("calm_"):
        raise ValueError(f"{name!r} is not a CALM model name (calm_[cam_|em_|ml_]<backbone>)")
    rest = name[len("calm_"):]
    for loss in TRAININGS:
        if rest.startswith(loss + "_"):
            return loss, rest[len(loss) + 1:]
    return None, rest


def default_feature_map(arch: str) -> str:
    return "large" if arch in ("resnet50", "vgg16", "inception_v3") else "standard"


def build_calm(arch: str, loss: str, base_weights: str = "imagenet", feature_map: str | None = None,
               num_classes: int | None = None, device="cpu", seed: int = 0, head_init: str = "official") -> CalmNet:
    """A CALM (or CAM-baseline, ``loss="cam"``) model on ``arch`` whose trunk starts from the torchvision (or
    EfficientNet-Lite0) classifier with ``base_weights`` (``imagenet``, ``random`` or a state-dict file); heads as
    :func:`init_heads` ``head_init`` (``official`` or ``classifier``). ``num_classes`` other than the classifier's
    gives a fresh class head (e.g. a 200-class CUB model)."""
    feature_map = feature_map or default_feature_map(arch)
    if head_init not in HEAD_INITS:
        raise ValueError(f"head initialisation must be one of {HEAD_INITS}, not {head_init!r}")
    if arch == "inception_v3":
        base, classes = _inception_base(base_weights, feature_map, device, seed), num_classes or 1000
    else:
        bundle = load_classifier(arch, base_weights, device=device, seed=seed, channels_last=False)
        base = _base_from_classifier(arch, bundle, feature_map)
        classes = num_classes or bundle.num_classes
    torch.manual_seed(seed)
    model = CalmNet(base.trunk, base.channels, classes, loss, arch, feature_map)
    init_heads(model, base.fc if base.fc is not None and base.fc.out_features == classes else None, seed, head_init)
    return model.to(device)


def calm_from_checkpoint(path: str | Path, loss: str | None = None, arch: str | None = None,
                         feature_map: str | None = None, device="cpu") -> tuple[CalmNet, dict]:
    """Build the model a checkpoint describes and load it (strict). The authors' files record neither the
    training method nor the strides: ``loss`` (``cam``, ``em`` or ``ml``) must be given, and since CAM, CALM-EM and
    CALM-ML files have the same keys the model is loaded as stated with a :class:`CalmMethodWarning`;
    ``feature_map`` defaults to ``large`` (their published models)."""
    ck = read_checkpoint(path)
    meta = ck["meta"]
    sd = ck["state_dict"]
    arch = arch or meta.get("backbone") or meta.get("authors_architecture")
    if arch is None:
        raise ValueError(f"{path}: the backbone is not recorded; name it in the model (calm_em_resnet50)")
    recorded = meta.get("loss")
    if recorded and loss and recorded != loss:
        raise ValueError(f"{path} holds a {TRAINING_LABELS.get(recorded, recorded)} model, not "
                         f"{TRAINING_LABELS[loss]}: use calm_{recorded}_{arch} or calm_{arch}")
    if recorded:
        source = "recorded in the checkpoint"
    elif loss is None:
        raise ValueError(f"{path} does not say which method trained it (the authors' files do not, and CAM, CALM-EM "
                         f"and CALM-ML files have the same keys): name it in the model, --model calm_em_{arch}, "
                         f"calm_ml_{arch} or calm_cam_{arch}")
    else:
        source = ("stated by the model name: the checkpoint's keys cannot tell CAM, CALM-EM and CALM-ML apart "
                  "(the same conv_last and attention heads)")
        warnings.warn(f"{path}: the training method cannot be told from the checkpoint's keys (CAM, CALM-EM and "
                      f"CALM-ML checkpoints have the same keys); loaded as {TRAINING_LABELS[loss]}, as the model name "
                      f"says (calm_cam_/calm_em_/calm_ml_ state another)", CalmMethodWarning, stacklevel=2)
    loss = loss or recorded
    feature_map = feature_map or meta.get("feature_map") or default_feature_map(arch)
    num_classes = int(sd["conv_last.weight"].shape[0])
    if arch == "vgg16":
        use_bn = any(k.startswith("backbone.bn6") for k in sd)
        trunk, channels = VggTrunk("reference" if feature_map == "standard" else feature_map, use_bn), 1024
        model = CalmNet(trunk, channels, num_classes, loss, arch, feature_map)
    elif arch == "resnet50":  # no classifier to load, no forward pass
        trunk = _resnet_trunk(import_torchvision().models.resnet50(weights=None), feature_map)
        model = CalmNet(trunk, 2048, num_classes, loss, arch, feature_map)
    elif arch == "inception_v3":
        use_bn = any(k.startswith("backbone.A3_1b.1.") for k in sd)
        trunk = InceptionTrunk("reference" if feature_map == "standard" else feature_map, use_bn)
        model = CalmNet(trunk, 1024, num_classes, loss, arch, feature_map)
    else:
        model = build_calm(arch, loss, "random", feature_map, num_classes, device="cpu")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit a CALM {arch} ({ck['layout']} layout): missing keys "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    info = {"layout": ck["layout"], **meta, "loss": loss, "method": TRAINING_LABELS[loss], "method_source": source,
            "backbone": arch, "feature_map": feature_map}
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
    """A :class:`benchmark.models.ModelBundle` for ``calm_[cam_|em_|ml_]<backbone>``.

    ``weights``: a checkpoint (ours from ``train-calm``, or the authors' state dict), or ``imagenet``/``random``
    (the untrained starting point of ``train-calm``: the trunk from the classifier, the heads initialised as the
    reference, seeded with ``seed``; ``calm_em_efficientnet_lite0 --weights imagenet`` works offline)."""
    loss, arch = parse_calm_name(name)
    try:
        if weights in ("imagenet", "random"):
            if loss is None:
                raise ValueError(f"--model {name} --weights {weights} builds an untrained model: say which method "
                                 f"it is for, --model calm_em_{arch}, calm_ml_{arch} or calm_cam_{arch}")
            net = build_calm(arch, loss, weights, device="cpu", seed=seed)
            info = {"layout": "init", "loss": loss, "method": TRAINING_LABELS[loss], "backbone": arch,
                    "feature_map": net.feature_map, "base_weights": weights, "head_init": net.head_init}
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
        own = ("softmax(mean_z f), the CAM baseline's" if self.net.loss == "cam" else
               "sum_z p(y,z|x), the CALM model's")
        d["calm"] = {**(self.calm or {}), "output": "log p(y|x)", "scored_with":
                     f"softmax(net(x)) = the model's own p(y|x) = {own}; the explained class is its top-1 unless an "
                     "evaluation says otherwise (remove-classify --protocol calm: the ground-truth label)"}
        return d


def is_calm(model) -> bool:
    return isinstance(getattr(model, "net", None), CalmNet)

