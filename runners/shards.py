"""Shard stores: one HDF5 file per task (stage, method or metric, shard of images), checked, then merged.

Layout under a run folder ``<out>/<model tag>/``::

    shards/<stage>/<name>-<i>of<n>.h5        a finished shard (an H5Store over the shard's images only)
    shards/<stage>/<name>-<i>of<n>.json      its manifest: sha256, size, rows, status counts, config hash
    shards/<stage>/<name>-<i>of<n>.h5.part   a shard being computed (resumable: per-image status)
    shards/<stage>/<name>-<i>of<n>.failed.json   the last error of a task that raised (removed on success)
    *.corrupt-<time>, *.stale-<time>         files moved aside (unreadable / checksum mismatch / other config)

Life of a shard: the task computes into ``.h5.part`` (an :class:`~runners.store.H5Store`, so a task killed at
any point leaves a readable file and the next attempt computes only the missing images), then writes the
manifest (sha256 of the finished bytes) and renames ``.part`` to ``.h5`` (atomic). A shard is *finished* when its
manifest parses, names the task's config hash, and the file's size and sha256 equal the manifest's and HDF5 opens
it; a finished shard is never recomputed. Anything else present is reported by name, moved aside, and recomputed.

Merge copies the rows of finished shards into the model's ``maps.h5`` / ``metrics.h5`` through the store's own
protocol checks (done rows where the store is not done, failed rows where it is still to do), so it is
idempotent and a merge killed half-way is simply run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from benchmark.core.atomic import sha256_file, write_text

from .store import DONE, FAILED, IMAGE_FILES, IMG_OK, MAP_CRC, TODO, H5Store, StoreError, move_aside

STAGES = ("clean", "maps", "metrics")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n (0-based, as ``$SLURM_ARRAY_TASK_ID`` with ``--array=0-(n-1)``)."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"--shard takes i/n with integers, e.g. 0/4 (shard 0 of 4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return i, n


def shard_rows(indices: Sequence[int], n: int, align: int = 1) -> list[list[int]]:
    """Split ``indices`` (list order) into ``n`` contiguous shards.

    Boundaries fall on multiples of ``align`` (the batch size) when there are at least ``n`` batches: each shard
    then holds whole batches of the unsharded run, so methods whose noise is drawn per batch (SmoothGrad, SS-CAM)
    give the same maps as one process. Shard k holds batches [k B / n, (k+1) B / n) of the B batches.
    """
    if n < 1:
        raise ValueError("the number of shards must be >= 1")
    idx = list(indices)
    units = -(-len(idx) // align) if align > 1 else len(idx)
    step = align if units >= n and align > 1 else 1
    units = -(-len(idx) // step)
    return [idx[(units * k // n) * step:(units * (k + 1) // n) * step] for k in range(n)]


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ShardPaths:
    """The files of one task's shard."""

    def __init__(self, run_dir: str | os.PathLike, stage: str, name: str, i: int, n: int):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.folder = Path(run_dir) / "shards" / stage
        self.stem = f"{name.replace('/', '__')}-{i}of{n}"
        self.h5 = self.folder / f"{self.stem}.h5"
        self.part = self.folder / f"{self.stem}.h5.part"
        self.manifest = self.folder / f"{self.stem}.json"
        self.failed = self.folder / f"{self.stem}.failed.json"
        self.lock = self.folder / f".{self.stem}.lock"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def check_shard(paths: ShardPaths, chash: str | None, verify: bool = True) -> tuple[str, str]:
    """State of a shard: ("done", ""), ("missing", ""), ("corrupt", why) or ("stale", why).

    ``chash`` None accepts any config (for ``status``). ``verify`` re-hashes the file (sha256)."""
    if not paths.h5.exists():
        return "missing", ""
    man = _read_json(paths.manifest)
    if man is None:
        return "corrupt", f"{paths.h5.name}: no readable manifest {paths.manifest.name}"
    if chash is not None and man.get("config_hash") != chash:
        return "stale", f"{paths.h5.name}: made for another configuration ({man.get('config_hash')} != {chash})"
    size = paths.h5.stat().st_size
    if size != man.get("size"):
        return "corrupt", f"{paths.h5.name}: {size} bytes, the manifest says {man.get('size')} (truncated?)"
    if verify and sha256_file(paths.h5) != man.get("sha256"):
        return "corrupt", f"{paths.h5.name}: sha256 differs from its manifest (corrupt)"
    try:
        with h5py.File(paths.h5, "r", locking=False) as f:
            f["names"].shape  # noqa: B018  (HDF5 check: the file opens and its index is readable)
    except (OSError, KeyError) as err:
        return "corrupt", f"{paths.h5.name}: not a readable HDF5 file ({err})"
    return "done", ""


def quarantine(paths: ShardPaths, state: str, why: str, log=print) -> None:
    """Move a corrupt or stale shard (and its manifest) aside, saying so by name."""
    moved = move_aside(paths.h5, state)
    move_aside(paths.manifest, state)
    log(f"{state} shard: {why}; moved aside to {moved.name if moved else '-'} and recomputed")


