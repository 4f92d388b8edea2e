"""RISE (Petsiuk et al. 2018), written here in the style of Poly-CAM (the paper ran github.com/eclique/RISE)."""

from __future__ import annotations

import math

import torch

from benchmark.core.cost import Cost
from benchmark.core.passes import class_probabilities

from .base import Method, MethodError, register_method

SUM_CHUNK = 256  # masks per matmul of the saliency sum: fixed, so the result does not depend on batch_size


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] linear-interpolation weights with pixel-centre alignment and mirror edges, i.e. scikit-image
    ``resize(order=1, mode="reflect", anti_aliasing=False)`` along one axis (what the reference RISE code uses)."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    i0 = torch.floor(src)
    frac = src - i0
    i0 = i0.long()

    def mirror(i):  # -1 -> 1, n_in -> n_in - 2 (only these two are ever out of range)
        i = torch.where(i < 0, -i, i)
        return torch.where(i > n_in - 1, 2 * (n_in - 1) - i, i).clamp(0, n_in - 1)

    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, mirror(i0)), 1 - frac, accumulate=True)
    w.index_put_((rows, mirror(i0 + 1)), frac, accumulate=True)
    return w


class RiseMasks:
    """The N random masks of one run, drawn from ``seed`` and materialised on demand, chunk by chunk.

    As in Petsiuk et al.: a binary ``s x s`` grid (each cell 1 with probability ``p1``), upsampled linearly to
    ``(s + 1) * cell`` pixels (``cell = ceil(H / s)``), then cropped to H x W at a random shift in
    ``[0, cell)`` per axis. The random numbers (grids, then row shifts, then column shifts) come from a CPU
    ``torch.Generator`` seeded with ``seed``, so the masks are the same on every device; the masks themselves
    are built on the device as ``Wy[shift_y : shift_y + H] @ grid @ Wx[shift_x : shift_x + W]^T`` (separable
    interpolation: two small matmuls per chunk), so the 6000 full masks (1.2 GB at 224 px) never need to be
    held at once.
    """

    def __init__(self, n: int, s: int, p1: float, seed: int, size: tuple[int, int], device: torch.device):
        if n < 1 or s < 2 or not 0.0 < p1 <= 1.0:
            raise MethodError(f"rise: need n_masks >= 1, s >= 2 and 0 < p1 <= 1 (got {n}, {s}, {p1})")
        h, w = size
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        grid = (torch.rand(n, s, s, generator=gen) < p1).float()
        cell_h, cell_w = math.ceil(h / s), math.ceil(w / s)
        shift_y = torch.randint(0, cell_h, (n,), generator=gen)
        shift_x = torch.randint(0, cell_w, (n,), generator=gen)
        self.n, self.p1, self.size, self.device = n, p1, (h, w), device
        self.grid = grid.to(device)
        self.wy = interpolation_matrix(s, (s + 1) * cell_h).float().to(device)
        self.wx = interpolation_matrix(s, (s + 1) * cell_w).float().to(device)
        self.rows = (shift_y[:, None] + torch.arange(h)).to(device)  # [N, H] rows of the upsampled grid
        self.cols = (shift_x[:, None] + torch.arange(w)).to(device)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Masks ``idx`` (1-D tensor of mask indices on the device) as [len, H, W] float32 (also under a bf16
        autocast: the masks and the saliency sum stay float32, only the model's passes use the run's precision)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.wy[self.rows[idx]] @ self.grid[idx] @ self.wx[self.cols[idx]].transpose(1, 2)


_MASKS: dict[tuple, RiseMasks] = {}


def rise_masks(n: int, s: int, p1: float, seed: int, size: tuple[int, int], device) -> RiseMasks:
    """Cached per (input size, parameters, seed, device): every image of a run shares the same masks."""
    key = (int(n), int(s), float(p1), int(seed), tuple(size), str(torch.device(device)))
    if key not in _MASKS:
        if len(_MASKS) > 8:
            _MASKS.clear()
        _MASKS[key] = RiseMasks(int(n), int(s), float(p1), int(seed), tuple(size), torch.device(device))
    return _MASKS[key]


@torch.no_grad()
def rise_saliency(net: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, masks: RiseMasks,
                  batch_size: int) -> torch.Tensor:
    """``S = sum_i p_c(x * M_i) M_i / (N p1)`` for each image of ``x`` [B,3,H,W] -> [B,H,W].

    All B * N masked inputs (image-major) go through the model ``batch_size`` at a time, masks built on the
    device (benchmark.core.passes.class_probabilities: no host copy in the loop); then the weighted sum is one
    [B, chunk] x [chunk, H*W] matmul per chunk of ``SUM_CHUNK`` masks, accumulated on the device.
    """
    b, _, h, w = x.shape
    n = masks.n
    mask_index = torch.arange(n, device=x.device)

    def make_inputs(k: torch.Tensor) -> torch.Tensor:
        return masks(k % n)[:, None] * x[k // n]

    probs = class_probabilities(net, make_inputs, b * n, targets.to(x.device).repeat_interleave(n), batch_size)
    probs = probs.view(b, n).float()
    sal = torch.zeros(b, h * w, device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        for start in range(0, n, SUM_CHUNK):
            idx = mask_index[start:start + SUM_CHUNK]
            sal.addmm_(probs[:, start:start + len(idx)], masks(idx).view(len(idx), h * w))
    return (sal / (n * masks.p1)).view(b, h, w)


@register_method
class RISE(Method):
    """RISE: ``S_c = (1 / (N p1)) sum_i p_c(x * M_i) M_i`` with ``p_c`` the softmax probability of the target
    class and ``M_i`` N = 6000 random masks (grid s = 8, p1 = 0.1; see :class:`RiseMasks`), masking the
    normalised image (baseline 0, the mean colour), as the reference code did. The masks are drawn from
    ``self.seed`` (recorded with the method) and shared by all images of a run; the map is not normalised.
    """

    id = "rise"
    family = "perturbation"
    citation = "Petsiuk et al., RISE: Randomized Input Sampling for Explanation of Black-box Models, BMVC 2018"
    paper_params = {"n_masks": 6000, "s": 8, "p1": 0.1}
    quick_params = {"n_masks": 500}

    def check_params(self):
        self.require("n_masks", self.params["n_masks"] >= 1, ">= 1")
        self.require("s", self.params["s"] >= 2, ">= 2 (cells of the coarse grid)")
        self.require("p1", 0.0 < self.params["p1"] <= 1.0, "in (0, 1]")

    def masks(self, size: tuple[int, int], device) -> RiseMasks:
        p = self.params
        return rise_masks(p["n_masks"], p["s"], p["p1"], self.seed, size, device)

    def explain(self, model, x, targets):
        return rise_saliency(model.net, x, targets, self.masks(tuple(x.shape[-2:]), x.device), self.batch_size)

    def cost(self, model):
        return Cost(forward=float(self.params["n_masks"]))
