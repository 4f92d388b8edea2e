"""The one place methods and metrics are built for a run: with the run's profile (paper or quick parameters), its
``--set`` overrides, seed and inputs per pass, at construction.

Inputs per pass: deterministic methods and every metric get the run's pass size (``--batch-size``, else the tuned
size: their results do not depend on it); methods whose noise draws follow the batch (``stochastic``) always get
``--batch-size`` (default 32 CPU / 128 GPU), so their maps are the same on every machine.
"""

from __future__ import annotations

from methods.base import METHODS, Method, MethodError, NotApplicable, get_method_class, load_builtin_methods
from metrics.base import Metric, get_metric_class

from .context import DEFAULT_METRICS, RunContext


def method_batch_size(ctx: RunContext, cls: type[Method]) -> int:
    return ctx.resolve_batch_size() if getattr(cls, "stochastic", False) else ctx.resolve_pass_batch_size()


def build_method(ctx: RunContext, method_id: str, **overrides) -> Method:
    """The method ``method_id`` with the run's parameters, seed and inputs per pass."""
    cls = get_method_class(method_id)
    params = {**ctx.cfg.overrides.get(method_id, {}), **overrides}
    return cls(quick=ctx.profile.quick, seed=ctx.cfg.seed, batch_size=method_batch_size(ctx, cls), **params)


def build_methods(ctx: RunContext, ids: list[str] | None) -> tuple[list[Method], dict[str, str]]:
    """(methods, {id: reason not applicable}). Asked explicitly (``ids``) and not applicable to the model: an
    error before any work. Default (None: all registered): the ones not applicable are reported and left out."""
    explicit = ids is not None
    ids = list(ids) if explicit else sorted(METHODS)
    out, skipped = [], {}
    for mid in ids:
        method = build_method(ctx, mid)
        try:
            method.check_applicable(ctx.model)
        except NotApplicable as err:
            if explicit:
                raise
            skipped[mid] = str(err)
            continue
        out.append(method)
    return out, skipped


def in_run_order(methods: list[Method]) -> list[Method]:
    """Methods deriving several maps first: the maps they also produce are then already stored."""
    return sorted(methods, key=lambda m: -len(m.variants))


def build_metric(ctx: RunContext, metric_id: str, **overrides) -> Metric:
    """The metric ``metric_id`` with the run's parameters, seed and inputs per pass."""
    cls = get_metric_class(metric_id)
    params = {**ctx.cfg.overrides.get(metric_id, {}), **overrides}
    return cls(quick=ctx.profile.quick, seed=ctx.cfg.seed, batch_size=ctx.resolve_pass_batch_size(), **params)


def build_metrics(ctx: RunContext, ids: list[str] | None = None) -> list[Metric]:
    return [build_metric(ctx, m) for m in (ids or ctx.cfg.metrics or list(DEFAULT_METRICS))]


def explainer_for(ctx: RunContext, mid: str, stored_attrs: dict):
    """``explainer(x, targets) -> [B,H,W]``: recompute the stored map ``mid`` with the same method class,
    parameters and seed (for metrics that re-explain perturbed inputs). Raises NotApplicable for map ids no
    registered method computes (imported maps, ablation maps) or maps stored with other parameters."""
    if mid not in METHODS:
        raise NotApplicable(f"no registered method computes {mid!r} on its own (imported or derived maps)")
    method = build_method(ctx, mid)
    stored = stored_attrs.get("params")
    if stored is not None and stored != method.params and stored_attrs.get("produced_by") == mid:
        raise NotApplicable(f"the stored maps of {mid} were made with other parameters ({stored})")
    size = ctx.profile.image_size

    def explain(x, targets):
        return method.compute_all(ctx.model, x, targets, size)[mid]

    explain.method = method
    return explain


def method_catalogue() -> list[dict]:
    """Every registered method: id, family, gradient or not, paper parameters, citation."""
    load_builtin_methods()
    rows = []
    for mid in sorted(METHODS):
        cls = METHODS[mid]
        try:
            params = cls().params
        except MethodError:
            params = dict(cls.paper_params)
        rows.append({"id": mid, "family": cls.family, "needs_grad": cls.needs_grad, "params": params,
                     "citation": cls.citation})
    return rows
