r"""Insertion and deletion (Petsiuk et al. 2018) with the Poly-CAM reference protocol (docs/protocol.md).

Pixels are ranked by descending saliency (stable sort: ties keep raster order; one rank per pixel, shared by
the three channels). With ``S`` steps of ``P = HW / S`` pixels (paper: 224 steps of 224 pixels), sample
``s = 0..S-1`` holds the first ``P (s + 1)`` ranked pixels:

    insertion_s = p_c( M_s * x + (1 - M_s) * b )      deletion_s = p_c( M_s * b + (1 - M_s) * x )

with ``p_c`` the softmax probability of the clean image's top-1 class ``c``, ``x`` the normalised image and
``b`` the baseline: a Gaussian blur of ``x`` (11x11, sigma 5, reflect padding: torchvision ``gaussian_blur``)
for *both* curves. There is no 0-pixel point. ``AUC = (1/S) sum_s curve_s`` (rectangle rule).
"""

from __future__ import annotations

import torch

from benchmark.core.cost import Cost
from benchmark.core.passes import class_probabilities
from benchmark.models.tv_compat import import_torchvision

from .base import Metric, MetricError, register_metric


def blur_baseline(x: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur of normalised images [B,3,H,W], torchvision ``gaussian_blur`` semantics."""
    import_torchvision()
    from torchvision.transforms.v2.functional import gaussian_blur

    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """rank[b, i] = position of pixel i in the descending, stable order of maps[b] (0 = most salient)."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def perturbation_curves(net: torch.nn.Module, x: torch.Tensor, baseline: torch.Tensor, maps: torch.Tensor,
                        targets: torch.Tensor, steps: int, mode: str, batch_size: int) -> torch.Tensor:
    """[B, steps] probabilities of ``targets`` along the insertion or deletion path (see module docstring).

    All B * steps perturbed inputs are built on the device and go through the model ``batch_size`` at a time,
    mixing images and steps in one pass, so the result does not depend on the batch size.
    """
    if mode not in ("insertion", "deletion"):
        raise MetricError(f"mode must be insertion or deletion, not {mode!r}")
    b, _, h, w = x.shape
    if maps.shape != (b, h, w):
        raise MetricError(f"maps of shape {tuple(maps.shape)} do not match images {tuple(x.shape)}")
    if (h * w) % steps:
        raise MetricError(f"{h}x{w} pixels cannot be split into {steps} equal steps")
    per_step = (h * w) // steps
    ranks = pixel_ranks(maps).view(b, 1, h, w)
    thresholds = torch.arange(1, steps + 1, device=x.device) * per_step
    first, second = (x, baseline) if mode == "insertion" else (baseline, x)

    def make_inputs(k: torch.Tensor) -> torch.Tensor:
        img, step = k // steps, k % steps
        keep_first = ranks[img] < thresholds[step].view(-1, 1, 1, 1)
        return torch.where(keep_first, first[img], second[img])

    probs = class_probabilities(net, make_inputs, b * steps, targets.repeat_interleave(steps), batch_size)
    return probs.view(b, steps)


class _PerturbationMetric(Metric):
    category = "faithfulness"
    has_curve = True
    mode = ""
    paper_params = {"steps": 224, "blur_kernel": 11, "blur_sigma": 5.0}
    quick_params = {"steps": 16}
    protocol = {"baseline": "Gaussian blur of the normalised image (torchvision gaussian_blur, reflect padding)",
                "ranking": "descending saliency, stable sort (ties in raster order), one rank per pixel",
                "score": "softmax probability of the clean top-1 class", "auc": "mean of the curve (rectangle)"}

    def check_params(self):
        self.require("steps", self.params["steps"] >= 1, ">= 1")
        k = self.params["blur_kernel"]
        self.require("blur_kernel", k >= 1 and k % 2 == 1, "an odd integer >= 1")
        self.require("blur_sigma", self.params["blur_sigma"] > 0, "> 0")

    @property
    def steps(self) -> int:
        return int(self.params["steps"])

    @property
    def curve_length(self) -> int:
        return self.steps

    @property
    def prepare_key(self) -> str:
        return f"gaussian_blur({self.params['blur_kernel']},{self.params['blur_sigma']})"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return blur_baseline(x, int(self.params["blur_kernel"]), float(self.params["blur_sigma"]))

    def cost(self, model, method_cost=None) -> Cost:
        return Cost(forward=float(self.steps))

    def value_range(self) -> tuple[float, float]:
        return 0.0, 1.0  # a mean of softmax probabilities

    @torch.no_grad()
    def compute(self, model, x, maps, targets, explainer=None, prepared=None):
        base = self.prepare(x) if prepared is None else prepared  # the harness blurs each image once per run
        curve = perturbation_curves(model.net, x, base, maps.to(x.device, torch.float32), targets, self.steps,
                                    self.mode, self.batch_size)
        return {"value": curve.mean(dim=1), "curve": curve}


@register_metric
class Insertion(_PerturbationMetric):
    id = "insertion"
    mode = "insertion"
    higher_is_better = True
    csv_prefix = "ins"
    description = "insertion AUC: most salient pixels of the image inserted into its blurred copy"


@register_metric
class Deletion(_PerturbationMetric):
    id = "deletion"
    mode = "deletion"
    higher_is_better = False
    csv_prefix = "del"
    description = "deletion AUC: most salient pixels replaced by the blurred copy"
