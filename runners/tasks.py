"""Tasks: the same benchmark cut into (stage, method or metric, shard of images) tasks, each run to a finished shard
store by :func:`run_task` in whatever process an executor (:mod:`runners.executors`) gives it.

A task is one of
  * ``clean``   (shard k): image checks and the clean forward (top-1 targets) of the shard's images;
  * ``maps``    (method m, shard k): the maps of m (and its variants) on shard k, after ``clean`` k;
  * ``metrics`` (metric g, map id a, shard k): g on the maps a of shard k, after the ``maps`` task producing a.
Every task writes its own shard store (:mod:`runners.shards`) through the same stage runners as a one-process run
(:class:`runners.maps.MapsStage`, :class:`runners.scoring.MetricsStage` on the shard's :meth:`RunContext.view`);
the driver (:mod:`runners.sharded`) merges the finished shards into ``maps.h5`` / ``metrics.h5`` and writes the CSV
files, exactly as a one-process run would have.

Shards are contiguous runs of the image list whose boundaries fall on multiples of the batch size where possible
(see :func:`runners.shards.shard_rows`), so every batch holds the same images as in a one-process run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import shards as sh
from .clean import prepare
from .context import RunConfig, RunContext, run_dir_of
from .factory import build_methods, build_metric
from .maps import MapsStage
from .report import StageReport
from .scoring import MetricsStage
from .store import IMG_OK, H5Store, StoreError, move_aside

LOCK_WAIT_S = float(os.environ.get("BENCHMARK_SHARD_LOCK_WAIT", "1800"))


@dataclass
class Task:
    """One unit of work; plain data so it pickles to a Ray worker."""

    stage: str  # clean | maps | metrics
    name: str  # "clean", a method id, or "<metric>/<map id>"
    shard: int
    n: int
    rows: list[int]  # image indices (in the full list) of this shard
    config: dict  # RunConfig fields (absolute --out)
    chash: str  # configuration hash recorded in the manifest
    deps: list[str] = field(default_factory=list)  # keys of the tasks whose shards this one reads
    inputs: dict = field(default_factory=dict)  # {"clean": chash} / {"maps": (producer, chash) or None}
    threads: int | None = None  # torch threads in the worker (None: torch's default)

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.name}:{self.shard}of{self.n}"

    def run_dir(self) -> Path:
        return run_dir_of(RunConfig(**self.config))

    def paths(self) -> sh.ShardPaths:
        return sh.ShardPaths(self.run_dir(), self.stage, self.name, self.shard, self.n)

    def describe(self) -> dict:
        return {"stage": self.stage, "name": self.name, "shard": f"{self.shard}/{self.n}", "rows": len(self.rows)}


# ------------------------------------------------------------------------------------------------ worker side
class RowView:
    """Read-only rows ``rows`` of a model store, seen as a shard store (local row k = store row rows[k])."""

    def __init__(self, store: H5Store, rows: list[int]):
        self.store, self.rows = store, list(rows)
        self.names = [store.names[i] for i in rows]
        self.path = store.path

    def status(self, group: str):
        return self.store.status(group)[self.rows]

    def read_rows(self, group: str, indices=None, mark: bool = True):
        """Rows ``indices`` (local) through the store's CRC check; bad rows are returned as local rows."""
        rows = self.rows if indices is None else [self.rows[k] for k in indices]
        values, bad = self.store.read_rows(group, rows, mark=False)
        local = {r: k for k, r in enumerate(self.rows)}
        return values, [local[i] for i in bad]

    def read(self, group: str, name: str, indices=None):
        return self.store.read(group, name, self.rows if indices is None else [self.rows[k] for k in indices])

    def group_attrs(self, group: str) -> dict:
        return self.store.group_attrs(group)

    def has_group(self, group: str) -> bool:
        return self.store.has_group(group)

    def groups(self, prefix: str) -> list[str]:
        return self.store.groups(prefix)

    def image_status(self):
        return self.store.f["image_status"][()][self.rows]


_CONTEXTS: dict[str, RunContext] = {}


def context_for(task: Task) -> RunContext:
    """The worker's run context for this configuration (cached: a Ray worker reuses its model across tasks)."""
    key = json.dumps(task.config, sort_keys=True, default=str)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = RunContext(RunConfig(**task.config))
    return _CONTEXTS[key]


def share_context(config: dict, ctx: RunContext) -> None:
    """Tasks of ``config`` run in this process use ``ctx`` (the local executor shares the driver's loaded model)."""
    _CONTEXTS.clear()
    _CONTEXTS[json.dumps(config, sort_keys=True, default=str)] = ctx


class _FileLock:
    """flock on a shard's lock file; waits (a previous attempt may still be running), then fails clearly."""

    def __init__(self, path: Path, wait_s: float = LOCK_WAIT_S):
        self.path, self.wait_s, self.fd = path, wait_s, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(self.fd, 128, 0).decode(errors="replace").strip() or "unknown"
                    os.close(self.fd)
                    raise StoreError(f"shard {self.path.name[1:-5]} is held by another process ({holder}) for more "
                                     f"than {self.wait_s:.0f} s") from None
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{socket.gethostname()} pid {os.getpid()}".encode(), 0)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _open_part(paths: sh.ShardPaths, view, task: Task, log) -> H5Store:
    """The shard's in-progress store (resumed if readable and of this configuration, else moved aside)."""
    attrs = {"protocol": view.protocol(), "task": task.describe(), "config_hash": task.chash}
    if paths.part.exists():
        try:
            return H5Store(paths.part, view.source.names, attrs, check_attrs=["protocol", "config_hash"])
        except StoreError as err:
            moved = move_aside(paths.part, "stale" if "different" in str(err) else "corrupt")
            log(f"{paths.part.name}: {str(err).splitlines()[0]}; moved aside to {moved.name}, starting afresh")
    paths.folder.mkdir(parents=True, exist_ok=True)
    return H5Store(paths.part, view.source.names, attrs, check_attrs=["protocol", "config_hash"])


