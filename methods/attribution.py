"""Input-attribution baselines computed by captum, as in the Poly-CAM paper (Sec. 4.1, footnote 1).

Every method attributes the *logit* of the target class (captum's forward function is ``model.net``) with
respect to the normalised input ``x`` [B,3,H,W], and the [B,3,H,W] attribution is reduced to one map per image
by the ``reduction`` parameter (the paper: ``"sum"`` over the colour channels). Reductions:

    sum:      S = sum_c a_c          sum_abs: S = sum_c |a_c|          max_abs: S = max_c |a_c|

SmoothGrad's absolute value is a separate parameter (``abs``): it is applied by captum's ``Saliency`` to every
noisy sample's gradient *before* averaging, as the paper did; ``reduction`` then sums the averaged |gradients|.

captum's batch knobs bound every forward pass to ``self.batch_size`` model inputs: ``internal_batch_size``
(IG), ``nt_samples_batch_size`` (NoiseTunnel: samples per image per pass), ``perturbations_per_eval``
(Occlusion: windows per image per pass).
"""

from __future__ import annotations

import math

import torch

from benchmark.core.cost import Cost

from .base import Method, MethodError, register_method
from .cam_family import seeded_rng

REDUCTIONS = {
    "sum": lambda a: a.sum(dim=1),
    "sum_abs": lambda a: a.abs().sum(dim=1),
    "max_abs": lambda a: a.abs().amax(dim=1),
}


def reduce_channels(attr: torch.Tensor, reduction: str) -> torch.Tensor:
    """[B,C,H,W] attribution -> [B,H,W] map (see the module docstring)."""
    try:
        return REDUCTIONS[reduction](attr)
    except KeyError:
        raise MethodError(f"reduction must be one of {sorted(REDUCTIONS)}, not {reduction!r}") from None


IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")  # captum's


