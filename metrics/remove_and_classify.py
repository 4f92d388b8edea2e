r"""Remove-and-classify (CALM paper; the authors' ``eval_remove_classify.py``), usable for every method.

For each fraction ``k`` in (0.1, 0.3, 0.5, 0.7, 0.9) of the H*W pixels, ``n_k = int(k H W)`` pixels of the
normalised image are set to the zero baseline (zero in normalised space = the dataset mean colour), once the
``n_k`` most attributed pixels of the map (descending order, stable sort: ties in raster order; the reference uses
``torch.topk``, whose tie order is unspecified) and once ``n_k`` pixels drawn at random. An image counts as
correct when the model's top-1 class on the erased image equals the explained class (the clean top-1).

The dataset score per ``k`` is the ratio (lower is better: the map found what the model needs)

    ratio_k = sum_images correct_topk(k) / sum_images correct_random(k)

Per-image storage (the Metric contract): ``curve`` = the 10 correctness bits
``[topk(0.1), ..., topk(0.9), random(0.1), ..., random(0.9)]`` and ``value`` = mean_k (topk(k) - random(k))
(lower is better). :func:`ratios_from_curves` turns stored curves into the ratios.

Random pixels of image ``b`` for fraction index ``j``: ``torch.randperm(H*W)`` on a CPU generator seeded with
:func:`metrics.sensitivity.noise_seed` ``(seed, sha256 of the normalised float32 image, j)``: a function of the
run's seed, the image and ``k`` alone (not of the batch).

The authors' choices, used by ``remove-classify --protocol calm`` (:mod:`runners.remove_classify`): the ranking of
``topk_masks(..., ranking="topk")`` is theirs (``torch.topk`` over all H*W values, prefix of ``int(k H W)``), and
:func:`numpy_random_masks` draws the random pixels as their ``random_mask_generator``: ``numpy`` ``choice(H*W,
int(H*W*k), replace=False)`` from one RandomState, batch by batch, k by k, image by image (so with the seed of
their ``--seed`` and their batch size the same pixels).
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.core.cost import Cost

from .base import Metric, MetricError, register_metric
from .sensitivity import image_key, noise_seed

ERASE_K = (0.1, 0.3, 0.5, 0.7, 0.9)
RANKINGS = ("stable", "topk")


def topk_masks(maps: torch.Tensor, ks=ERASE_K, ranking: str = "stable") -> torch.Tensor:
    """[B, K, H, W] bool: True where pixels are erased (the ``int(k H W)`` highest of each map). ``ranking``:
    ``stable`` (descending stable sort: ties in raster order) or ``topk`` (the authors' ``torch.topk(k=H*W)``,
    whose order among equal values is the kernel's)."""
    b, h, w = maps.shape
    if ranking == "stable":
        order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    elif ranking == "topk":
        order = maps.flatten(1).topk(k=h * w, dim=1)[1]
    else:
        raise MetricError(f"ranking must be one of {RANKINGS}, not {ranking!r}")
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=maps.device).expand_as(order))
    n = torch.tensor([int(k * h * w) for k in ks], device=maps.device)
    return (ranks[:, None, :] < n[None, :, None]).view(b, len(ks), h, w)


def random_masks(x: torch.Tensor, seed: int, ks=ERASE_K) -> torch.Tensor:
    """[B, K, H, W] bool: ``int(k H W)`` random pixels per image and k (see the module docstring)."""
    b, _, h, w = x.shape
    out = torch.zeros(b, len(ks), h * w, dtype=torch.bool)
    for i in range(b):
        key = image_key(x[i])
        for j, k in enumerate(ks):
            gen = torch.Generator(device="cpu").manual_seed(noise_seed(seed, key, j))
            out[i, j, torch.randperm(h * w, generator=gen)[: int(k * h * w)]] = True
    return out.view(b, len(ks), h, w).to(x.device)


