"""``load_model(name, weights, device, seed)``: any model the harness runs, as a ModelBundle.

``calm_[em_|ml_]<backbone>`` names a CALM model (:mod:`.calm`); every other name a classifier
(:mod:`.classifiers`: vgg16, resnet50, efficientnet_lite0 or any torchvision classification CNN)."""

from __future__ import annotations

import torch

from .bundle import ModelBundle, ModelError
from .calm import load_calm_model
from .classifiers import available_models, load_classifier


def check_model_name(name: str) -> None:
    """Raise ModelError for a classifier name that is neither efficientnet_lite0 nor a torchvision classification
    model (CALM names are checked when their model loads); cheap, so a run can say it before anything else."""
    if not name.startswith("calm_") and name not in available_models():
        raise ModelError(f"unknown model {name!r}. Use vgg16, resnet50, efficientnet_lite0 or any torchvision "
                         "classification model (python -m benchmark models lists them).")


def load_model(name: str, weights: str = "imagenet", device: str | torch.device = "cpu", seed: int = 0,
               channels_last: bool = True) -> ModelBundle:
    """The model ``name`` with ``weights`` (``imagenet``, ``random`` with ``seed``, or a file) on ``device``."""
    if name.startswith("calm_"):
        return load_calm_model(name, weights, device, seed, channels_last)
    return load_classifier(name, weights, device, seed, channels_last)


__all__ = ["available_models", "load_model"]