def per_image_share(batch_size: int, images: int) -> int:
    """How many perturbations / samples / steps of each image fit in one pass of ``batch_size`` inputs (>= 1)."""
    return max(1, int(batch_size) // max(1, images))


class CaptumMethod(Method):
    """A captum attribution of the target logits, reduced over channels by ``params["reduction"]``."""

    family = "gradient"
    needs_grad = True

    def attribute(self, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_params(self):
        self.require("reduction", self.params["reduction"] in REDUCTIONS, f"one of {sorted(REDUCTIONS)}")

    def explain(self, model, x, targets):
        attr = self.attribute(model, x.detach(), targets.to(x.device))
        return reduce_channels(attr.detach().float(), self.params["reduction"])


@register_method
class IntegratedGradients(CaptumMethod):
    """Integrated Gradients (Sundararajan et al. 2017), captum ``IntegratedGradients``:
    ``a = (x - x0) * int_0^1 dY_c/dx(x0 + t (x - x0)) dt`` with ``x0 = 0`` (the mean colour in normalised space),
    ``n_steps=50`` points of captum's default ``gausslegendre`` rule, ``internal_batch_size = self.batch_size``.
    """

    id = "integratedgradient"
    citation = "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017"
    paper_params = {"n_steps": 50, "method": "gausslegendre", "baseline": 0.0, "reduction": "sum"}
    quick_params = {"n_steps": 8}

    def check_params(self):
        super().check_params()
        self.require("n_steps", self.params["n_steps"] >= 1, ">= 1")
        self.require("method", self.params["method"] in IG_RULES, f"one of {sorted(IG_RULES)}")

    def attribute(self, model, x, targets):
        from captum.attr import IntegratedGradients as IG

        return IG(model.net).attribute(x, baselines=float(self.params["baseline"]), target=targets,
                                       n_steps=int(self.params["n_steps"]), method=self.params["method"],
                                       internal_batch_size=max(1, int(self.batch_size)))

    def cost(self, model):
        return Cost(backward=float(self.params["n_steps"]))


@register_method
class InputXGradient(CaptumMethod):
    """Input x Gradient (Shrikumar et al. 2016), captum ``InputXGradient``: ``a = x * dY_c/dx``, one backward pass
    for the whole batch."""

    id = "inputxgrad"
    citation = "Shrikumar et al., Not Just a Black Box, arXiv 2016"
    paper_params = {"reduction": "sum"}

    def attribute(self, model, x, targets):
        from captum.attr import InputXGradient as IxG

        return IxG(model.net).attribute(x.requires_grad_(True), target=targets)

    def cost(self, model):
        return Cost(backward=1.0)


@register_method
class SmoothGrad(CaptumMethod):
    """SmoothGrad (Smilkov et al. 2017), captum ``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``:
    ``a = (1/n) sum_i |dY_c/dx (x + e_i)|``, ``e_i ~ N(0, stdev^2)``, ``n = nt_samples = 50``, ``stdev = 1.0``.

    Noise scale: captum's ``stdevs`` is absolute, in the units of its input, here the *normalised* image, so
    ``stdev = 1.0`` is one ImageNet standard deviation (about 0.23 of the [0, 1] pixel range); the SmoothGrad
    paper states sigma as a fraction of (x_max - x_min) (e.g. 0.15). The noise comes from the global RNG seeded
    with ``self.seed`` for the call and is drawn for the whole batch, so the maps are reproducible for a given
    batch, seed and ``batch_size``. ``nt_samples_batch_size = batch_size // B`` samples per image per pass.
    """

    id = "smoothgrad"
    stochastic = True  # the noise draws follow nt_samples_batch_size, i.e. batch_size
    citation = "Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv 2017"
    paper_params = {"nt_samples": 50, "stdev": 1.0, "abs": True, "reduction": "sum"}
    quick_params = {"nt_samples": 8}

    def check_params(self):
        super().check_params()
        self.require("nt_samples", self.params["nt_samples"] >= 1, ">= 1")
        self.require("stdev", self.params["stdev"] >= 0, ">= 0")

    def attribute(self, model, x, targets):
        from captum.attr import NoiseTunnel, Saliency

        with seeded_rng(self.seed, x.device):
            return NoiseTunnel(Saliency(model.net)).attribute(
                x, nt_type="smoothgrad", nt_samples=int(self.params["nt_samples"]),
                nt_samples_batch_size=per_image_share(self.batch_size, x.shape[0]),
                stdevs=float(self.params["stdev"]), target=targets, abs=bool(self.params["abs"]))

    def cost(self, model):
        return Cost(backward=float(self.params["nt_samples"]))


def occlusion_windows(size: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Number of occlusion windows captum slides over an input of shape ``size`` (C, H, W)."""
    return math.prod(math.ceil((s - w) / st) + 1 for s, w, st in zip(size, window, stride))


@register_method
class Occlusion(CaptumMethod):
    """Occlusion (Zeiler and Fergus 2014), captum ``Occlusion``: a window (3, 64, 64) slid with stride (3, 8, 8)
    (441 windows at 224 px) is replaced by the baseline 0 (the mean colour); each pixel gets the mean of
    ``Y_c(x) - Y_c(x with the window occluded)`` over the windows covering it. ``perturbations_per_eval =
    batch_size // B`` windows per image per pass. All three channels share a window, so ``"sum"`` = 3x the value.
    """

    id = "occlusion"
    family = "perturbation"
    citation = "Zeiler and Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014"
    needs_grad = False
    paper_params = {"window": [3, 64, 64], "stride": [3, 8, 8], "baseline": 0.0, "reduction": "sum"}
    quick_params = {"stride": [3, 32, 32]}

    def check_params(self):
        super().check_params()
        for name in ("window", "stride"):
            v = self.params[name]
            self.require(name, len(v) == 3 and min(v) >= 1, "3 integers >= 1 (channels, height, width)")

    def attribute(self, model, x, targets):
        from captum.attr import Occlusion as Occ

        return Occ(model.net).attribute(
            x, sliding_window_shapes=tuple(self.params["window"]), strides=tuple(self.params["stride"]),
            baselines=float(self.params["baseline"]), target=targets,
            perturbations_per_eval=per_image_share(self.batch_size, x.shape[0]))

    def cost(self, model):
        side = model.input_size  # the windows depend on the run's image size
        n = occlusion_windows((3, side, side), tuple(self.params["window"]), tuple(self.params["stride"]))
        return Cost(forward=float(n + 1))
