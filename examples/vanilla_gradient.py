"""A complete plugin: vanilla gradient saliency (Simonyan et al. 2014) in one file.

    python -m benchmark run --model efficientnet_lite0 --profile quick --limit 1 --plugin examples/vanilla_gradient.py

Map: ``S(i, j) = max_c |dY_t / dx_c(i, j)|`` with ``Y_t`` the logit of the explained class.
"""

import torch

from methods import Cost, Method, register_method


@register_method
class VanillaGradient(Method):
    id = "vanilla_gradient"
    family = "gradient"
    citation = "Simonyan et al., Deep Inside Convolutional Networks, ICLR workshop 2014"
    needs_grad = True
    paper_params = {"channel_reduction": "max_abs"}

    def explain(self, model, x, targets):
        x = x.detach().requires_grad_(True)
        logits = model.net(x)
        chosen = logits.gather(1, targets.view(-1, 1)).sum()  # images are independent: one backward for all
        (grad,) = torch.autograd.grad(chosen, x)
        return grad.abs().amax(dim=1)  # [B, H, W]

    def cost(self, model):
        return Cost(backward=1)
