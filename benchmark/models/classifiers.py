"""Classifiers: torchvision models and EfficientNet-Lite0, their weights (``imagenet``, ``random`` or a state-dict
file), normalisation and layers, as a :class:`~benchmark.models.bundle.ModelBundle`."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .bundle import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, ModelBundle, ModelError
from .efficientnet import efficientnet_lite0
from .layers import PRESETS, discover_layers, find_gap_linear_head
from .tv_compat import import_torchvision
from .weights import load_state_dict, weights_identity


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
        net.load_state_dict(load_state_dict(weights))
    except RuntimeError as err:
        raise ModelError(f"weights file {weights} does not fit {name}: {str(err)[:500]}") from None
    return net, weights


def load_classifier(name: str, weights: str = "imagenet", device: str | torch.device = "cpu", seed: int = 0,
                    channels_last: bool = True) -> ModelBundle:
    """Build the classifier, load its weights (``imagenet``, ``random`` with ``seed``, or a state-dict file)."""
    if weights == "random":
        torch.manual_seed(seed)
    if name in ("efficientnet_lite0", "efficientnet-lite0"):
        try:
            net, path = efficientnet_lite0(weights)
        except RuntimeError as err:
            raise ModelError(f"weights file {weights} does not fit efficientnet_lite0: {str(err)[:500]}") from None
        name, mean, std, fc = "efficientnet_lite0", LITE_MEAN, LITE_STD, "fc"
    else:
        net, path = _torchvision_model(name, weights)
        mean, std, fc = IMAGENET_MEAN, IMAGENET_STD, None
    net = net.eval().requires_grad_(False)
    sha = weights_identity(net, path)
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
                       weights_sha256=sha,
                       layer_sets=layer_sets, polycam_preset=preset, fc=fc, device=device, num_classes=num_classes)


@torch.no_grad()
def _num_classes(net: nn.Module, device: torch.device) -> int:
    return int(net(torch.zeros(1, 3, 224, 224, device=device)).shape[-1])