def numpy_random_masks(rng: np.random.RandomState, shape: tuple[int, int, int], ks=ERASE_K) -> torch.Tensor:
    """[B, K, H, W] bool for one batch of ``shape`` (B, H, W), drawn as the authors' ``random_mask_generator``
    called once per k: for each k, for each image, ``rng.choice(H*W, size=int(H*W*k), replace=False)``."""
    b, h, w = shape
    out = torch.zeros(b, len(ks), h * w, dtype=torch.bool)
    for j, k in enumerate(ks):
        for i in range(b):
            out[i, j, torch.from_numpy(rng.choice(h * w, size=int(h * w * k), replace=False))] = True
    return out.view(b, len(ks), h, w)


@torch.no_grad()
def erased_correct(net: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """[B, K] float 0/1: top-1 of ``net`` on ``x`` with ``masks`` pixels set to 0 equals ``targets``."""
    b, kk = masks.shape[:2]
    out = torch.empty(b * kk, device=x.device)
    for start in range(0, b * kk, batch_size):
        idx = torch.arange(start, min(start + batch_size, b * kk), device=x.device)
        img, j = idx // kk, idx % kk
        inputs = torch.where(masks[img, j][:, None], torch.zeros((), device=x.device, dtype=x.dtype), x[img])
        pred = net(inputs.contiguous(memory_format=torch.channels_last)).argmax(dim=1)
        out[start:start + len(idx)] = (pred == targets[img]).float()
    return out.view(b, kk)


def ratios_from_curves(curves, ks=ERASE_K) -> dict[float, float]:
    """{k: sum topk-correct / sum random-correct} from stored [N, 2K] curves (NaN when no random-erased image
    is classified correctly)."""
    if isinstance(curves, torch.Tensor):
        c = curves.detach().to("cpu", torch.float64)
    else:  # a copy: an array read from a CSV may be a read-only pandas view
        c = torch.tensor(np.array(curves, dtype=np.float64))
    if c.ndim != 2 or c.shape[1] != 2 * len(ks):
        raise MetricError(f"remove-and-classify curves must be [N, {2 * len(ks)}], not {tuple(c.shape)}")
    top, rnd = c[:, : len(ks)].sum(0), c[:, len(ks):].sum(0)
    return {k: (top[j] / rnd[j]).item() if rnd[j] > 0 else float("nan") for j, k in enumerate(ks)}


@register_metric
class RemoveAndClassify(Metric):
    id = "remove_classify"
    category = "faithfulness"
    higher_is_better = False
    has_curve = True
    csv_prefix = "rc"
    description = ("remove-and-classify (CALM): top-1 kept after erasing the top-k attributed pixels vs k random "
                   "pixels (zero baseline), k = 0.1..0.9; dataset ratio sum(top-k)/sum(random), lower is better")
    paper_params = {"k": list(ERASE_K)}
    protocol = {"baseline": "zero in normalised space (mean colour)",
                "correct": "top-1 after erasure == clean top-1 (the explained class)",
                "curve": "[topk correct (one per k), random correct (one per k)]", "value": "mean_k (topk - random)",
                "ranking": "descending, stable (ties in raster order)",
                "random": "randperm on a CPU generator seeded by noise_seed(seed, sha256(image), k index)"}

    def check_params(self):
        k = self.params["k"]
        self.require("k", len(k) >= 1 and all(0 < v < 1 for v in k), "a list of fractions in (0, 1)")

    @property
    def ks(self) -> tuple[float, ...]:
        return tuple(float(k) for k in self.params["k"])

    @property
    def curve_length(self) -> int:
        return 2 * len(self.ks)

    def cost(self, model, method_cost=None) -> Cost:
        return Cost(forward=float(2 * len(self.ks)))

    def value_range(self) -> tuple[float, float]:
        return -1.0, 1.0

    @torch.no_grad()
    def compute(self, model, x, maps, targets, explainer=None, prepared=None):
        if maps.shape != (x.shape[0], *x.shape[-2:]):
            raise MetricError(f"maps of shape {tuple(maps.shape)} do not match images {tuple(x.shape)}")
        masks = torch.cat([topk_masks(maps.to(x.device, torch.float32), self.ks),
                           random_masks(x, self.seed, self.ks)], dim=1)
        curve = erased_correct(model.net, x, masks, targets, self.batch_size)
        k = len(self.ks)
        return {"value": (curve[:, :k] - curve[:, k:]).mean(dim=1), "curve": curve}
