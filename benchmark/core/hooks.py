"""One helper for forward hooks: registered through one object, removed together when the block ends, even on
an error. Every hook of the harness goes through it.

    with Hooks() as hooks:                              # any function per module
        hooks.forward(module, lambda m, inp, out: ...)
        hooks.pre_forward(module, lambda m, inp: ...)

    with OutputRecorder(net, ["layer3", "layer4"]) as rec:   # the outputs of named modules
        net(x)
    rec.outputs["layer4"]                                # the tensor of its last call

A module called several times in one pass (a shared activation) keeps its last call, as in the reference code;
``calls`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class Hooks:
    """Forward and pre-forward hooks, removed together on :meth:`remove` or on leaving the ``with`` block."""

    def __init__(self):
        self._handles: list = []

    def forward(self, module: nn.Module, fn: Callable) -> None:
        """``fn(module, inputs, output)`` after every call of ``module``."""
        self._handles.append(module.register_forward_hook(fn))

    def pre_forward(self, module: nn.Module, fn: Callable) -> None:
        """``fn(module, inputs)`` before every call of ``module``."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False


def named_modules(net: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The modules of ``net`` named ``names`` (a clear error for a missing one)."""
    modules = dict(net.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"the network has no module(s) {missing}")
    return [modules[n] for n in names]


class OutputRecorder(Hooks):
    """The output of each named module of ``net`` (the last call wins), and how often each was called.

    ``clone=True`` keeps a copy (an in-place operation later in the network must not change it);
    ``detach=False`` keeps the tensor in the autograd graph (to take gradients with respect to it).
    """

    def __init__(self, net: nn.Module, names: Sequence[str], clone: bool = False, detach: bool = True):
        super().__init__()
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self._modules = named_modules(net, self.names)
        self._clone, self._detach = clone, detach

    def __enter__(self):
        try:
            for name, module in zip(self.names, self._modules):
                self.forward(module, self._keep(name))
        except BaseException:
            self.remove()
            raise
        return self

    def _keep(self, name: str) -> Callable:
        def fn(_m, _inp, out):
            self.calls[name] += 1
            if self._detach:
                out = out.detach()
            self.outputs[name] = out.clone() if self._clone else out
        return fn

    def pop(self, name: str) -> torch.Tensor:
        return self.outputs.pop(name)
