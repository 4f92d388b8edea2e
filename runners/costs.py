"""The cost model: model passes per stage of a run, a short calibration of the model's throughput, an ETA.

Every method declares ``Method.cost(model) -> Cost(forward, backward)`` and every metric
``Metric.cost(model, method_cost)``: model passes *per image* (``forward``: forward-only passes; ``backward``:
forward+backward passes). A run of ``N`` selected images needs

    clean forward:        N forward passes (the explained class)
    maps of method m:     N * cost_m                              (methods whose maps another one derives: 0)
    metric k on map id j: N * cost_k(model, cost_method(j))       (not applicable: 0)

``cost_method(j)`` is the cost of the registered method with id ``j`` (None for derived or imported maps: a
metric that re-runs the method is not applicable to them). Poly-CAM's cost is an upper bound: constant channels
are skipped at run time. ``N`` counts the work left: an image whose result is stored already in the run folder
(:class:`Stored`) is not counted, so the dry run and the progress bar of a resumed run show what is still to do.

Calibration gives the model's steady-state forward passes/s (no_grad) and forward+backward passes/s (gradient of
the summed target logits with respect to the input, as gradient methods do) at the run's inputs per pass, each a
timed block after an untimed warm-up pass (cold costs excluded), measured once per machine, model and precision and
stored (:func:`runners.tuning.cached_rates`)::

    ETA = sum_stages forward / R_forward + backward / R_backward
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from benchmark.core.cost import Cost
from methods.base import METHODS, NotApplicable
from metrics.base import MetricError

from .context import DEFAULT_METRICS, RunContext
from .factory import build_methods, build_metrics, in_run_order
from .sanity_units import CONVENTIONS, unit_path, unit_reads
from .store import DONE, IMG_BAD
from .tuning import cached_rates


@dataclass
class StageCost:
    """Passes of one stage for ``images`` images: ``per_image`` and the totals."""

    stage: str  # "clean", "maps" or "metrics"
    key: str  # "targets", a method id, or "<metric>/<map id>"
    images: int
    per_image: Cost
    note: str = ""

    @property
    def forward(self) -> float:
        return self.per_image.forward * self.images

    @property
    def backward(self) -> float:
        return self.per_image.backward * self.images


@dataclass
class Calibration:
    """Steady-state passes per second of the model at the run's inputs per pass (cold costs excluded: every block
    is timed after a warm-up pass), forward-only and forward+backward; ``source`` says where they came from."""

    device: str
    batch_size: int
    forward: float
    backward: float | None = None
    source: str = ""  # "measured now (N s)", "stored (measured DATE)"

    def rate(self, kind: str) -> float:
        r = self.forward if kind == "forward" else self.backward
        if not r:
            raise ValueError(f"no {kind} rate was measured")
        return r

    def as_dict(self) -> dict:
        return {"device": self.device, "batch_size": self.batch_size, "forward_passes_per_s": self.forward,
                "backward_passes_per_s": self.backward, "source": self.source}


def calibrate(ctx: RunContext, batch_size: int, need_backward: bool = True, echo=None) -> Calibration:
    """The model's steady-state rates at ``batch_size`` inputs per pass on this machine and precision, measured once
    (a second or so per kind) and reused by every later dry run (:func:`runners.tuning.cached_rates`)."""
    with ctx.autocast():
        rec = cached_rates(ctx.model.net, ctx.model.name, ctx.profile.image_size, ctx.device, ctx.precision,
                           batch_size, need_backward, echo=echo)
    src = (f"stored, measured {rec.get('measured')}" if rec.get("cached") else
           f"measured now ({rec.get('seconds', 0):.1f} s)")
    return Calibration(str(ctx.device), batch_size, rec["forward"], rec.get("backward"), src)


# ---------------------------------------------------------------------------------------------------- plan

class Stored:
    """What the run folder holds already, read once without a lock (a store that cannot be read, or that is of
    another image list, counts as empty: the stage itself says what is wrong with it)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.again: set[str] = set(ctx.cfg.recompute or ())
        self.status: dict[str, np.ndarray] = {}
        bad = np.zeros(len(ctx.source.names), bool)
        for name in ("maps.h5", "metrics.h5"):
            try:
                with h5py.File(ctx.run_dir / name, "r", locking=False) as f:
                    if [n.decode() if isinstance(n, bytes) else n for n in f["names"][()]] != ctx.source.names:
                        continue
                    if "image_status" in f:
                        bad |= f["image_status"][()] == IMG_BAD
                    f.visititems(lambda key, obj: self._keep(key, obj))
            except (OSError, KeyError, ValueError):
                continue
        self.rows = [i for i in ctx.indices if not bad[i]]

    def _keep(self, key: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and key.endswith("/status"):
            self.status[key[:-len("/status")]] = obj[()]

    def left(self, groups: list[str]) -> int:
        """Selected images (not known bad) for which any of ``groups`` has no finished row (all of them for a group
        that ``--recompute`` drops: :attr:`again` holds the asked ids and the output ids of the asked methods)."""
        todo = np.zeros(len(self.ctx.source.names), bool)
        for g in groups:
            st = None if set(g.split("/")) & self.again else self.status.get(g)
            todo |= True if st is None else st != DONE
        return int(todo[self.rows].sum())

    def sanity_left(self, output_ids: list[str], n: int) -> int:
        """Of the first ``n`` images, those missing a randomisation unit of ``output_ids`` (either convention) or
        holding one that does not read (the stage moves it aside and computes it again); all of them when
        ``--recompute`` names one of the ids (its units are computed again)."""
        folder: Path = self.ctx.run_dir / "randomisation"
        names = [self.ctx.source.names[i] for i in self.rows[:n]]
        if set(output_ids) & self.again:
            return len(names)
        return sum(any(not unit_reads(unit_path(folder, name, oid, conv)) for oid in output_ids
                       for conv in CONVENTIONS) for name in names)


def _method_cost(model, mid: str, quick: bool, seed: int, cache: dict) -> Cost | None:
    if mid not in cache:
        cls = METHODS.get(mid)
        cache[mid] = None if cls is None else cls(quick=quick, seed=seed).cost(model)
    return cache[mid]


def plan(ctx: RunContext, stages: tuple[str, ...] = ("maps", "metrics"), map_ids: list[str] | None = None,
         left: bool = False) -> tuple[list[StageCost], dict[str, str]]:
    """Passes per stage for the selected images of ``ctx``.

    ``stages``: "maps" (clean forward + maps of every asked method) and/or "metrics" (every asked metric on every
    map id: the outputs of the planned methods, or ``map_ids`` when given). With ``left``, each item counts only
    the images whose results the run folder does not hold yet (:class:`Stored`). Returns the stages and the items
    left out with the reason (not applicable)."""
    model, n_all = ctx.model, len(ctx.indices)
    stored = Stored(ctx) if left else None

    def n(groups: list[str]) -> int:
        return stored.left(groups) if stored is not None else n_all

    quick, seed = ctx.profile.quick, ctx.cfg.seed
    rows: list[StageCost] = [StageCost("clean", "targets", n(["clean"]), Cost(forward=1.0),
                                       "top-1 of the clean image")]
    methods, skipped = build_methods(ctx, ctx.cfg.methods if "maps" in stages or map_ids is None else [])
    if stored is not None:
        stored.again |= {oid for m in methods if m.id in stored.again for oid in m.output_ids}
    produced: list[str] = []
    costs: dict[str, Cost | None] = {}
    for method in in_run_order(methods):
        if all(oid in produced for oid in method.output_ids):
            if "maps" in stages:
                rows.append(StageCost("maps", method.id, n([f"maps/{oid}" for oid in method.output_ids]), Cost(),
                                      "derived by an earlier method"))
            continue
        costs[method.id] = method.cost(model)
        if "maps" in stages:
            extra = f" (+{len(method.variants)} derived maps)" if method.variants else ""
            bound = "upper bound: constant channels are skipped" if method.family == "polycam" else ""
            rows.append(StageCost("maps", method.id, n([f"maps/{oid}" for oid in method.output_ids]),
                                  costs[method.id], bound + extra))
        produced.extend(oid for oid in method.output_ids if oid not in produced)
    if "metrics" in stages:
        ids = map_ids if map_ids is not None else produced
        for metric in build_metrics(ctx, ctx.cfg.metrics or list(DEFAULT_METRICS)):
            for mid in ids:
                mcost = _method_cost(model, mid, quick, seed, costs)
                if metric.needs_method and mcost is None:
                    skipped[f"{metric.id}/{mid}"] = "no registered method computes it on its own"
                    continue
                try:
                    c = metric.cost(model, mcost)
                except (NotApplicable, MetricError) as err:
                    skipped[f"{metric.id}/{mid}"] = str(err)
                    continue
                rows.append(StageCost("metrics", f"{metric.id}/{mid}", n([f"{metric.id}/{mid}"]), c))
    if "sanity" in stages:
        producers, covered = [], set()
        for m in in_run_order(methods):  # one producer per sanity id: pcampm computes pcamp and pcamm too
            if any(i in m.output_ids and i not in covered for i in ctx.profile.sanity_methods):
                producers.append(m)
                covered |= set(m.output_ids)
        rows += sanity_rows(ctx, producers, stored)
    return rows, skipped


def sanity_rows(ctx: RunContext, methods: list, stored: Stored | None = None) -> list[StageCost]:
    """The cascading-randomisation check of ``run`` (the profile's sanity methods, its first images): per image and
    method, the trained model's map, then at every one of the L randomisation steps one forward pass (the randomised
    model's top-1) and the maps of up to two classes (the two target conventions):
    ``cost_m (1 + 2 L) + L`` passes, an upper bound (one map when the two classes coincide). With ``stored``, an
    image whose units of a method are all stored is not counted."""
    from metrics.randomisation import randomisation_order

    if not methods:
        return []
    steps = len(randomisation_order(ctx.model.net, ctx.profile.image_size, ctx.device))
    n = min(ctx.profile.sanity_images, len(ctx.indices))
    out = []
    for m in methods:
        c = m.cost(ctx.model)
        per = Cost(forward=c.forward * (1 + 2 * steps) + steps, backward=c.backward * (1 + 2 * steps))
        ids = [i for i in ctx.profile.sanity_methods if i in m.output_ids]
        images = stored.sanity_left(ids, n) if stored is not None else n
        out.append(StageCost("sanity", m.id, images, per,
                             f"{steps} randomisation steps, both conventions (upper bound)"))
    return out


def eta_seconds(row: StageCost, cal: Calibration) -> float:
    fwd = row.forward / cal.rate("forward") if row.forward else 0.0
    bwd = row.backward / cal.rate("backward") if row.backward else 0.0
    return fwd + bwd


def _fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_plan(rows: list[StageCost], skipped: dict[str, str], cal: Calibration | None) -> str:
    """A markdown table: stage, item, images, forward and backward passes per image and in total, ETA."""
    head = "| stage | item | images | fwd/img | bwd/img | fwd total | bwd total | ETA |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    total_f = total_b = total_t = 0.0
    for r in rows:
        t = eta_seconds(r, cal) if cal else float("nan")
        total_f, total_b, total_t = total_f + r.forward, total_b + r.backward, total_t + (t if cal else 0.0)
        item = r.key + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.stage} | {item} | {r.images} | {r.per_image.forward:g} | {r.per_image.backward:g} | "
                     f"{r.forward:g} | {r.backward:g} | {_fmt_s(t) if cal else '-'} |")
    lines.append(f"| **total** | | | | | {total_f:g} | {total_b:g} | {_fmt_s(total_t) if cal else '-'} |")
    out = "\n".join(lines)
    if cal:
        b = f"{cal.backward:.1f} forward+backward passes/s" if cal.backward else "forward+backward not needed"
        out += (f"\nrates on {cal.device} at {cal.batch_size} inputs per pass ({cal.source}; steady state, warm-up "
                f"excluded): {cal.forward:.1f} forward passes/s, {b}")
    for key, reason in skipped.items():
        out += f"\nnot applicable: {key}: {reason}"
    return out


def dry_run(ctx: RunContext, stages: tuple[str, ...], map_ids: list[str] | None = None, echo=print) -> dict:
    """Print the plan and the ETA before any work (``--dry-run``); return them as a dict. Nothing is tuned: the
    inputs per pass are ``--batch-size``, the size stored for this machine, or a provisional one (said so)."""
    size, why = ctx.known_pass_batch_size()
    rows, skipped = plan(ctx, stages, map_ids, left=True)
    need_bwd = any(r.per_image.backward for r in rows)
    cal = calibrate(ctx, size, need_backward=need_bwd, echo=echo)
    echo(f"dry run: {len(ctx.indices)} image(s), model {ctx.tag}, profile {ctx.profile.name}, device "
         f"{ctx.device}, batch size {ctx.batch_size}, {size} inputs per pass ({why}); nothing is computed or written; "
         "images: those whose results the folder does not hold yet")
    echo(format_plan(rows, skipped, cal))
    return {"rows": [{"stage": r.stage, "key": r.key, "images": r.images, "forward": r.forward,
                      "backward": r.backward, "eta_s": eta_seconds(r, cal)} for r in rows],
            "skipped": skipped, "calibration": cal.as_dict(), "pass_batch_size": size, "pass_batch_size_from": why}
