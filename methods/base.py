"""The method contract and its registry.

A saliency method is a subclass of :class:`Method` registered under an ASCII id::

    @register_method
    class MyMethod(Method):
        id = "mymethod"
        family = "gradient"
        citation = "Me et al., 2026"
        needs_grad = True
        paper_params = {"steps": 50}
        quick_params = {"steps": 8}          # optional: cheaper parameters for the quick profile

        def explain(self, model, x, targets):  # x: [B,3,H,W] normalised; targets: [B] long
            ...                                  # -> [B,h,w] maps (any h,w: upsampled to 224 by the harness)

A method that derives several maps from one computation (Poly-CAM: PCAM+, PCAM-, PCAM+- and the ablation
maps from one set of masked passes) lists the extra ids in ``variants`` and returns ``{id: maps}`` holding its
own id and every variant; the harness stores each under its own id and skips a method whose maps are all
stored already (methods with variants run first, so ``pcamp`` is free once ``pcampm`` has run).

``python -m benchmark methods`` lists the registry; ``--plugin FILE_OR_MODULE`` imports a user's file
(:mod:`runners.plugins`), whose ``@register_method`` classes then go through maps, every metric and the tables like
the built-in ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from benchmark.core.cost import Cost
from benchmark.core.params import Parametrised
from benchmark.core.registry import Registry


class MethodError(Exception):
    """Unknown method, bad plugin, or a method that cannot run on this model."""


class NotApplicable(MethodError):
    """The method is not defined for this model (e.g. CAM without a GAP + Linear head)."""


class Method(Parametrised):
    """Base class of every saliency method; see the module docstring for the contract."""

    id: ClassVar[str] = ""
    params_error = MethodError
    family: ClassVar[str] = ""  # "cam", "gradient", "perturbation", "polycam", "calm", "plugin", ...
    citation: ClassVar[str] = ""
    needs_grad: ClassVar[bool] = False
    # extra map ids derived in the same computation; may be a property that depends on the model (Poly-CAM's
    # ablation ids follow its layer count): the harness calls check_applicable(model) before reading it
    variants: tuple[str, ...] = ()
    # True when the maps depend on batch_size (noise drawn per batch): the harness then always passes --batch-size
    # (default 32 CPU / 128 GPU), never the tuned pass size, so the maps are the same on every machine
    stochastic: ClassVar[bool] = False

    # -- what a method implements ------------------------------------------------------------------------
    def explain(self, model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Return [B,h,w] saliency maps for the normalised images ``x`` [B,3,H,W] and classes ``targets`` [B]
        (or ``{id: maps}`` for ``self.id`` and every id in ``variants``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement explain()")

    def check_applicable(self, model) -> None:
        """Raise :class:`NotApplicable` with the reason when the method is not defined for ``model``."""

    def cost(self, model) -> Cost:
        """Model passes per image at ``model.input_size`` (for the cost model and the dry run)."""
        return Cost(backward=1.0) if self.needs_grad else Cost(forward=1.0)

    # -- what the harness calls --------------------------------------------------------------------------
    @property
    def output_ids(self) -> tuple[str, ...]:
        return (self.id, *self.variants)

    def __call__(self, model, x: torch.Tensor, targets: torch.Tensor, size: int = 224) -> torch.Tensor:
        """Maps of ``self.id`` as float32 [B,size,size] (see :meth:`compute_all` for every output)."""
        return self.compute_all(model, x, targets, size)[self.id]

    def compute_all(self, model, x: torch.Tensor, targets: torch.Tensor, size: int = 224) -> dict[str, torch.Tensor]:
        """{output id: float32 [B,size,size] maps}, upsampled bilinearly (align_corners=False) when needed."""
        with torch.enable_grad() if self.needs_grad else torch.no_grad():
            out = self.explain(model, x, targets)
        if not isinstance(out, dict):
            out = {self.id: out}
        missing = set(self.output_ids) - set(out)
        if missing:
            raise MethodError(f"{self.id} returned no maps for {sorted(missing)}")
        return {k: self._check_maps(k, out[k], x.shape[0], size) for k in self.output_ids}

    def _check_maps(self, key: str, maps, batch: int, size: int) -> torch.Tensor:
        if not isinstance(maps, torch.Tensor):
            maps = torch.as_tensor(maps)
        maps = maps.detach()
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim != 3 or maps.shape[0] != batch:
            raise MethodError(f"{key} returned maps of shape {tuple(maps.shape)}; expected [B,h,w] with B={batch}")
        maps = maps.float()
        if maps.shape[-2:] != (size, size):
            maps = F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return maps

    def describe(self) -> dict:
        return {"id": self.id, "family": self.family, "citation": self.citation, "needs_grad": self.needs_grad,
                "params": dict(self.params), "seed": self.seed, "class": f"{type(self).__module__}."
                f"{type(self).__qualname__}"}


METHODS = Registry("method", Method, MethodError)
register_method = METHODS.register  # class decorator: ``@register_method``


def load_builtin_methods() -> None:
    import methods  # noqa: F401  (the package imports every built-in method module)


def get_method_class(method_id: str) -> type[Method]:
    load_builtin_methods()
    return METHODS.lookup(method_id)


def make_method(method_id: str, quick: bool = False, seed: int = 0, batch_size: int = 32, **overrides: Any) -> Method:
    return get_method_class(method_id)(quick=quick, seed=seed, batch_size=batch_size, **overrides)
