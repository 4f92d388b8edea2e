"""The metric contract and its registry, the same shape as the method contract (:mod:`methods.base`).

A metric is a :class:`Metric` subclass registered under an id, with typed metadata (as Quantus's metrics): its
``category`` (what it measures), ``higher_is_better`` (the direction of a better score), ``paper_params`` and
``quick_params`` (the quick profile's cheaper parameters), its CSV prefix and whether it has a curve::

    @register_metric
    class MyMetric(Metric):
        id = "mymetric"
        category = "faithfulness"
        higher_is_better = True
        description = "..."
        paper_params = {"steps": 224}
        quick_params = {"steps": 16}

        def compute(self, model, x, maps, targets, explainer=None, prepared=None):
            ...  # -> {"value": [B]} (and {"curve": [B, S]} for a metric with a curve)

``compute(model, x, maps, targets)`` takes a batch of normalised images [B,3,H,W], their maps [B,H,W] and target
classes [B]. A metric that must re-run the explanation (max-sensitivity) sets ``needs_method = True``; the harness
then passes ``explainer``: a callable ``explainer(x, targets) -> [B,H,W]`` maps of the scored method (same model,
parameters and seed as the stored maps). Such a metric is not applicable to map ids that no registered method
computes (imported npz maps, Poly-CAM ablation maps); the run reports them as not applicable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from benchmark.core.cost import Cost
from benchmark.core.params import Parametrised
from benchmark.core.registry import Registry

CATEGORIES = ("faithfulness", "robustness", "localisation", "randomisation")


class MetricError(Exception):
    """Unknown metric, bad metric parameters or bad metric input."""


class Metric(Parametrised):
    """Base class of every metric; see the module docstring for the contract."""

    id: ClassVar[str] = ""
    params_error = MetricError
    category: ClassVar[str] = ""  # one of CATEGORIES
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    csv_prefix: ClassVar[str] = ""  # reference file names: <prefix>_auc_<model>_<method>.csv, <prefix>_details_...
    has_curve: ClassVar[bool] = False
    needs_method: ClassVar[bool] = False  # compute() gets ``explainer`` (see the module docstring)
    protocol: ClassVar[dict[str, str]] = {}  # fixed rules of the formula, recorded with the results

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
        raise MetricError(f"{self.id} has no derived input")

    def cost(self, model, method_cost: Cost | None = None) -> Cost:
        """Model passes per image and map; ``method_cost`` is the scored method's cost (for needs_method)."""
        raise NotImplementedError(f"{type(self).__name__} must implement cost()")

    def value_range(self) -> tuple[float, float] | None:
        """(low, high) that every per-image value must lie in, or None; a stored value outside is refused."""
        return None

    def compute(self, model, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                explainer=None, prepared: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")

    def describe(self) -> dict:
        return {"id": self.id, "category": self.category, "higher_is_better": self.higher_is_better,
                "description": self.description, "params": dict(self.params), "protocol": dict(self.protocol),
                "seed": self.seed, "needs_method": self.needs_method}


def _check_metric(cls: type[Metric]) -> None:
    if cls.category not in CATEGORIES:
        raise MetricError(f"metric {cls.id}: category must be one of {CATEGORIES}, not {cls.category!r}")
    if not cls.csv_prefix:
        raise MetricError(f"metric {cls.id}: csv_prefix must name its CSV files (e.g. 'ins')")


METRICS = Registry("metric", Metric, MetricError, check=_check_metric,
                   required={"category": str, "higher_is_better": bool, "description": str})
register_metric = METRICS.register  # class decorator: ``@register_metric``


def load_builtin_metrics() -> None:
    import metrics  # noqa: F401  (the package imports every built-in metric module)


def get_metric_class(metric_id: str) -> type[Metric]:
    load_builtin_metrics()
    return METRICS.lookup(metric_id)


def make_metric(metric_id: str, quick: bool = False, seed: int = 0, batch_size: int = 32, **overrides: Any) -> Metric:
    return get_metric_class(metric_id)(quick=quick, seed=seed, batch_size=batch_size, **overrides)
