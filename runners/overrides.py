"""``--set ID.PARAM=VALUE``: parameters of a method or a metric other than its paper / quick ones, for one run.

The values are recorded with the results (each method's and metric's ``params`` in the stores and the provenance),
so a store never mixes maps made with different parameters."""

from __future__ import annotations

import json

from methods.base import METHODS, MethodError, load_builtin_methods
from metrics.base import METRICS, load_builtin_metrics


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``--set`` values: ``["rise.n_masks=1000", 'pcampm.layers=["a","b"]']`` -> ``{"rise": {"n_masks": 1000},
    "pcampm": {...}}`` (values parsed as JSON, else kept as strings); ids are method or metric ids."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        mid, dot, param = key.partition(".")
        if not sep or not dot or not mid or not param:
            raise ValueError(f"--set takes METHOD.PARAM=VALUE or METRIC.PARAM=VALUE (e.g. rise.n_masks=1000), not "
                             f"{item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(mid, {})[param] = parsed
    return out


def check_recompute(cfg) -> None:
    """``--recompute``: every id names a registered method or metric; not with ``--shard k`` (one shard of a split,
    merged later: the folder's results are dropped by a command that merges, ``runners.sharded.recompute_sharded``)."""
    if not cfg.recompute:
        return
    load_builtin_methods()
    load_builtin_metrics()
    unknown = sorted(k for k in cfg.recompute if k not in METHODS and k not in METRICS)
    if unknown:
        raise MethodError(f"--recompute names {unknown}: neither a method nor a metric (registered methods: "
                          f"{', '.join(sorted(METHODS))}; metrics: {', '.join(sorted(METRICS))})")
    if cfg.shard:
        raise MethodError("--recompute drops the folder's stored results, so it runs in a command that merges: "
                          "without --shard (with --shards N, --executor ray, or in one process)")


def check_overrides(overrides: dict[str, dict]) -> None:
    """Every id of ``overrides`` names a registered method or metric (the parameters are checked when it is built)."""
    load_builtin_methods()
    load_builtin_metrics()
    unknown = sorted(k for k in overrides if k not in METHODS and k not in METRICS)
    if unknown:
        raise MethodError(f"--set names {unknown}: neither a method nor a metric (registered methods: "
                          f"{', '.join(sorted(METHODS))}; metrics: {', '.join(sorted(METRICS))})")
