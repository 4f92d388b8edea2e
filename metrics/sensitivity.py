r"""Max-sensitivity (Yeh et al. 2019), computed by captum as in the Poly-CAM paper (Appendix F, Table 5).

For an image ``x`` with clean top-1 class ``c`` and the scored method's explanation ``E(x, c)`` (a 224x224 map):

    SENS_max(x) = max_{k = 1..K} || E(x + d_k, c) - E(x, c) ||_F / || E(x, c) ||_F

with ``K = 10`` perturbations ``d_k`` drawn uniformly in the L-infinity ball of radius ``r = 0.02`` around the
*normalised* image (captum's ``default_perturb_func`` distribution), the Frobenius norm, and the class ``c`` kept
fixed (the perturbed images are explained for the clean top-1, not their own). Where ``||E(x)|| = 0`` captum
divides by 1. Lower is more robust.

The value is ``captum.metrics.sensitivity_max`` itself; only the noise source differs from captum's default,
which draws from the global RNG (so its values depend on what ran before and on how images are batched). Here
the noise of perturbation ``k`` of an image is a function of the run's seed, the image and ``k`` alone::

    key   = sha256 of the normalised image tensor (float32, C-contiguous, CPU bytes)
    s_k   = first 8 bytes (big-endian, masked to 63 bits) of sha256(f"{seed}:{key}:{k}")
    d_k   = (2 * torch.rand(shape, generator=torch.Generator("cpu").manual_seed(s_k)) - 1) * r

drawn on the CPU and moved to the device, so the value does not depend on the batch composition, the batch size
or the device's RNG. captum computes ``E(x)`` once more itself (the stored map is not reused), so one image costs
``(K + 1)`` times the method. Images go to captum in groups of ``max(1, batch_size // K)`` with
``max_examples_per_batch = group * K``: an image's ``K`` perturbed explanations run together, and an explainer
call holds at most ``max(K, batch_size)`` inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from benchmark.core.cost import Cost

from .base import Metric, MetricError, register_metric

SEED_RULE = ("d_k = (2 U - 1) r, U ~ torch.rand on a CPU torch.Generator seeded with the first 8 bytes "
             "(big-endian, & 2**63-1) of sha256('{seed}:{sha256 of the normalised float32 image}:{k}'), k = 0..K-1")


def image_key(image: torch.Tensor) -> str:
    """sha256 of one normalised image [3,H,W] as float32 CPU bytes: the identity its noise is derived from."""
    arr = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    return hashlib.sha256(arr.tobytes()).hexdigest()


def noise_seed(seed: int, key: str, k: int) -> int:
    """Seed of perturbation ``k`` of the image with ``key`` (see the module docstring)."""
    digest = hashlib.sha256(f"{seed}:{key}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2 ** 63 - 1)


def uniform_noise(shape, radius: float, seed: int) -> torch.Tensor:
    """Uniform noise in [-radius, radius) from a seeded CPU generator (float32)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (2.0 * torch.rand(tuple(shape), generator=gen, dtype=torch.float32) - 1.0) * radius