def summary(task: Task, **kw) -> dict:
    out = {"key": task.key, "stage": task.stage, "name": task.name, "shard": task.shard, "n": task.n,
           "computed": {}, "already": {}, "failed": {}, "not_applicable": {}, "seconds": {}, "notices": [],
           "code_changes": {},
           "skipped": False,
           "error": None, "host": socket.gethostname(), "pid": os.getpid()}
    out.update(kw)
    return out


def run_task(task: Task, *deps: dict) -> dict:
    """Run one task to a finished shard (or find it finished). Errors are recorded and returned, not raised:
    a task that raises would raise again (Ray retries only a task whose worker died)."""
    paths = task.paths()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        bad = [d for d in deps if d.get("error")]
        if bad:
            raise RuntimeError(f"not run: {bad[0]['key']} failed ({bad[0]['error'].splitlines()[0]})")
        if task.threads:
            import torch

            torch.set_num_threads(task.threads)
        with _FileLock(paths.lock):
            state, why = sh.check_shard(paths, task.chash)
            if state == "done":
                man = json.loads(paths.manifest.read_text())
                return summary(task, skipped=True, already=man.get("done", {}))
            if state in ("corrupt", "stale"):
                sh.quarantine(paths, state, why, log)
            view = context_for(task).view(task.rows)
            report = StageReport()
            t0 = time.perf_counter()
            with _open_part(paths, view, task, log) as store:
                groups = _STAGE_FN[task.stage](task, view, store, report)
                counts = sh.status_counts(store, groups)
            manifest = {"task": task.describe(), "config_hash": task.chash, "protocol": view.protocol(),
                        "names": view.source.names, "groups": counts, "not_applicable": report.not_applicable,
                        "done": {k: report.already.get(k, 0) + n for k, n in report.computed.items()},
                        "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid()}
            sh.finalize(paths, manifest)
        return summary(task, computed=report.computed, already=report.already, failed=report.failed,
                        not_applicable=report.not_applicable, seconds=report.seconds, notices=report.notices,
                        code_changes=report.code_changes)
    except Exception as err:  # recorded per task; the driver goes on with the others
        msg = f"{type(err).__name__}: {err}"
        sh.record_failure(paths, task.describe(), msg + "\n" + traceback.format_exc(limit=8))
        return summary(task, error=msg)


def _stage_clean(task: Task, view, store: H5Store, report) -> list[str]:
    usable = prepare(view, store)
    report.computed["clean"] = len(usable)
    return ["clean"]


def _copy_clean(task: Task, store: H5Store) -> None:
    """Image checks and targets from the clean shard of the same rows into this task's store."""
    clean = sh.ShardPaths(task.run_dir(), "clean", "clean", task.shard, task.n)
    state, why = sh.check_shard(clean, task.inputs["clean"], verify=False)
    if state != "done":
        raise StoreError(f"the clean shard {clean.h5.name} is {state} {why}".strip())
    sh.merge_clean(store, clean.h5)


def _stage_maps(task: Task, view, store: H5Store, report) -> list[str]:
    if (store.status("clean") == 0).all():
        _copy_clean(task, store)
    usable = [k for k, s in enumerate(store.f["image_status"][()]) if s == IMG_OK]
    (method,), _ = build_methods(view, [task.name])
    MapsStage(view).compute(method, store, usable, report)
    return [f"maps/{oid}" for oid in method.output_ids]


def _maps_input(task: Task, view):
    """The maps a metrics task scores: the producer's maps shard, or the rows of the merged maps.h5."""
    src = task.inputs.get("maps")
    if src is not None:
        producer, chash = src
        p = sh.ShardPaths(task.run_dir(), "maps", producer, task.shard, task.n)
        state, why = sh.check_shard(p, chash, verify=False)
        if state != "done":
            raise StoreError(f"the maps shard {p.h5.name} is {state} {why}".strip())
        store = H5Store(p.h5, view.source.names, mode="r")
        return store, store.f["image_status"][()], store
    store = H5Store(task.run_dir() / "maps.h5", context_for(task).source.names, {"protocol": view.protocol()},
                    check_attrs=["protocol"], mode="r")
    rv = RowView(store, task.rows)
    return rv, rv.image_status(), store


def _stage_metrics(task: Task, view, store: H5Store, report) -> list[str]:
    metric_id, mid = task.name.split("/", 1)
    metric = build_metric(view, metric_id)
    maps, img_status, handle = _maps_input(task, view)
    try:
        usable = [k for k, s in enumerate(img_status) if s == IMG_OK]
        targets_all = maps.read("clean", "target")
        MetricsStage(view).score(metric, mid, maps, store, usable, targets_all, report)
    finally:
        handle.close()
    return [task.name] if store.has_group(task.name) else []


_STAGE_FN = {"clean": _stage_clean, "maps": _stage_maps, "metrics": _stage_metrics}
