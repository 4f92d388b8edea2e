"""The maps stage: every asked method on every usable image, stored in ``maps.h5`` (``maps/<id>/map``).

:func:`explain_chunk` is the one per-chunk call of a method: the local loop (:class:`MapsStage`), the executors'
tasks (which run :class:`MapsStage` on their shard) and the sanity check (on its randomised models) all use it. A
chunk that raises is retried image by image, so one bad image fails alone. Finished chunks go to a background
writer that copies them to the host, fails NaN / infinite / constant maps for their own output id, and stores the
others while the model computes the next chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

from benchmark.core.writer import BackgroundWriter
from methods.base import Method

from .clean import load_chunk, prepare
from .context import RunContext
from .factory import build_methods, in_run_order
from .report import StageReport, changed_code_files
from .scoring import drop_values
from .store import DONE, H5Store


@dataclass
class ChunkMaps:
    """The maps of one chunk: ``rows`` computed (``maps[oid]`` holds one map per row, on the device), and the rows
    that failed with their reason, per output id."""

    rows: list
    maps: dict[str, torch.Tensor] | None
    errors: dict[str, dict] = field(default_factory=dict)


def explain_chunk(method: Method, model, x: torch.Tensor, targets: torch.Tensor, rows: list, size: int,
                  autocast) -> Iterator[ChunkMaps]:
    """Yield the maps of ``method`` for the images ``x`` (row labels ``rows``) and classes ``targets``, under the
    run's precision (``autocast()``); a chunk that raises is retried one image at a time, and an image that still
    raises fails alone, for every output id of the method."""
    try:
        with autocast():
            maps = method.compute_all(model, x, targets, size)
        yield ChunkMaps(list(rows), {k: v.detach() for k, v in maps.items()})
    except Exception as err:  # noqa: BLE001 (any failure of a method is recorded per image)
        if len(rows) == 1:
            reason = f"{type(err).__name__}: {err}"
            yield ChunkMaps([], None, {oid: {rows[0]: reason} for oid in method.output_ids})
            return
        for k in range(len(rows)):
            yield from explain_chunk(method, model, x[k:k + 1], targets[k:k + 1], [rows[k]], size, autocast)


def bad_maps(maps: np.ndarray) -> dict[int, str]:
    """{position: reason} of the maps (host [B,H,W]) that cannot be ranked: NaN or infinite values, constant."""
    finite = np.isfinite(maps).all(axis=(1, 2))
    constant = finite & (maps.max(axis=(1, 2)) == maps.min(axis=(1, 2)))
    bad = {int(k): "map contains NaN or infinite values" for k in np.flatnonzero(~finite)}
    bad.update({int(k): "constant map (no ranking)" for k in np.flatnonzero(constant)})
    return bad


def drop_for_recompute(ctx: RunContext, store: H5Store, methods: list[Method]) -> list[str]:
    """``--recompute``: drop the stored maps of the asked methods (every output id) and every metric value of those
    maps, with their CSV files (:func:`runners.scoring.drop_values`), once per command; one line per dropped group."""
    asked = set(ctx.cfg.recompute or ())
    oids = [oid for m in methods if m.id in asked for oid in m.output_ids if f"maps/{oid}" not in ctx.dropped]
    if not oids:
        return []
    lines = []
    for oid in oids:
        ctx.dropped.add(f"maps/{oid}")
        n = store.drop(f"maps/{oid}")
        if n:
            lines.append(f"maps/{oid}: {n} stored map(s) dropped (--recompute)")
    if (ctx.run_dir / "metrics.h5").is_file():
        with ctx.open_metrics() as metrics:
            for metric in [k for k in metrics.f if isinstance(metrics.f[k], h5py.Group) and k != "clean"]:
                for oid in oids:
                    lines += drop_values(ctx, metrics, f"{metric}/{oid}", " with their maps")
    return lines


class MapsStage:
    """The maps of a run's methods on its images (``ctx`` may be a shard's view)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def run(self, method_ids: list[str] | None = None) -> StageReport:
        """The whole stage in this process: image checks, clean forward, then every method."""
        ctx = self.ctx
        report = StageReport()
        methods, report.not_applicable = build_methods(ctx, method_ids if method_ids is not None else ctx.cfg.methods)
        with ctx.lock(), ctx.open_maps() as store, ctx.image_cache():
            report.notices += drop_for_recompute(ctx, store, methods)
            usable = prepare(ctx, store)
            report.notices += ctx.take_notices()
            for method in in_run_order(methods):
                self.compute(method, store, usable, report)
                ctx.progress.settle(f"maps/{method.id}")
        ctx.write_provenance()
        return report

    def compute(self, method: Method, store: H5Store, usable: list[int], report: StageReport) -> None:
        """Compute the images whose maps (for any output id of the method) are not all stored yet."""
        ctx = self.ctx
        groups = {oid: f"maps/{oid}" for oid in method.output_ids}
        code = method.code()
        for oid, group in groups.items():  # --compact-maps: float16 chunked groups (runners/store.py COMPACT)
            restarted = store.ensure_group(group, {"map": ((ctx.profile.image_size,) * 2, "f4")},
                                           {"params": method.params, "method": method.describe(),
                                            "produced_by": method.id, "version": code["version"], "code": code,
                                            **ctx.map_storage(oid)},
                                           check=["params", "storage", "version"])
            report.reused_after_change(group, int((store.status(group) == DONE).sum()),
                                       changed_code_files(store.group_attrs(group).get("code"), code))
            if restarted:
                report.notices.append(restarted)
        missing = np.zeros(len(store.names), bool)
        for group in groups.values():
            store.verify(group, usable)  # stored maps failing their checksum are marked corrupt: computed again
            missing |= store.status(group) != DONE
        todo = [i for i in usable if missing[i]]
        report.computed[method.id], report.failed[method.id] = 0, {}
        report.produced.extend(oid for oid in method.output_ids if oid not in report.produced)
        report.already[method.id] = len(usable) - len(todo)
        if not todo:
            return
        targets_all = store.read("clean", "target")
        t0 = time.perf_counter()
        bs = ctx.batch_size
        cost = method.cost(ctx.model)
        # leaving early (an error, Ctrl-C) still stores every chunk already computed (BackgroundWriter)
        with ctx.progress.item(f"maps {method.id}", cost.passes * len(todo), len(todo),
                               key=f"maps/{method.id}") as bar, \
                BackgroundWriter() as writer:
            for start in range(0, len(todo), bs):
                chunk = todo[start:start + bs]
                ctx.prefetch(todo[start + bs:start + 2 * bs])
                rows, x, bad = load_chunk(ctx, store, chunk)
                if bad:
                    writer.submit(self._store, store, groups, method,
                                  ChunkMaps([], None, {oid: bad for oid in method.output_ids}), report)
                if rows:
                    t = torch.as_tensor(targets_all[rows], device=ctx.device)
                    for part in explain_chunk(method, ctx.model, x, t, rows, ctx.profile.image_size, ctx.autocast):
                        writer.submit(self._store, store, groups, method, part, report)
                bar.images(len(chunk))
        report.seconds[method.id] = time.perf_counter() - t0

    def _store(self, store: H5Store, groups: dict[str, str], method: Method, part: ChunkMaps,
               report: StageReport) -> None:
        """Copy a chunk's maps to the host, fail the NaN / infinite / constant ones (for their own output id only:
        a constant Poly-CAM ablation map does not fail the PCAM+- map) and store the others."""
        names = self.ctx.source.names
        sub = part.rows
        errors = {oid: dict(e) for oid, e in part.errors.items()}
        maps = None
        if part.maps is not None:
            maps = {k: v.float().cpu().numpy() for k, v in part.maps.items()}
            for oid, m in maps.items():
                bad = {sub[k]: reason for k, reason in bad_maps(m).items()}
                if bad:
                    errors.setdefault(oid, {}).update(bad)
        done_all = set(sub)
        for oid, group in groups.items():
            bad = errors.get(oid, {})
            rows = [k for k, i in enumerate(sub) if i not in bad]
            if rows:
                store.write(group, [sub[k] for k in rows], map=maps[oid][rows])
            for i, reason in bad.items():
                store.fail(group, i, reason)
                if oid == method.id or i not in sub:
                    report.failed[method.id][names[i]] = reason
                if oid == method.id:
                    done_all.discard(i)
                elif i in sub:
                    report.failed.setdefault(oid, {})[names[i]] = reason
        report.computed[method.id] += len(done_all)


def run_maps(ctx: RunContext, method_ids: list[str] | None = None) -> StageReport:
    """The maps stage of ``ctx`` in this process (see :class:`MapsStage`)."""
    return MapsStage(ctx).run(method_ids)
