"""Test plugin: a real gradient map that takes its time (0.4 s per call), so a run can be killed mid-way."""

import time

import torch

from methods import Method, register_method


@register_method
class SlowSaliency(Method):
    id = "slow_saliency"
    family = "plugin"
    citation = "test plugin"
    needs_grad = True

    def explain(self, model, x, targets):
        time.sleep(0.4)
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.net(x).gather(1, targets.view(-1, 1)).sum(), x)
        return g.abs().sum(1)
