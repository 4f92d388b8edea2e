"""CAM-family baselines computed by torchcam, as in the Poly-CAM paper (target: the model's last conv layer).

torchcam returns one map per image at the layer's resolution, min-max normalised (its default, as the paper
ran it); the harness upsamples it bilinearly to 224x224.
"""

from __future__ import annotations

import torch

from .base import Cost, Method, NotApplicable, register_method


class TorchcamMethod(Method):
    """One torchcam extractor class applied to ``model.last_conv`` for a batch, one class index per image."""

    family = "cam"
    extractor_name = ""

    def extractor_kwargs(self, model) -> dict:
        return {}

    def explain(self, model, x, targets):
        import torchcam.methods as tcm

        cls = getattr(tcm, self.extractor_name)
        with cls(model.net, target_layer=model.last_conv, **self.extractor_kwargs(model)) as extractor:
            # Parameters are frozen: gradient methods need the input to require grad for dY/dA to exist.
            scores = model.net(x.detach().requires_grad_(True) if self.needs_grad else x)
            maps = extractor(class_idx=targets.tolist(), scores=scores)
        return maps[0]


@register_method
class CAM(TorchcamMethod):
    """CAM (Zhou et al. 2016): ``L_c = sum_k w_{c,k} A_k`` with ``w`` the weights of the Linear after global average
    pooling, on the last conv layer (torchcam ``CAM``; no ReLU, min-max normalised).

    Defined only for models whose head is global average pooling + one Linear (ResNet50, EfficientNet-Lite0).
    VGG16's head is three Linear layers on the flattened 7x7 map, so CAM is *not applicable* to it: the harness
    reports it as such rather than substituting another method (the Poly-CAM paper reports no CAM for VGG16).
    """

    id = "cam"
    citation = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    extractor_name = "CAM"

    def check_applicable(self, model):
        if model.fc is None:
            raise NotApplicable(f"cam needs a global-average-pooling + Linear head; {model.name} has none "
                                "(VGG16's classifier is three Linear layers on the flattened 7x7 map)")

    def extractor_kwargs(self, model):
        return {"fc_layer": model.fc}

    def cost(self, model):
        return Cost(forward=1.0)


@register_method
class GradCAM(TorchcamMethod):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij dY_c/dA_k(i,j)`` with ``Y_c`` the
    logit of the target class, on the last conv layer (torchcam ``GradCAM``, min-max normalised)."""

    id = "gradcam"
    citation = "Selvaraju et al., Grad-CAM, ICCV 2017"
    needs_grad = True
    extractor_name = "GradCAM"