class SeededPerturbation:
    """captum ``perturb_func``: adds seeded uniform noise to the repeated inputs captum hands it.

    captum calls it with the batch repeated ``n`` times per image (``repeat_interleave``: row ``b * n + j`` is
    image ``b``), ``n`` perturbations per call, the calls following each other until ``K`` are drawn; the
    object counts the perturbations already drawn so that row ``b * n + j`` of the ``i``-th call gets
    perturbation ``k = (perturbations drawn before) + j`` of image ``b``. Use one object per
    ``sensitivity_max`` call.
    """

    def __init__(self, images: torch.Tensor, seed: int):
        self.keys = [image_key(im) for im in images]
        self.seed = int(seed)
        self.drawn = 0

    def __call__(self, inputs, perturb_radius: float):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        b = len(self.keys)
        if x.shape[0] % b:
            raise MetricError(f"captum passed {x.shape[0]} perturbed inputs for {b} images")
        n = x.shape[0] // b
        noise = torch.stack([uniform_noise(x.shape[1:], perturb_radius, noise_seed(self.seed, self.keys[i // n],
                                                                                   self.drawn + i % n))
                             for i in range(x.shape[0])])
        self.drawn += n
        return x + noise.to(device=x.device, dtype=x.dtype)


def captum_explanation_func(explainer):
    """Adapt ``explainer(x, targets) -> [B,H,W]`` to captum's ``explanation_func(inputs, target=...)``.

    captum passes the unperturbed inputs as a 1-tuple (the perturbed ones as ``perturb_func`` returns them) and
    iterates over what the function returns for the unperturbed inputs as a tuple of explanations (a bare
    tensor would be iterated image by image): the maps are returned as a 1-tuple ``([B,H,W],)``. captum does not
    expand a one-element target tensor (it treats it as one class for all): it is expanded here."""

    def explanation_func(inputs, target):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        target = torch.as_tensor(target, device=x.device).reshape(-1)
        if target.numel() == 1:
            target = target.expand(x.shape[0])
        return (explainer(x, target),)

    return explanation_func


def max_sensitivity(explainer, x: torch.Tensor, targets: torch.Tensor, seed: int, n_perturb: int = 10,
                    radius: float = 0.02, batch_size: int = 32) -> torch.Tensor:
    """[B] max-sensitivity of ``explainer`` at the normalised images ``x`` for the classes ``targets`` (formula and
    noise in the module docstring), via ``captum.metrics.sensitivity_max``."""
    from captum.metrics import sensitivity_max

    if n_perturb < 1:
        raise MetricError(f"max-sensitivity needs at least 1 perturbation, not {n_perturb}")
    if radius <= 0:
        raise MetricError(f"the perturbation radius must be > 0, not {radius}")
    group = max(1, batch_size // n_perturb)
    func = captum_explanation_func(explainer)
    out = []
    for start in range(0, x.shape[0], group):
        xs, ts = x[start:start + group], targets[start:start + group]
        sens = sensitivity_max(func, xs, perturb_func=SeededPerturbation(xs, seed), perturb_radius=radius,
                               n_perturb_samples=n_perturb, norm_ord="fro",
                               max_examples_per_batch=xs.shape[0] * n_perturb, target=ts)
        out.append(sens.reshape(-1))
    return torch.cat(out)


@register_metric
class MaxSensitivity(Metric):
    """Max-sensitivity of the scored method (captum ``sensitivity_max``; module docstring)."""

    id = "sensitivity"
    category = "robustness"
    csv_prefix = "sens"
    has_curve = False
    higher_is_better = False
    needs_method = True
    description = ("max-sensitivity: max over K uniform L-inf perturbations of ||E(x+d)-E(x)||_F / ||E(x)||_F, "
                   "clean top-1 class")
    # paper Appendix F: captum's defaults, 10 perturbations in an L-inf ball of radius 0.02; quick: 3
    paper_params = {"n_perturb_samples": 10, "perturb_radius": 0.02}
    quick_params = {"n_perturb_samples": 3}
    protocol = {"norm_ord": "fro", "noise": "uniform in the L-inf ball around the normalised image",
                "seed_rule": SEED_RULE, "target": "clean top-1 (fixed for the perturbed images)",
                "implementation": "captum.metrics.sensitivity_max; E(x) recomputed by captum"}

    def check_params(self):
        self.require("n_perturb_samples", self.params["n_perturb_samples"] >= 1, ">= 1")
        self.require("perturb_radius", self.params["perturb_radius"] > 0, "> 0")

    @property
    def n_perturb(self) -> int:
        return int(self.params["n_perturb_samples"])

    @property
    def radius(self) -> float:
        return float(self.params["perturb_radius"])

    def cost(self, model, method_cost: Cost | None = None) -> Cost:
        if method_cost is None:
            raise MetricError("the cost of max-sensitivity is (K + 1) times the scored method's: give method_cost")
        k = self.n_perturb + 1
        return Cost(forward=k * method_cost.forward, backward=k * method_cost.backward)

    def value_range(self) -> tuple[float, float]:
        return 0.0, float("inf")

    def compute(self, model, x, maps, targets, explainer=None, prepared=None):
        if explainer is None:
            raise MetricError("max-sensitivity re-runs the method on perturbed images: it needs the explainer of "
                              "the scored method (the harness passes it for registered methods)")
        value = max_sensitivity(explainer, x, targets, self.seed, self.n_perturb, self.radius, self.batch_size)
        return {"value": value.to(torch.float64)}
