"""The metrics stage: every asked metric on the stored maps of every asked map id, into ``metrics.h5``
(``<metric>/<map id>/value`` and ``curve``) and the reference CSV files.

:func:`score_chunk` is the one per-chunk call of a metric (the local loop and the executors' tasks use it through
:class:`MetricsStage`); a chunk that raises is retried image by image, and a value that is not finite or lies
outside the metric's range fails its image with the reason. Stored maps and values are read through their CRC
(:meth:`runners.store.H5Store.read_rows`): a row that fails it is never used, and is computed again. Each value keeps
the CRC of the map it scored (``map_crc``): a value whose map has been computed again since is scored again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.core.csvfiles import metric_csv_paths, write_curves, write_values
from methods.base import NotApplicable
from metrics.base import METRICS, Metric

from .clean import load_chunk, prepare
from .context import RunContext
from .factory import build_metrics, explainer_for
from .report import StageReport, changed_code_files
from .store import CORRUPT, DONE, FAILED, MAP_CRC, H5Store, StoreError

CORRUPT_MAP = "its stored map failed its checksum: marked corrupt, computed again by the next maps stage"


def stale_rows(store: H5Store, key: str, usable: list[int], map_status: np.ndarray, status: np.ndarray,
               map_crc: np.ndarray) -> list[int]:
    """The rows of ``key`` whose stored value scored another map than the one stored now (the map was computed
    again since, e.g. after failing its checksum, on a GPU whose kernels are not bit-exact); none for a group of an
    older harness, which has no ``map_crc``."""
    if MAP_CRC not in store.array_names(key):
        return []
    scored = store.read(key, MAP_CRC)
    return [i for i in usable if status[i] == DONE and map_status[i] == DONE and scored[i] != map_crc[i]]


def drop_values(ctx: RunContext, store: H5Store, key: str, why: str = "") -> list[str]:
    """``--recompute``: mark the values of ``key`` (``<metric>/<map id>``) to do (:meth:`H5Store.drop`), once per
    command, and remove its CSV files, so the tables never show values the folder no longer holds (a command killed
    before they are scored again leaves none). Returns the lines to say (none when nothing was stored)."""
    ctx.dropped.add(key)
    n = store.drop(key)
    if not n:
        return []
    lines = [f"{key}: {n} stored value(s) dropped{why} (--recompute)"]
    metric_id, mid = key.split("/", 1)
    if metric_id not in METRICS:
        return lines + [f"{key}: its CSV files in {ctx.run_dir / 'csv'} were kept (metric {metric_id!r} is not "
                        "loaded: give its --plugin); they hold the dropped values until it is scored again"]
    cls = METRICS[metric_id]
    for path in metric_csv_paths(ctx.run_dir / "csv", ctx.tag, cls.csv_prefix, mid, cls.has_curve):
        if path is not None:
            path.unlink(missing_ok=True)
    return lines


def drop_values_for_recompute(ctx: RunContext, store: H5Store, metric_ids: list[str], map_ids: list[str]) -> list[str]:
    """``--recompute``: drop the stored values of an asked metric (on every map id of this stage) or of an asked map
    id (every metric of this stage), once per command (``run``'s maps stage may have dropped them already)."""
    asked = set(ctx.cfg.recompute or ())
    lines = []
    for metric_id in metric_ids:
        for mid in map_ids:
            key = f"{metric_id}/{mid}"
            if key in ctx.dropped or not {metric_id, mid} & asked:
                continue
            lines += drop_values(ctx, store, key)
    return lines


@dataclass
class ChunkScores:
    """The values of one chunk: ``rows`` scored (``values[name]`` one entry per row), and failed rows."""

    rows: list
    values: dict[str, np.ndarray] | None
    errors: dict = field(default_factory=dict)


def score_chunk(metric: Metric, model, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, rows: list,
                autocast, explainer=None, prepared: torch.Tensor | None = None) -> Iterator[ChunkScores]:
    """Yield the values of ``metric`` for images ``x``, their ``maps`` and classes ``targets`` (row labels
    ``rows``); a chunk that raises is retried one image at a time; values that are not finite, or lie outside the
    metric's :meth:`~metrics.base.Metric.value_range`, fail their image."""
    kwargs = {"explainer": explainer}
    if prepared is not None:
        kwargs["prepared"] = prepared
    try:
        with autocast():
            res = metric.compute(model, x, maps, targets, **kwargs)
        res = {k: v.detach().cpu().numpy() for k, v in res.items()}
    except Exception as err:  # noqa: BLE001 (a failure of a metric is recorded per image)
        if len(rows) == 1:
            yield ChunkScores([], None, {rows[0]: f"{type(err).__name__}: {err}"})
            return
        for k in range(len(rows)):
            yield from score_chunk(metric, model, x[k:k + 1], maps[k:k + 1], targets[k:k + 1], [rows[k]], autocast,
                                   explainer, None if prepared is None else prepared[k:k + 1])
        return
    value = res["value"]
    lo, hi = metric.value_range() or (-np.inf, np.inf)
    errors = {}
    for k in range(len(rows)):
        if not np.isfinite(value[k]):
            errors[rows[k]] = f"{metric.id} is not finite ({value[k]})"
        elif not lo <= value[k] <= hi:
            errors[rows[k]] = f"{metric.id} = {value[k]} lies outside its range [{lo}, {hi}]"
    good = [k for k in range(len(rows)) if rows[k] not in errors]
    yield ChunkScores([rows[k] for k in good], {k: v[good] for k, v in res.items()}, errors)


def write_metric_csvs(csv_dir: Path, tag: str, metric: Metric, method: str, store: H5Store) -> Path:
    """Export the done rows of ``<metric>/<method>`` from the metrics store (list order) to the reference CSVs."""
    key = f"{metric.id}/{method}"
    rows = np.flatnonzero(store.status(key) == DONE)
    values, bad = store.read_rows(key, rows)  # rows failing their checksum are left out (and marked corrupt)
    keep = [k for k, i in enumerate(rows) if int(i) not in set(bad)]
    names = [store.names[rows[k]] for k in keep]
    values_path, curve_path = metric_csv_paths(csv_dir, tag, metric.csv_prefix, method, metric.has_curve)
    if not names:  # nothing scored (every map failed, or an import gave none): no file, and no stale one left
        for p in (values_path, curve_path):
            if p is not None:
                p.unlink(missing_ok=True)
        return values_path
    write_values(values_path, names, values["value"][keep])
    if curve_path is not None:
        write_curves(curve_path, names, values["curve"][keep])
    return values_path


class MetricsStage:
    """The metrics of a run on its stored maps (``ctx`` may be a shard's view)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def run(self, metric_ids: list[str] | None = None, map_ids: list[str] | None = None) -> StageReport:
        """The whole stage in this process: every metric on every asked map id (default: every stored one)."""
        ctx = self.ctx
        report = StageReport()
        metrics = build_metrics(ctx, metric_ids)
        map_ids = map_ids if map_ids is not None else ctx.cfg.methods
        with ctx.lock(), ctx.open_maps() as maps, ctx.open_metrics() as store, ctx.image_cache():
            usable = prepare(ctx, maps)
            report.notices += ctx.take_notices()
            stored = maps.groups("maps")
            method_ids = map_ids if map_ids is not None else stored
            missing = [m for m in method_ids if m not in stored]
            if missing:
                raise StoreError(f"no maps stored for {missing} in {maps.path}; run the maps stage first "
                                 f"(stored: {stored or 'none'})")
            targets_all = maps.read("clean", "target")
            report.notices += drop_values_for_recompute(ctx, store, [m.id for m in metrics], method_ids)
            for metric in metrics:
                for mid in method_ids:
                    if self.score(metric, mid, maps, store, usable, targets_all, report):
                        write_metric_csvs(ctx.run_dir / "csv", ctx.tag, metric, mid, store)
                    ctx.progress.settle(f"{metric.id}/{mid}")
        ctx.write_provenance({m.id: m.params for m in metrics})
        return report

    def score(self, metric: Metric, mid: str, maps: H5Store, store: H5Store, usable: list[int],
              targets_all: np.ndarray, report: StageReport) -> bool:
        """Score the maps of ``mid`` not yet scored; return False when the metric does not apply to them."""
        ctx = self.ctx
        names = ctx.source.names
        key = f"{metric.id}/{mid}"
        explainer = None
        if metric.needs_method:
            try:
                explainer = explainer_for(ctx, mid, maps.group_attrs(f"maps/{mid}"))
            except NotApplicable as err:
                report.not_applicable[key] = str(err)
                return False
        arrays = {"value": ((), "f8"), MAP_CRC: ((), "u4")}
        if metric.has_curve:
            arrays["curve"] = ((metric.curve_length,), "f4")
        code = metric.code()
        restarted = store.ensure_group(key, arrays, {"params": metric.params, "metric": metric.describe(),
                                                     "map_params": maps.group_attrs(f"maps/{mid}").get("params"),
                                                     "version": code["version"], "code": code},
                                       check=["params", "map_params", "version"])
        report.reused_after_change(key, int((store.status(key) == DONE).sum()),
                                   changed_code_files(store.group_attrs(key).get("code"), code))
        if restarted:
            report.notices.append(restarted)
        store.verify(key, usable)  # values failing their checksum are marked corrupt: computed again below
        mst, st = maps.status(f"maps/{mid}"), store.status(key)
        report.computed[key], report.failed[key] = 0, {}
        for i in usable:
            if mst[i] == FAILED:
                report.failed[key][names[i]] = "no map (the method failed on this image)"
            elif mst[i] == CORRUPT:
                report.failed[key][names[i]] = CORRUPT_MAP
        map_crc = maps.read(f"maps/{mid}", "crc")
        stale = stale_rows(store, key, usable, mst, st, map_crc)
        if MAP_CRC not in store.array_names(key):  # a group of an older harness: its values keep no map CRC
            map_crc = None
        if stale:
            report.notices.append(f"{key}: {len(stale)} value(s) scored a map that has been computed again since "
                                  f"(e.g. {names[stale[0]]}): scored again")
        again = set(stale)
        todo = [i for i in usable if mst[i] == DONE and (st[i] != DONE or i in again)]
        report.already[key] = int(sum(st[i] == DONE for i in usable)) - len(stale)
        if not todo:
            return True
        t0 = time.perf_counter()
        # an image that went bad is marked where the image checks read it (maps.h5), or in this store when the maps
        # come read-only (a shard's task)
        image_store = maps if getattr(getattr(maps, "f", None), "mode", "r") == "r+" else store
        cost = metric.cost(ctx.model, explainer.method.cost(ctx.model) if explainer is not None else None)
        with ctx.progress.item(f"{metric.id} {mid}", cost.passes * len(todo), len(todo), key=key) as bar:
            self._score_rows(metric, mid, maps, store, todo, targets_all, explainer, image_store, key, report, bar,
                             map_crc)
        report.seconds[key] = time.perf_counter() - t0
        return True

    def _score_rows(self, metric, mid, maps, store, todo, targets_all, explainer, image_store, key, report, bar,
                    map_crc):
        ctx = self.ctx
        names = ctx.source.names
        step = max(1, ctx.batch_size // (metric.curve_length or 1))  # about one batch of passes per call
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            ctx.prefetch(todo[start + step:start + 2 * step])
            stored, bad_maps = maps.read_rows(f"maps/{mid}", chunk)  # a map failing its CRC is marked corrupt
            for i in bad_maps:
                report.failed[key][names[i]] = CORRUPT_MAP
                report.corrupt_maps.setdefault(mid, []).append(names[i])
            keep = [k for k, i in enumerate(chunk) if i not in set(bad_maps)]
            rows, x, bad_images = load_chunk(ctx, image_store, [chunk[k] for k in keep])
            for i, reason in bad_images.items():
                store.fail(key, i, reason)
                report.failed[key][names[i]] = reason
            if not rows:
                bar.images(len(chunk))
                continue
            pos = {i: k for k, i in enumerate(chunk)}
            m = torch.as_tensor(stored["map"][[pos[i] for i in rows]], device=ctx.device)
            t = torch.as_tensor(targets_all[rows], device=ctx.device)
            prepared = (ctx.derived(metric.prepare_key, rows, x, metric.prepare)
                        if metric.prepare_key is not None else None)
            for part in score_chunk(metric, ctx.model, x, m, t, rows, ctx.autocast, explainer, prepared):
                if part.rows:
                    crc = {MAP_CRC: map_crc[part.rows]} if map_crc is not None else {}
                    store.write(key, part.rows, **part.values, **crc)
                    report.computed[key] += len(part.rows)
                for i, reason in part.errors.items():
                    store.fail(key, i, reason)
                    report.failed[key][names[i]] = reason
            bar.images(len(chunk))


def run_metrics(ctx: RunContext, metric_ids: list[str] | None = None,
                map_ids: list[str] | None = None) -> StageReport:
    """The metrics stage of ``ctx`` in this process (see :class:`MetricsStage`)."""
    return MetricsStage(ctx).run(metric_ids, map_ids)
