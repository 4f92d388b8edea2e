r"""Cascading model-parameter randomisation (Adebayo et al. 2018; Poly-CAM paper Sec. 4.4, Appendix G).

**Layer order.** The layers randomised are the ``nn.Conv2d`` and ``nn.Linear`` modules of the network, in the
reverse of the order in which a forward pass first calls them (one hooked forward pass on a zero image): the
output layer first, the first convolution last. Modules a forward pass never calls are left out. (For VGG16 this
is the module registration order reversed: 16 steps, ``classifier.6`` ... ``features.0``.) BatchNorm and other
layers keep their trained parameters (Adebayo et al.; Quantus also re-initialises BatchNorm).

**Cascade.** Step ``s = 1..L`` re-initialises the ``s``-th layer of that order with its own
``reset_parameters()``, the layers of steps ``1..s-1`` staying randomised: the network at step ``s`` has its top
``s`` layers random. The draw of step ``s`` is seeded: the layer is moved to the CPU, ``torch.manual_seed(seed +
s)`` is set inside ``torch.random.fork_rng`` (the caller's RNG state is untouched), ``reset_parameters()`` runs,
and the layer goes back to its device: the randomised weights depend on the seed and the step only, not on the
device. The trained network is never modified (the cascade works on a deep copy).

**Similarity to the trained model's map** (Adebayo et al.'s measures), on the 224x224 maps ``a`` (trained model)
and ``b`` (randomised model):

- ``spearman``: Spearman rank correlation of the pixel values of ``a`` and ``b`` (``scipy.stats.spearmanr``,
  ties get their average rank);
- ``spearman_abs``: the same on ``|a|`` and ``|b|``;
- ``ssim``: ``skimage.metrics.structural_similarity`` of the min-max normalised maps
  (``n(m) = (m - min m) / (max m - min m)``, a constant map becomes all zeros), ``data_range=1``, skimage's other
  defaults (7x7 uniform window, K1 = 0.01, K2 = 0.03);
- ``hog``: Pearson correlation of the HOG feature vectors of the min-max normalised maps
  (``skimage.feature.hog``: 9 orientations, 16x16-pixel cells, 2x2-cell blocks, L2-Hys; Adebayo et al. compare
  HOG features with the Pearson correlation).

A rank or Pearson correlation involving a constant map (or HOG vector) is undefined and recorded as NaN (a
randomised network can give an all-zero Grad-CAM map); SSIM is defined for constant maps.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from benchmark.core.hooks import Hooks
from benchmark.core.ranks import spearman

RANDOMISED_TYPES = (nn.Conv2d, nn.Linear)
SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (16, 16), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}
SSIM_PARAMS = {"data_range": 1.0, "win_size": 7}


# ------------------------------------------------------------------------------------------------- layers
@torch.no_grad()
def randomisation_order(net: nn.Module, image_size: int = 224, device=None) -> list[str]:
    """Names of the Conv2d and Linear modules of ``net``, from the output to the input: the reverse of their
    first call in one forward pass on a zero image (modules never called are left out)."""
    device = device if device is not None else next(net.parameters()).device
    seen: list[str] = []
    with Hooks() as hooks:
        for name, mod in net.named_modules():
            if isinstance(mod, RANDOMISED_TYPES):
                hooks.forward(mod, lambda _m, _i, _o, name=name: seen.append(name) if name not in seen else None)
        net(torch.zeros(1, 3, image_size, image_size, device=device))
    if not seen:
        raise ValueError("the network has no Conv2d or Linear layer used in its forward pass: nothing to randomise")
    return seen[::-1]


def reset_layer(layer: nn.Module, seed: int) -> None:
    """Re-initialise ``layer`` in place with ``reset_parameters()`` under ``torch.manual_seed(seed)``, drawn on the
    CPU (device-independent), without touching the caller's RNG state."""
    device = next(layer.parameters()).device
    layer.to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer.reset_parameters()
    layer.to(device)


def cascade(net: nn.Module, order: list[str], seed: int):
    """Yield ``(step, layer name, randomised net)`` for ``step = 1..len(order)``: a deep copy of ``net`` whose
    layers ``order[:step]`` are re-initialised (step ``s`` seeded by ``seed + s``). The same copy is updated in
    place from step to step (do not keep it across steps); ``net`` itself is never modified."""
    rand = copy.deepcopy(net)
    rand.eval()
    modules = dict(rand.named_modules())
    for step, name in enumerate(order, start=1):
        reset_layer(modules[name], seed + step)
        yield step, name, rand


def randomised_model(net: nn.Module, order: list[str], step: int, seed: int) -> nn.Module:
    """A deep copy of ``net`` with the layers ``order[:step]`` re-initialised exactly as :func:`cascade` does."""
    rand = copy.deepcopy(net).eval()
    modules = dict(rand.named_modules())
    for s, name in enumerate(order[:step], start=1):
        reset_layer(modules[name], seed + s)
    return rand


# ------------------------------------------------------------------------------------------- similarities
def minmax(m: np.ndarray) -> np.ndarray:
    """``(m - min m) / (max m - min m)`` as float64; a constant map gives zeros."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``|a|`` and ``|b|``."""
    return spearman(np.abs(a), np.abs(b))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the min-max normalised maps (``data_range=1``, 7x7 uniform window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(minmax(a), minmax(b), **SSIM_PARAMS))


def hog_features(m: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    return hog(minmax(m), **HOG_PARAMS)


def hog_similarity(a: np.ndarray, b: np.ndarray, features_a: np.ndarray | None = None) -> float:
    """Pearson correlation of the HOG feature vectors of the min-max normalised maps (NaN if one is constant)."""
    fa = hog_features(a) if features_a is None else features_a
    fb = hog_features(b)
    if np.ptp(fa) == 0 or np.ptp(fb) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(fa, fb)[0, 1])


def similarities(reference: np.ndarray, other: np.ndarray, reference_hog: np.ndarray | None = None) -> dict:
    """{spearman, spearman_abs, ssim, hog} of ``other`` to ``reference`` (NaN everywhere if ``other`` is not
    finite)."""
    other = np.asarray(other)
    if not np.isfinite(other).all():
        return dict.fromkeys(SIMILARITIES, float("nan"))
    return {"spearman": spearman(reference, other), "spearman_abs": spearman_abs(reference, other),
            "ssim": ssim(reference, other), "hog": hog_similarity(reference, other, reference_hog)}


def describe() -> dict:
    """The exact choices, for the provenance."""
    return {"layers": "Conv2d and Linear, reverse order of first call in a forward pass (output first)",
            "reset": "module.reset_parameters() on the CPU after torch.manual_seed(seed + step); BatchNorm kept",
            "spearman": "scipy.stats.spearmanr of the pixel values (average ranks for ties); NaN if a map is "
                        "constant",
            "spearman_abs": "the same on absolute values",
            "ssim": {"function": "skimage.metrics.structural_similarity", "maps": "min-max normalised",
                     **SSIM_PARAMS},
            "hog": {"function": "Pearson correlation of skimage.feature.hog vectors", "maps": "min-max normalised",
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in HOG_PARAMS.items()}}}
