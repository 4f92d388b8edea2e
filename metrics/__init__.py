"""Metrics. Importing the package registers every built-in metric (see :mod:`metrics.base`)."""

from .base import METRICS, Metric, MetricError, get_metric_class, register_metric  # noqa: F401
from . import insertion_deletion  # noqa: F401,E402
from . import sensitivity  # noqa: F401,E402
from . import remove_and_classify  # noqa: F401,E402
