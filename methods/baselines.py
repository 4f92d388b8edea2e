"""Model-independent baselines: maps that look at neither the model nor the class, the floor every method should
clear. They need no model pass (``cost() == Cost()``), so ``run`` computes them by default with every registered
method, and the tables show them apart, marked as the floor (:mod:`benchmark.outputs.tables`).

* ``random_map``: one uniform random value per pixel, ``U[0, 1)``, drawn on a CPU ``torch.Generator`` whose seed
  is derived from the run's seed and the image's content alone (:data:`RANDOM_RULE`), so the map does not depend on
  the batch, the batch size or the device, and another ``--seed`` gives another map.
* ``centre_prior``: an isotropic Gaussian centred on the image (the photographer's bias: objects sit in the
  middle), ``exp(-d^2 / (2 s^2))`` with ``d`` the distance of a pixel to the image centre ``((H-1)/2, (W-1)/2)``
  and ``s = sigma * min(H, W)`` (``sigma`` = 0.25: a quarter of the side). The same map for every image; it is
  not constant over the pixels, so it ranks them.
* ``edge_map``: the Sobel gradient magnitude of the image's channel mean, ``sqrt(Gx^2 + Gy^2)`` with ``Gx`` the
  cross-correlation with ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` and ``Gy`` with its transpose, on the model-input
  image in [0, 1] (the normalisation undone with the model's mean and std), borders replicated (so the image's
  frame is not an edge).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.cost import Cost

from .base import Method, register_method

RANDOM_RULE = ("U[0,1) per pixel from torch.rand on a CPU torch.Generator seeded with the first 8 bytes "
               "(big-endian, & 2**63-1) of sha256('{seed}:{sha256 of the normalised float32 image}:random_map')")
CENTRE_RULE = "exp(-d^2 / (2 s^2)), d = distance to ((H-1)/2, (W-1)/2), s = sigma * min(H, W)"
EDGE_RULE = ("sqrt(Gx^2 + Gy^2), Sobel kernels [[-1,0,1],[-2,0,2],[-1,0,1]] and its transpose, on the channel mean "
             "of the [0,1] image (x * std + mean), replicate padding")
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def image_key(image: torch.Tensor) -> str:
    """sha256 of one normalised image [3,H,W] as float32 C-contiguous CPU bytes (the rule of
    :func:`metrics.sensitivity.image_key`)."""
    arr = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    return hashlib.sha256(arr.tobytes()).hexdigest()


def image_seed(seed: int, key: str, salt: str) -> int:
    """First 8 bytes (big-endian) of ``sha256(f"{seed}:{key}:{salt}")``, masked to 63 bits."""
    digest = hashlib.sha256(f"{seed}:{key}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2 ** 63 - 1)


class ModelIndependent(Method):
    """Common parts: family ``baseline``, no gradient, no model pass, the formula in :meth:`describe`."""

    family = "baseline"
    needs_grad = False
    rule: str = ""

    def cost(self, model) -> Cost:
        return Cost()

    def describe(self) -> dict:
        return {**super().describe(), "rule": self.rule}


@register_method
class RandomMap(ModelIndependent):
    """Uniform random map, ``U[0, 1)`` per pixel at the input's resolution; per image, the generator's seed is
    derived from the run's seed and the image's content (:data:`RANDOM_RULE`): the map of an image does not depend
    on the batch it is in."""

    id = "random_map"
    citation = "model-independent floor (a uniform random ranking of the pixels)"
    rule = RANDOM_RULE

    def explain(self, model, x, targets):
        h, w = x.shape[-2:]
        maps = [torch.rand((h, w), generator=torch.Generator("cpu").manual_seed(
            image_seed(self.seed, image_key(im), self.id)), dtype=torch.float32) for im in x]
        return torch.stack(maps).to(x.device)


def centre_prior(h: int, w: int, sigma: float) -> torch.Tensor:
    """[h, w] isotropic Gaussian centred on the image, ``s = sigma * min(h, w)`` (:data:`CENTRE_RULE`)."""
    s = float(sigma) * min(h, w)
    yy = torch.arange(h, dtype=torch.float64) - (h - 1) / 2.0
    xx = torch.arange(w, dtype=torch.float64) - (w - 1) / 2.0
    d2 = yy[:, None] ** 2 + xx[None, :] ** 2
    return torch.exp(-d2 / (2.0 * s * s)).float()


@register_method
class CentrePrior(ModelIndependent):
    """Isotropic Gaussian centred on the image, the same for every image (:data:`CENTRE_RULE`)."""

    id = "centre_prior"
    citation = "model-independent floor (centre bias of photographs, e.g. Judd et al., ICCV 2009)"
    paper_params = {"sigma": 0.25}
    rule = CENTRE_RULE

    def explain(self, model, x, targets):
        sigma = float(self.params["sigma"])
        if not sigma > 0:
            raise ValueError(f"centre_prior: sigma must be > 0, not {sigma}")
        prior = centre_prior(x.shape[-2], x.shape[-1], sigma).to(x.device)
        return prior.expand(x.shape[0], -1, -1).clone()


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """[B, H, W] -> [B, H, W]: Sobel gradient magnitude, borders replicated."""
    kx = torch.tensor(SOBEL_X, dtype=gray.dtype, device=gray.device).view(1, 1, 3, 3)
    g = F.pad(gray[:, None], (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(g, kx), F.conv2d(g, kx.transpose(2, 3))
    return torch.sqrt(gx * gx + gy * gy)[:, 0]


@register_method
class EdgeMap(ModelIndependent):
    """Sobel gradient magnitude of the channel mean of the model-input image in [0, 1] (:data:`EDGE_RULE`)."""

    id = "edge_map"
    citation = "model-independent floor (Sobel edges; cf. Adebayo et al., Sanity Checks for Saliency Maps, 2018)"
    rule = EDGE_RULE

    def explain(self, model, x, targets):
        mean = torch.tensor(model.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(model.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        with torch.autocast(x.device.type, enabled=False):  # the formula in float32 under any --precision
            x01 = x.float() * std + mean
            return sobel_magnitude(x01.mean(dim=1))
