"""Precision drift of a run at ``tf32`` or ``bf16``: its stored maps and metric values on its first images against
the same work done again at fp32 (the paper protocol), written to ``<run>/precision_drift.json`` for the report.

Per output id of each method (the ablations a Poly-CAM call makes included), over the checked images i::

    map_max_abs_diff = max_i max |M_p,i - M_32,i|       map_max_rel_diff = max_i max |M_p,i - M_32,i| / max |M_32,i|

and per metric that scores a stored map (insertion, deletion), ``max`` and ``mean`` of ``|AUC_p,i - AUC_32,i|``,
where ``AUC_p`` is the stored value (maps and passes at precision p) and ``AUC_32`` the fp32 map scored at fp32.

The fp32 side is kept in ``<run>/precision_drift.npz`` (``map__<id>``: the fp32 maps; ``fp32__<metric>__<id>``: their
fp32 values; ``images__<id>``: the image names), so the summary can be computed again from it and the stores
(:meth:`runners.csvcheck.StoreCheck.drift_usable`): an edited or stale ``precision_drift.json`` is named, not shown.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.core.atomic import atomic_write, write_text

if TYPE_CHECKING:
    from .context import RunContext
# torch, the models and the stores load in check_drift only: the report and tables read the file without them

DRIFT_FILE = "precision_drift.json"
DRIFT_ARRAYS = "precision_drift.npz"
DEFAULT_DRIFT_IMAGES = 4


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max_i max|a_i - b_i| / max|a_i|`` over the maps i (0 where a map is all zero and equal, inf if not)."""
    out = 0.0
    for ai, bi in zip(a, b):
        scale = float(np.abs(ai).max())
        d = float(np.abs(ai - bi).max())
        out = max(out, d / scale if scale > 0 else (0.0 if d == 0 else float("inf")))
    return out


def compare_maps(ref: np.ndarray, other: np.ndarray) -> dict:
    """The drift fields of two stacks of maps [N,H,W] (``ref`` at fp32)."""
    from benchmark.core.ranks import spearman

    a, b = ref.astype(np.float64), other.astype(np.float64)
    rho = [spearman(a[i], b[i]) for i in range(a.shape[0])]
    finite = [r for r in rho if not np.isnan(r)]
    return {"images": int(a.shape[0]), "map_max_abs_diff": float(np.abs(a - b).max()),
            "map_mean_abs_diff": float(np.abs(a - b).mean()), "map_max_rel_diff": max_rel_diff(a, b),
            "spearman_min": float(min(finite)) if finite else None,
            "spearman_mean": float(np.mean(finite)) if finite else None}


def drift_row(ref: np.ndarray, stored: np.ndarray, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """The drift fields of one map id: :func:`compare_maps` of its fp32 maps ``ref`` and its stored maps, and per
    metric id of ``values`` (its fp32 values, its stored values) the means and the max / mean absolute difference."""
    row = compare_maps(ref, stored)
    row["metrics"] = {}
    for metric_id, (v32, held) in values.items():
        diff = np.abs(np.asarray(held, np.float64) - np.asarray(v32, np.float64))
        row["metrics"][metric_id] = {"fp32_mean": float(v32.mean()), "stored_mean": float(held.mean()),
                                     "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    return row


def check_drift(ctx: "RunContext", n_images: int = DEFAULT_DRIFT_IMAGES) -> Path | None:
    """Redo at fp32 the maps and metric values of the first ``n_images`` images whose maps (and values) are stored,
    compare them with the stored ones, and write ``precision_drift.json``; None at fp32 (nothing to compare) or
    when ``n_images`` is 0. Runs inside the caller's lock, after the maps and metrics stages."""
    if ctx.precision == "fp32" or n_images <= 0:
        return None
    import torch

    from benchmark.core import precision as precision_mod

    from .factory import build_methods, build_metrics, in_run_order
    from .store import DONE

    t0 = time.perf_counter()
    size = ctx.profile.image_size
    metrics = [m for m in build_metrics(ctx) if not m.needs_method]
    with ctx.open_maps("r") as maps, ctx.open_metrics("r") as scores:
        stored_ids = set(maps.groups("maps"))
        methods, _ = build_methods(ctx, [m for m in (ctx.cfg.methods or []) if m in stored_ids] or None)
        targets_all = maps.read("clean", "target")
        out: dict[str, dict] = {}
        arrays: dict[str, np.ndarray] = {}  # the fp32 side, kept so the summary can be checked (DRIFT_ARRAYS)
        for method in in_run_order(methods):
            oids = [o for o in method.output_ids if o in stored_ids and o not in out]
            if method.id not in oids:
                continue
            done = maps.status(f"maps/{method.id}") == DONE
            for oid in oids:
                done &= maps.status(f"maps/{oid}") == DONE
            for metric in metrics:
                key = f"{metric.id}/{method.id}"
                if scores.has_group(key):
                    done &= scores.status(key) == DONE
            rows = [int(i) for i in np.flatnonzero(done)[:n_images]]
            if not rows:
                continue
            stored = {oid: maps.read_rows(f"maps/{oid}", rows, mark=False) for oid in oids}
            if any(bad for _, bad in stored.values()):
                continue  # a stored map failing its checksum: never compared (status and the next run repair it)
            x = ctx.load_images(rows)
            t = torch.as_tensor(targets_all[rows], device=ctx.device)
            with precision_mod.active("fp32", ctx.device):
                ref = {k: v.detach().float() for k, v in method.compute_all(ctx.model, x, t, size).items()}
                out_names = [ctx.source.names[i] for i in rows]
                for oid in oids:
                    ref32 = ref[oid].cpu().numpy()
                    values = {}
                    for metric in metrics:
                        key = f"{metric.id}/{oid}"
                        if not scores.has_group(key) or not (scores.status(key)[rows] == DONE).all():
                            continue
                        held, bad = scores.read_rows(key, rows, mark=False)
                        if bad:
                            continue
                        v32 = metric.compute(ctx.model, x, ref[oid], t)["value"].float().cpu().numpy()
                        values[metric.id] = (v32, held["value"])
                        arrays[f"fp32__{metric.id}__{oid}"] = v32
                    out[oid] = dict(drift_row(ref32, stored[oid][0]["map"], values), image_names=out_names)
                    arrays[f"map__{oid}"] = ref32
                    arrays[f"images__{oid}"] = np.asarray(out_names, dtype=str)
    # the run's precision again (active() restores the TF32 switches; configure() for clarity)
    precision_mod.configure(ctx.precision, ctx.device)
    data = {"precision": ctx.precision, "reference": "fp32", "images_asked": n_images, "methods": out,
            "seconds": time.perf_counter() - t0, "definition": __doc__.split("\n\n", 1)[1].strip()}
    path = ctx.run_dir / DRIFT_FILE
    atomic_write(ctx.run_dir / DRIFT_ARRAYS, lambda fh: np.savez_compressed(fh, **arrays))  # before what it vouches
    write_text(path, json.dumps(data, indent=1))
    return path


def read_drift(run_dir: Path) -> dict | None:
    """The run's ``precision_drift.json``, or None (an fp32 run, or none written); a file that does not parse is
    reported as such rather than used."""
    path = Path(run_dir) / DRIFT_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"error": f"{path} does not read ({err})"}
    return data if isinstance(data, dict) else {"error": f"{path} holds no JSON object"}
