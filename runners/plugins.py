"""Plugins: a user's ``.py`` file (or module) that registers methods and/or metrics with ``@register_method`` /
``@register_metric``; once imported they go through every stage, metric and table like the built-in ones."""

from __future__ import annotations

from benchmark.core.registry import import_plugin
from methods.base import METHODS, MethodError, load_builtin_methods
from metrics.base import METRICS, load_builtin_metrics


def load_plugin(spec: str) -> dict[str, list[str]]:
    """Import the plugin ``spec`` (a .py path or a module name); return ``{"methods": ids, "metrics": ids}`` it
    registered. A file that registers nothing is refused with the reason."""
    load_builtin_methods()
    load_builtin_metrics()  # the built-ins first: a plugin may not take their ids

    before_m, before_k = set(METHODS), set(METRICS)
    try:
        module = import_plugin(spec)
    except ImportError as err:
        raise MethodError(str(err)) from err
    added = {"methods": sorted(set(METHODS) - before_m), "metrics": sorted(set(METRICS) - before_k)}
    mine = [c for c in list(METHODS.values()) + list(METRICS.values()) if c.__module__ == module.__name__]
    if not added["methods"] and not added["metrics"] and not mine:
        raise MethodError(f"plugin {spec} registered no method or metric (decorate a Method subclass with "
                          "@register_method, or a Metric subclass with @register_metric)")
    return added
