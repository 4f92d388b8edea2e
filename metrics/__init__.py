"""Floor 2, the metrics: one module per metric family (formula, parameters, cost, metadata); imports only the core
and the models. Importing the package registers every built-in metric (see :mod:`metrics.base` for the contract)."""

import importlib
import pkgutil

from .base import METRICS, Metric, MetricError, get_metric_class, make_metric, register_metric  # noqa: F401

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
