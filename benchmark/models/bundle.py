"""A loaded model: the network in eval mode, its input normalisation, its weights' identity and its layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

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
    input_size: int = 224  # side of the square inputs the run feeds it (its profile's image size): costs use it

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