def finalize(paths: ShardPaths, manifest: dict) -> dict:
    """Manifest first (with the sha256 of the finished bytes), then the atomic rename ``.part`` -> ``.h5``."""
    manifest = dict(manifest, sha256=sha256_file(paths.part), size=paths.part.stat().st_size,
                    finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_json(paths.manifest, manifest)
    os.replace(paths.part, paths.h5)
    paths.failed.unlink(missing_ok=True)
    return manifest


def record_failure(paths: ShardPaths, task: dict, error: str) -> None:
    paths.folder.mkdir(parents=True, exist_ok=True)
    _write_json(paths.failed, {"task": task, "error": error,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def read_failure(paths: ShardPaths) -> dict | None:
    return _read_json(paths.failed) if paths.failed.exists() else None


def status_counts(store: H5Store, groups: Sequence[str]) -> dict[str, dict[str, int]]:
    out = {}
    for g in groups:
        st = store.status(g)
        out[g] = {"done": int((st == DONE).sum()), "failed": int((st == FAILED).sum()), "todo": int((st == TODO).sum())}
    return out


# ------------------------------------------------------------------------------------------------- merge
def _index_map(target: H5Store, shard: H5Store) -> np.ndarray:
    pos = {n: k for k, n in enumerate(target.names)}
    missing = [n for n in shard.names if n not in pos]
    if missing:
        raise StoreError(f"{shard.path} holds images not in {target.path}'s list, e.g. {missing[:3]}")
    return np.array([pos[n] for n in shard.names], dtype=np.int64)


def merge_clean(target: H5Store, shard_path: Path) -> int:
    """Image checks and clean targets of a clean shard into the model store; return rows copied."""
    with H5Store.read_only(shard_path) as sh:
        rows = _index_map(target, sh)
        img = sh.f["image_status"][()]
        err = sh.f["image_error"][()]
        old = target.f["image_status"][()]
        marks = {int(rows[k]): (int(img[k]), err[k].decode(errors="replace")) for k in range(len(rows))
                 if img[k] and old[rows[k]] != IMG_OK}
        if marks:
            target.mark_images(marks)
        copy_group(target, sh, IMAGE_FILES, rows, check=())
        return copy_group(target, sh, "clean", rows, check=())


def copy_group(target: H5Store, sh: H5Store, group: str, rows: np.ndarray, check: Sequence[str] = ("params",),
               allowed: np.ndarray | None = None) -> int:
    """Copy ``group`` rows of shard ``sh`` (shard row k -> target row ``rows[k]``); return rows written.

    Done rows are copied only where they verify against their CRC (the others are reported by ``status`` as the
    shard's, and recomputed) and, with ``allowed`` (a bool mask over the target's rows), only where it is True."""
    if not sh.has_group(group):
        return 0
    arrays = {name: (sh.f[group][name].shape[1:], sh.f[group][name].dtype.str) for name in sh.array_names(group)}
    target.ensure_group(group, arrays, sh.group_attrs(group), check=check)
    if group in ("clean", IMAGE_FILES):
        name = "target" if group == "clean" else "content_crc"
        old_t = target.read(group, name)
        new_t, st_new = sh.read(group, name), sh.status(group)
        both = (target.status(group)[rows] == DONE) & (st_new == DONE)
        if (old_t[rows][both] != new_t[both]).any():
            what = "clean targets" if group == "clean" else "image contents"
            raise StoreError(f"{sh.path}: {what} differ from those in {target.path}; the shard was made with another "
                             f"{'model or weights' if group == 'clean' else 'copy of the images (--data)'}. Move it "
                             "aside.")
    st_old, st = target.status(group)[rows], sh.status(group)
    ok = np.ones(len(rows), bool) if allowed is None else allowed[rows]
    put = np.flatnonzero((st == DONE) & (st_old != DONE) & ok)
    if len(put):
        values, bad = sh.read_rows(group, put, mark=False)
        keep = [k for k, i in enumerate(put) if int(i) not in set(bad)]
        if keep:
            target.write(group, rows[put[keep]].tolist(), **{name: v[keep] for name, v in values.items()})
        put = put[keep]
    errors = sh.f[group]["error"][()]
    for k in np.flatnonzero((st == FAILED) & (st_old == TODO)):
        target.fail(group, int(rows[k]), errors[k].decode(errors="replace"))
    return len(put)


def merge_shard(target: H5Store, shard_path: Path, prefix: str, maps_done=None, maps_crc=None, log=print) -> int:
    """Every group under ``prefix`` (``maps`` or a metric id) of a shard into the model store. ``maps_done(map id)``
    (for metric groups) gives the target rows whose map is done in the merged ``maps.h5``: a metric value is merged
    only where its map is; ``maps_crc(map id)`` their CRCs: a value that scored a map of other bytes (the map was
    computed again since) is not merged, and a line says so."""
    with H5Store.read_only(shard_path) as sh:
        rows = _index_map(target, sh)
        total = 0
        for group in _all_groups(sh, prefix):
            check = ("params", "map_params", "version") if prefix != "maps" else ("params", "version")
            mid = group.split("/", 1)[1]
            allowed = maps_done(mid) if maps_done is not None and prefix != "maps" else None
            if allowed is not None and maps_crc is not None and MAP_CRC in sh.array_names(group):
                scored = sh.read(group, MAP_CRC)
                stale = (sh.status(group) == DONE) & allowed[rows] & (scored != maps_crc(mid)[rows])
                if stale.any():
                    allowed = allowed.copy()
                    allowed[rows[stale]] = False
                    log(f"{group}: {int(stale.sum())} value(s) of {shard_path.name} not merged: they scored a map "
                        "that has been computed again since; `metrics` without shards scores them")
            total += copy_group(target, sh, group, rows, check=check, allowed=allowed)
        return total


def _all_groups(store: H5Store, prefix: str) -> list[str]:
    if prefix == "maps":
        return [f"maps/{g}" for g in store.groups("maps")]
    out = []
    for metric in ([prefix] if prefix else list(store.f)):
        if metric in store.f and isinstance(store.f[metric], h5py.Group):
            out += [f"{metric}/{g}" for g in store.groups(metric)]
    return out


def diff_runs(a: str | os.PathLike, b: str | os.PathLike, atol: float = 1e-5, ignore: Sequence[str] = ()) -> list[str]:
    """Differences between two run folders: the groups, per-image status, failure reasons and values of
    ``maps.h5`` and ``metrics.h5`` (within ``atol``), the clean targets, and the CSV files. Empty: equal.
    Groups and CSV files whose name contains a string of ``ignore`` are left out."""
    import pandas as pd

    a, b = Path(a), Path(b)
    out = []

    def keep(name: str) -> bool:
        return not any(x in name for x in ignore)

    for store in ("maps.h5", "metrics.h5"):
        pa, pb = a / store, b / store
        if not pa.exists() or not pb.exists():
            if pa.exists() != pb.exists():
                out.append(f"{store} only in {'the first' if pa.exists() else 'the second'} folder")
            continue
        with h5py.File(pa, "r", locking=False) as fa, h5py.File(pb, "r", locking=False) as fb:
            ga, gb = [], []
            fa.visititems(lambda n, o: ga.append(n) if isinstance(o, h5py.Group) and "status" in o and keep(n)
                          else None)
            fb.visititems(lambda n, o: gb.append(n) if isinstance(o, h5py.Group) and "status" in o and keep(n)
                          else None)
            if sorted(ga) != sorted(gb):
                out.append(f"{store}: groups differ: {sorted(ga)} vs {sorted(gb)}")
                continue
            for g in ga:
                sa, sb = fa[g]["status"][()], fb[g]["status"][()]
                if not np.array_equal(sa, sb):
                    out.append(f"{store}:{g}: status {sa.tolist()} vs {sb.tolist()}")
                    continue
                if not np.array_equal(fa[g]["error"][()], fb[g]["error"][()]):
                    out.append(f"{store}:{g}: failure reasons differ")
                done = np.flatnonzero(sa == DONE)
                for name, ds in fa[g].items():
                    # crc, map_crc: follow the values and maps compared (equal within atol, not to the bit)
                    if name in ("status", "error", "crc", "map_crc") or not len(done):
                        continue
                    va, vb = ds[()][done], fb[g][name][()][done]
                    if g == "clean" and name == "target":
                        if not np.array_equal(va, vb):
                            out.append(f"{store}:{g}/{name} differ")
                    elif not np.allclose(va, vb, atol=atol, rtol=0):
                        out.append(f"{store}:{g}/{name}: max difference {np.abs(va - vb).max():.3g}")
    csv_a = sorted(p.name for p in (a / "csv").glob("*.csv") if keep(p.name)) if (a / "csv").is_dir() else []
    csv_b = sorted(p.name for p in (b / "csv").glob("*.csv") if keep(p.name)) if (b / "csv").is_dir() else []
    if csv_a != csv_b:
        out.append(f"CSV files differ: {csv_a} vs {csv_b}")
    for name in sorted(set(csv_a) & set(csv_b)):
        da, db = pd.read_csv(a / "csv" / name, index_col=0), pd.read_csv(b / "csv" / name, index_col=0)
        if list(da.index) != list(db.index) or list(da.columns) != list(db.columns):
            out.append(f"csv/{name}: rows or columns differ")
            continue
        num = [c for c in da.columns if pd.api.types.is_numeric_dtype(da[c]) and pd.api.types.is_numeric_dtype(db[c])]
        other = [c for c in da.columns if c not in num]
        va, vb = da[num].to_numpy(np.float64), db[num].to_numpy(np.float64)
        if not np.allclose(va, vb, atol=atol, rtol=0, equal_nan=True):
            out.append(f"csv/{name}: max difference {np.nanmax(np.abs(va - vb)):.3g}")
        if other and not da[other].astype(str).equals(db[other].astype(str)):
            out.append(f"csv/{name}: text columns differ")
    return out
