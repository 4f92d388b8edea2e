"""Zoom-CAM (Shi et al. 2021), written here in the style of Poly-CAM (no library provides it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.core.cost import Cost

from .base import Method, MethodError, register_method
from .cam_family import activations_and_gradients, minmax

# "all the layers/blocks" of the Poly-CAM paper's footnote 1 (the Zoom-CAM code's defaults for VGG16).
ZOOMCAM_LAYERS = {
    "vgg16": [f"features.{i}" for i in (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)],  # the 13 conv ReLUs
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
}


@register_method
class ZoomCAM(Method):
    """Zoom-CAM: per layer ``Z_l = minmax(ReLU(sum_k A_l,k * dY_c/dA_l,k))`` (element-wise product, dense
    gradient weights; ``Y_c`` the logit of the target class), fused from the deepest layer to the shallowest:
    ``P = Z_L``, then ``P = max(up(P, size(Z_l)), Z_l)`` with ``up`` bilinear (``align_corners=False``; the
    identity between layers of equal size). The map has the shallowest layer's resolution.

    ``layers="preset"``: VGG16's 13 conv ReLUs (``features.1 ... features.29``), ResNet50's ``relu, layer1 ..
    layer4``, any other model its Poly-CAM layers; ``layers="polycam"``: ``model.polycam_layers``. All layers'
    gradients come from ONE backward pass (forward hooks on the layer outputs, ``autograd.grad`` on all).
    ``minmax`` is ``(Z - min) / (max - min + 1e-8)``; the reference code's ``(Z - min) / max`` is the same map
    whenever ``Z`` has a zero pixel, which a ReLU'd map almost always has.
    """

    id = "zoomcam"
    family = "cam"
    citation = "Shi et al., Zoom-CAM: Generating Fine-grained Pixel Annotations from Image Labels, ICPR 2021"
    needs_grad = True
    paper_params = {"layers": "preset"}

    def check_params(self):
        self.require("layers", self.params["layers"] in ("preset", "polycam"), "'preset' or 'polycam'")

    def layers(self, model) -> list[str]:
        choice = self.params["layers"]
        if choice == "preset":
            return list(ZOOMCAM_LAYERS.get(model.name, model.polycam_layers))
        if choice == "polycam":
            return list(model.polycam_layers)
        raise MethodError(f"zoomcam: layers must be 'preset' or 'polycam', not {choice!r}")

    def explain(self, model, x, targets):
        acts, grads = activations_and_gradients(model, x, targets, self.layers(model))
        cams = [minmax(torch.relu((a.float() * g.float()).sum(dim=1))) for a, g in zip(acts, grads)]
        return fuse_deepest_first(cams)

    def cost(self, model):
        return Cost(backward=1.0)


def fuse_deepest_first(cams: list[torch.Tensor]) -> torch.Tensor:
    """``P = cams[-1]``; for each shallower map ``Z``: ``P = max(up(P, size(Z)), Z)`` (maps [B,h,w], shallow first)."""
    fused = cams[-1]
    for cam in reversed(cams[:-1]):
        if fused.shape[-2:] != cam.shape[-2:]:
            fused = F.interpolate(fused[:, None], size=tuple(cam.shape[-2:]), mode="bilinear",
                                  align_corners=False)[:, 0]
        fused = torch.maximum(fused, cam)
    return fused
