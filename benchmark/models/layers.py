"""The layers of a model: the named presets of the paper's models, and discovery for any other CNN (one forward
pass with hooks): per spatial resolution, the stage output Poly-CAM and the CAM family use."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from benchmark.core.hooks import Hooks, OutputRecorder

from .bundle import ModelError

VGG16_LAYERS = {"paper": ["features.3", "features.8", "features.15", "features.22", "features.29"]}
RESNET50_LAYERS = {
    # What the reference code's automatic search picked for its main PCAM runs (the published numbers).
    "reference": ["relu", "layer2.0", "layer3.0", "layer4.0", "layer4"],
    # The list named in the paper's text (conv1, conv2_3, conv3_4, conv4_6, conv5_3); the reference's ablations.
    "paper_text": ["relu", "layer1", "layer2", "layer3", "layer4"],
}
PRESETS = {"vgg16": (VGG16_LAYERS, "paper", None), "resnet50": (RESNET50_LAYERS, "reference", "fc")}


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

    with Hooks() as hooks:
        for name, module in net.named_modules():
            if name:
                hooks.forward(module, hook(name, module))
        probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        net(probe.to(device))
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


_CHANNELS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def output_channels(net: nn.Module, layers: list[str], device: torch.device | str, size: int = 224) -> list[int]:
    """Channels of each named layer's output, from one hooked forward pass on a zero image (cached per network,
    layer list and size: the cost model asks for them often)."""
    cache = _CHANNELS.setdefault(net, {})
    key = (tuple(layers), size)
    if key not in cache:
        with OutputRecorder(net, layers) as rec:
            net(torch.zeros(1, 3, size, size, device=device))
        cache[key] = [int(rec.outputs[n].shape[1]) for n in layers]
    return cache[key]
