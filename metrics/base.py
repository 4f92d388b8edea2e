"""The metric contract and its registry (with Quantus-style metadata: which direction is better, what it costs).

A metric is a :class:`Metric` subclass registered under an id. ``compute(model, x, maps, targets)`` takes a
batch of normalised images [B,3,H,W], their maps [B,H,W] and target classes [B], and returns per-image values
``{"value": [B], "curve": [B,S]}`` (``curve`` only where there is one).

A metric that must re-run the explanation (max-sensitivity) sets ``needs_method = True``; the harness then passes
``explainer``: a callable ``explainer(x, targets) -> [B,H,W]`` maps of the scored method (same model, parameters
and seed as the stored maps). Such a metric is not applicable to map ids that no registered method computes
(imported npz maps, Poly-CAM ablation maps); the run reports them as not applicable.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from methods.base import Cost


class MetricError(Exception):
    """Unknown metric or bad metric input."""


class Metric:
    id: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    csv_prefix: ClassVar[str] = ""  # reference file names: <prefix>_auc_<model>_<method>.csv, <prefix>_details_...
    has_curve: ClassVar[bool] = False
    needs_method: ClassVar[bool] = False  # compute() gets ``explainer`` (see the module docstring)

    def __init__(self, profile, batch_size: int = 32, seed: int = 0):
        self.profile = profile
        self.batch_size = batch_size
        self.seed = seed

    @property
    def params(self) -> dict:
        return {}

    @property
    def curve_length(self) -> int:
        return 0

    @property
    def prepare_key(self) -> str | None:
        """Name of a per-image input derived from the image alone (e.g. the blurred baseline), or None. Metrics
        with the same key share it: the harness computes :meth:`prepare` once per image and passes it to
        :meth:`compute` as ``prepared``."""
        return None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The derived input of :attr:`prepare_key` for images ``x`` (each image independently)."""
        raise NotImplementedError

    def cost(self, model, method_cost: Cost | None = None) -> Cost:
        """Model passes per image and map; ``method_cost`` is the scored method's cost (for needs_method)."""
        raise NotImplementedError

    def compute(self, model, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                explainer=None, prepared: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"id": self.id, "higher_is_better": self.higher_is_better, "description": self.description,
                "params": self.params, "seed": self.seed,
                "needs_method": self.needs_method}


METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    METRICS[cls.id] = cls
    return cls


def get_metric_class(metric_id: str) -> type[Metric]:
    import metrics  # noqa: F401  (registers the built-in metrics)

    try:
        return METRICS[metric_id]
    except KeyError:
        raise MetricError(f"unknown metric {metric_id!r}; registered: {', '.join(sorted(METRICS))}") from None
