"""Tasks and executors: the same benchmark cut into (stage, method or metric, shard of images) tasks, run in this
process (:class:`LocalExecutor`) or on a Ray cluster (:class:`RayExecutor`), then merged.

A task is one of
  * ``clean``   (shard k): image checks and the clean forward (top-1 targets) of the shard's images;
  * ``maps``    (method m, shard k): the maps of m (and its variants) on shard k, after ``clean`` k;
  * ``metrics`` (metric g, map id a, shard k): g on the maps a of shard k, after the ``maps`` task producing a.
Every task writes its own shard store (:mod:`benchmark.shards`); the driver merges the finished shards into
``maps.h5`` / ``metrics.h5`` and writes the CSV files, exactly as a one-process run would have.

Shards are contiguous runs of the image list whose boundaries fall on multiples of the batch size where possible
(see :func:`benchmark.shards.shard_rows`), so every batch holds the same images as in a one-process run.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import shards as sh
from .store import IMG_OK, H5Store, RunLock, StoreError

REPO = Path(__file__).resolve().parent.parent
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
        from .pipeline import RunConfig, model_tag
        from .profiles import get_profile

        cfg = RunConfig(**self.config)
        return Path(cfg.out or Path("results") / get_profile(cfg.profile).name) / model_tag(cfg.model, cfg.weights)

    def paths(self) -> sh.ShardPaths:
        return sh.ShardPaths(self.run_dir(), self.stage, self.name, self.shard, self.n)

    def describe(self) -> dict:
        return {"stage": self.stage, "name": self.name, "shard": f"{self.shard}/{self.n}", "rows": len(self.rows)}


# ------------------------------------------------------------------------------------------------ worker side
class SubSource:
    """The images of one shard, in list order (an :class:`~benchmark.data.ImageSource` over a subset)."""

    def __init__(self, parent, names: list[str]):
        self.parent, self.names = parent, names
        self.description = f"{parent.description} [shard of {len(names)}]"

    def open(self, name: str):
        return self.parent.open(name)


class RowView:
    """Read-only rows ``rows`` of a model store, seen as a shard store (local row k = store row rows[k])."""

    def __init__(self, store: H5Store, rows: list[int]):
        self.store, self.rows = store, list(rows)
        self.names = [store.names[i] for i in rows]
        self.path = store.path

    def status(self, group: str):
        return self.store.status(group)[self.rows]

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


_BENCHES: dict[str, object] = {}


def _bench_for(task: Task):
    """The worker's Benchmark for this configuration (cached: a Ray worker reuses its model across tasks)."""
    from .pipeline import Benchmark, RunConfig

    key = json.dumps(task.config, sort_keys=True, default=str)
    if key not in _BENCHES:
        _BENCHES.clear()
        _BENCHES[key] = Benchmark(RunConfig(**task.config))
    return _BENCHES[key]


def shard_view(bench, rows: list[int]):
    """A shallow copy of ``bench`` whose image list is the shard's images (store rows = local indices)."""
    bench.model  # noqa: B018  (loaded once here, shared by every view of this Benchmark)
    view = copy.copy(bench)
    view.source = SubSource(bench.source, [bench.source.names[i] for i in rows])
    view.indices = list(range(len(rows)))
    return view


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
            moved = sh.move_aside(paths.part, "stale" if "different" in str(err) else "corrupt")
            log(f"{paths.part.name}: {str(err).splitlines()[0]}; moved aside to {moved.name}, starting afresh")
    paths.folder.mkdir(parents=True, exist_ok=True)
    return H5Store(paths.part, view.source.names, attrs, check_attrs=["protocol", "config_hash"])


def _summary(task: Task, **kw) -> dict:
    out = {"key": task.key, "stage": task.stage, "name": task.name, "shard": task.shard, "n": task.n,
           "computed": {}, "already": {}, "failed": {}, "not_applicable": {}, "seconds": {}, "skipped": False,
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
                return _summary(task, skipped=True, already=man.get("done", {}))
            if state in ("corrupt", "stale"):
                sh.quarantine(paths, state, why, log)
            view = shard_view(_bench_for(task), task.rows)
            from .pipeline import StageReport

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
        return _summary(task, computed=report.computed, already=report.already, failed=report.failed,
                        not_applicable=report.not_applicable, seconds=report.seconds)
    except Exception as err:  # recorded per task; the driver goes on with the others
        msg = f"{type(err).__name__}: {err}"
        sh.record_failure(paths, task.describe(), msg + "\n" + traceback.format_exc(limit=8))
        return _summary(task, error=msg)


def _stage_clean(task: Task, view, store: H5Store, report) -> list[str]:
    usable = view.check_images(store)
    view.ensure_targets(store, usable)
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
    (method,) = view.make_methods([task.name], report)
    view.compute_maps(method, store, usable, report)
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
    store = H5Store(task.run_dir() / "maps.h5", _bench_for(task).source.names, {"protocol": view.protocol()},
                    check_attrs=["protocol"], mode="r")
    rv = RowView(store, task.rows)
    return rv, rv.image_status(), store


def _stage_metrics(task: Task, view, store: H5Store, report) -> list[str]:
    from metrics.base import get_metric_class

    metric_id, mid = task.name.split("/", 1)
    metric = get_metric_class(metric_id)(view.profile, view.resolve_pass_batch_size(), view.cfg.seed)
    maps, img_status, handle = _maps_input(task, view)
    try:
        usable = [k for k, s in enumerate(img_status) if s == IMG_OK]
        targets_all = maps.read("clean", "target")
        view._score(metric, mid, maps, store, usable, targets_all, report)
    finally:
        handle.close()
    return [task.name] if store.has_group(task.name) else []


_STAGE_FN = {"clean": _stage_clean, "maps": _stage_maps, "metrics": _stage_metrics}


# ------------------------------------------------------------------------------------------------ executors
def _order(tasks: list[Task]) -> list[Task]:
    rank = {s: k for k, s in enumerate(sh.STAGES)}
    return sorted(tasks, key=lambda t: (rank[t.stage], t.shard))


class LocalExecutor:
    """Runs the tasks one after another in this process (no extra service)."""

    name = "local"

    def run(self, tasks: list[Task], done: dict[str, dict], on_result) -> None:
        for task in _order(tasks):
            res = run_task(task, *[done[d] for d in task.deps if d in done])
            done[task.key] = res
            on_result(res)


class RayExecutor:
    """Runs the tasks as Ray tasks: one GPU each when the device is CUDA, else ``cpus_per_task`` CPUs; a task
    whose worker died is retried (``max_retries``); a task waits for the tasks whose shards it reads."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cuda: bool = False,
                 cpus_per_task: int = 1, max_retries: int = 3):
        self.address, self.workers, self.cuda = address, workers, cuda
        self.cpus_per_task, self.max_retries = cpus_per_task, max_retries

    def _init(self):
        import ray

        if ray.is_initialized():
            return ray
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)}}
        if self.address:
            ray.init(address=self.address, runtime_env=env, log_to_driver=True)
        else:
            kw = {"num_gpus": self.workers} if self.cuda and self.workers else {}
            ray.init(num_cpus=(self.workers or os.cpu_count()) * (1 if self.cuda else self.cpus_per_task),
                     include_dashboard=False, runtime_env=env, **kw)
        return ray

    def run(self, tasks: list[Task], done: dict[str, dict], on_result) -> None:
        ray = self._init()
        res = {"num_gpus": 1, "num_cpus": 1} if self.cuda else {"num_cpus": self.cpus_per_task}
        remote = ray.remote(run_task).options(max_retries=self.max_retries, retry_exceptions=False, **res)
        refs, by_ref = {}, {}
        for task in _order(tasks):
            args = [refs.get(d, done.get(d)) for d in task.deps if d in refs or d in done]
            ref = remote.remote(task, *args)
            refs[task.key] = ref
            by_ref[ref] = task
        pending = list(by_ref)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = by_ref[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as err:  # the worker died more than max_retries times, or Ray failed
                msg = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                sh.record_failure(task.paths(), task.describe(), msg)
                result = _summary(task, error=msg)
            done[task.key] = result
            on_result(result)


def make_executor(cfg, cuda: bool):
    if cfg.executor == "local":
        return LocalExecutor()
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--executor ray needs the ray package: pip install -e '.[ray]' (or pip install ray)") from None
        return RayExecutor(cfg.ray_address, cfg.workers, cuda, cpus_per_task=cfg.threads or 1)
    raise ValueError(f"--executor must be local or ray, not {cfg.executor!r}")


# ------------------------------------------------------------------------------------------------ driver side
def plan(bench, stages: tuple[str, ...], n: int, only: int | None = None,
         map_ids: list[str] | None = None) -> tuple[list[Task], dict]:
    """The tasks of ``stages`` ("maps" includes its clean tasks) for shards ``only`` (or all of the n)."""
    from metrics.base import get_metric_class

    from .pipeline import DEFAULT_METRICS, StageReport

    # the driver fixes the batch size (after the memory bound) for every task, whatever memory its device has free
    cfg = dict(asdict(bench.cfg), out=str(bench.run_dir.parent.resolve()), progress=False,
               batch_size=bench.resolve_batch_size(), pass_batch_size=bench.resolve_pass_batch_size(),
               memory_gb=None)
    cfg["plugins"] = [str(Path(p).resolve()) if Path(p).is_file() else p for p in cfg["plugins"]]
    _BENCHES.clear()  # the local executor's tasks share the driver's Benchmark (and its loaded model)
    _BENCHES[json.dumps(cfg, sort_keys=True, default=str)] = bench
    splits = sh.shard_rows(bench.indices, n, bench.batch_size)
    chosen = range(n) if only is None else [only]
    proto, names = bench.protocol(), bench.source.names
    threads = bench.cfg.threads if bench.cfg.executor == "local" else (bench.cfg.threads or 1)
    tasks, info = [], {"not_applicable": {}, "produced": [], "splits": splits}

    def shard_id(stage, name, i, extra):
        return sh.config_hash({"protocol": proto, "stage": stage, "name": name, "shard": [i, n],
                               "names": [names[k] for k in splits[i]], "batch_size": bench.batch_size,
                               "skip_bad_images": bench.cfg.skip_bad_images, **extra})

    producers: dict[str, tuple[str, dict[int, str]]] = {}
    if "maps" in stages:
        report = StageReport()
        methods = bench.make_methods(bench.cfg.methods, report)
        info["not_applicable"].update(report.not_applicable)
        covered: set[str] = set()
        clean_h = {i: shard_id("clean", "clean", i, {}) for i in chosen}
        for i in chosen:
            tasks.append(Task("clean", "clean", i, n, splits[i], cfg, clean_h[i], threads=threads))
        for method in sorted(methods, key=lambda m: -len(m.variants)):
            if set(method.output_ids) <= covered:  # all its maps come from a method deriving several
                continue
            hashes = {}
            for i in chosen:
                hashes[i] = shard_id("maps", method.id, i, {"params": method.params, "clean": clean_h[i],
                                                             "outputs": list(method.output_ids)})
                tasks.append(Task("maps", method.id, i, n, splits[i], cfg, hashes[i],
                                  deps=[f"clean:clean:{i}of{n}"], inputs={"clean": clean_h[i]}, threads=threads))
            for oid in method.output_ids:
                if oid not in covered:
                    producers[oid] = (method.id, hashes)
                    info["produced"].append(oid)
            covered |= set(method.output_ids)
    if "metrics" in stages:
        metric_ids = bench.cfg.metrics or list(DEFAULT_METRICS)
        if map_ids is None:
            map_ids = info["produced"] if "maps" in stages else _stored_map_ids(bench)
        stored = {} if "maps" in stages else _stored_map_params(bench)
        for metric_id in metric_ids:
            metric = get_metric_class(metric_id)(bench.profile, bench.resolve_pass_batch_size(), bench.cfg.seed)
            for mid in map_ids:
                for i in chosen:
                    if mid in producers:
                        prod, hashes = producers[mid]
                        src, deps = (prod, hashes[i]), [f"maps:{prod}:{i}of{n}"]
                        extra = {"maps": hashes[i]}
                    elif mid in stored:
                        src, deps, extra = None, [], {"maps_params": stored[mid]}
                    else:
                        raise StoreError(f"no maps stored for {mid!r} in {bench.run_dir / 'maps.h5'}; run the maps "
                                         "stage first")
                    name = f"{metric_id}/{mid}"
                    tasks.append(Task("metrics", name, i, n, splits[i], cfg,
                                      shard_id("metrics", name, i, {"params": metric.params, **extra}),
                                      deps=deps, inputs={"maps": src}, threads=threads))
    return tasks, info


def _stored_map_params(bench) -> dict[str, object]:
    path = bench.run_dir / "maps.h5"
    if not path.exists():
        return {}
    with H5Store(path, bench.source.names, {"protocol": bench.protocol()}, check_attrs=["protocol"], mode="r") as s:
        return {g: s.group_attrs(f"maps/{g}").get("params") for g in s.groups("maps")}


def _stored_map_ids(bench) -> list[str]:
    ids = list(_stored_map_params(bench))
    if bench.cfg.methods is not None:
        missing = [m for m in bench.cfg.methods if m not in ids]
        if missing:
            raise StoreError(f"no maps stored for {missing} in {bench.run_dir / 'maps.h5'}; run the maps stage "
                             f"first (stored: {ids or 'none'})")
        return list(bench.cfg.methods)
    return ids


def merge(bench, tasks: list[Task] | None = None, log=print) -> dict:
    """Merge finished shards into ``maps.h5`` / ``metrics.h5`` and write the CSV files of the merged metrics.

    ``tasks`` None: every finished shard under ``shards/`` whose protocol is this run's. Returns counts."""
    from metrics.base import get_metric_class

    from .csvio import write_metric_csvs

    run_dir = bench.run_dir
    if tasks is None:
        found = _finished_shards(run_dir, bench.protocol())
    else:
        found = []
        for t in tasks:
            p = t.paths()
            if sh.check_shard(p, t.chash, verify=False)[0] == "done":
                found.append((t.stage, t.name, p.h5))
    out = {"clean": 0, "maps": 0, "metrics": 0, "csv": 0}
    if not found:
        return out
    rank = {s: k for k, s in enumerate(sh.STAGES)}
    found.sort(key=lambda x: rank[x[0]])
    _check_model_store(run_dir / "maps.h5", log)
    if any(s in ("clean", "maps") for s, _, _ in found):
        with bench.open_maps() as store:
            for stage, name, path in found:
                if stage == "clean":
                    out["clean"] += sh.merge_clean(store, path)
                elif stage == "maps":
                    sh.merge_clean(store, path)
                    out["maps"] += sh.merge_shard(store, path, "maps")
    metric_keys = sorted({name for stage, name, _ in found if stage == "metrics"})
    if metric_keys:
        _check_model_store(run_dir / "metrics.h5", log)
        with bench.open_metrics() as store:
            for stage, name, path in found:
                if stage == "metrics":
                    out["metrics"] += sh.merge_shard(store, path, name.split("/", 1)[0])
            for key in metric_keys:
                if store.has_group(key):
                    metric_id, mid = key.split("/", 1)
                    metric = get_metric_class(metric_id)(bench.profile, bench.resolve_pass_batch_size(), bench.cfg.seed)
                    write_metric_csvs(run_dir / "csv", bench.tag, metric, mid, store)
                    out["csv"] += 1
    bench._write_provenance()
    return out


def _check_model_store(path: Path, log) -> None:
    """A model store HDF5 cannot open is reported by name and moved aside: the merge rebuilds it from shards."""
    if not path.exists():
        return
    try:
        with __import__("h5py").File(path, "r", locking=False) as f:
            f["names"].shape  # noqa: B018
    except (OSError, KeyError) as err:
        moved = sh.move_aside(path, "corrupt")
        log(f"corrupt store: {path} is not a readable HDF5 file ({err}); moved aside to {moved.name}, rebuilt "
            "from the shards")


def _finished_shards(run_dir: Path, protocol: dict) -> list[tuple[str, str, Path]]:
    out = []
    for stage in sh.STAGES:
        folder = run_dir / "shards" / stage
        if not folder.is_dir():
            continue
        for man_path in sorted(folder.glob("*.json")):
            if man_path.name.endswith(".failed.json"):
                continue
            man = sh._read_json(man_path)
            h5 = man_path.with_suffix(".h5")
            if not man or not h5.exists() or man.get("protocol") != json.loads(json.dumps(protocol)):
                continue
            name, (i, n) = man["task"]["name"], map(int, man["task"]["shard"].split("/"))
            state, why = sh.check_shard(sh.ShardPaths(run_dir, stage, name, i, n), man.get("config_hash"))
            if state == "done":
                out.append((stage, name, h5))
            else:
                print(f"not merged: {why}", file=sys.stderr)
    return out


def run_sharded(bench, stages: tuple[str, ...], log=print) -> dict:
    """Plan, skip finished shards, run the rest on the configured executor, merge. Returns the stage reports."""
    from .pipeline import StageReport

    cfg = bench.cfg
    only, n = sh.parse_shard(cfg.shard) if cfg.shard else (None, cfg.shards or 1)
    lock = RunLock(bench.run_dir / "shards" / f"lock-{only}of{n}") if only is not None else RunLock(bench.run_dir)
    with lock:
        tasks, info = plan(bench, stages, n, only)
        done: dict[str, dict] = {}
        todo = []
        for t in tasks:
            state, why = sh.check_shard(t.paths(), t.chash)
            if state == "done":
                done[t.key] = _summary(t, skipped=True)
                continue
            if state in ("corrupt", "stale"):
                sh.quarantine(t.paths(), state, why, log)
            todo.append(t)
        log(f"{len(tasks)} task(s) in {n} shard(s): {len(done)} finished before, {len(todo)} to run on the "
            f"{cfg.executor} executor")
        counter = {"k": 0}

        def on_result(res):
            counter["k"] += 1
            what = f"{res['stage']} {res['name']} shard {res['shard']}/{res['n']}"
            if res["error"]:
                log(f"[{counter['k']}/{len(todo)}] {what}: FAILED: {res['error'].splitlines()[0]}")
            else:
                c = sum(res["computed"].values())
                f = sum(len(v) for v in res["failed"].values())
                log(f"[{counter['k']}/{len(todo)}] {what}: {c} computed, {f} failed "
                    f"({sum(res['seconds'].values()):.1f} s, {res['host']} pid {res['pid']})")

        if todo:
            make_executor(cfg, bench.device.type == "cuda").run(todo, done, on_result)
        merged = merge(bench, tasks, log) if only is None else None
    reports = {s: StageReport() for s in ("maps", "metrics")}
    reports["maps"].not_applicable.update(info["not_applicable"])
    reports["maps"].produced = list(info["produced"])
    errors = {}
    for t in tasks:
        res = done.get(t.key)
        if t.stage == "clean":
            if res and res["error"]:
                errors[t.key] = res["error"]
            continue
        rep = reports[t.stage]
        key = t.name
        rep.computed.setdefault(key, 0)
        rep.failed.setdefault(key, {})
        if res is None or res["error"]:
            errors[t.key] = res["error"] if res else "not run"
            continue
        group = f"maps/{key}" if t.stage == "maps" else key
        if res["skipped"]:
            man = sh._read_json(t.paths().manifest) or {}
            rep.already[key] = rep.already.get(key, 0) + man.get("groups", {}).get(group, {}).get("done", 0)
            rep.not_applicable.update(man.get("not_applicable", {}))
            rep.failed[key].update(_failed_in_shard(t.paths().h5, group))
            continue
        rep.computed[key] += res["computed"].get(key, 0)
        rep.already[key] = rep.already.get(key, 0) + res["already"].get(key, 0)
        rep.not_applicable.update(res["not_applicable"])
        rep.failed[key].update(res["failed"].get(key, {}))
        if key in res["seconds"]:
            rep.seconds[key] = rep.seconds.get(key, 0.0) + res["seconds"][key]
    for key in list(reports["metrics"].computed):
        if key in reports["metrics"].not_applicable:
            reports["metrics"].computed.pop(key)
            reports["metrics"].failed.pop(key, None)
    return {"reports": reports, "errors": errors, "merged": merged, "tasks": tasks, "shard": (only, n)}


def _failed_in_shard(path: Path, group: str) -> dict[str, str]:
    try:
        with sh._open_shard(path) as s:
            return s.errors(group) if s.has_group(group) else {}
    except (OSError, StoreError, KeyError):
        return {}


def cli_command(bench, command: str) -> int:
    """``run`` / ``maps`` / ``metrics`` with ``--executor ray``, ``--shards N`` or ``--shard i/n``."""
    stages = {"run": ("maps", "metrics"), "maps": ("maps",), "metrics": ("metrics",)}[command]
    cfg = bench.cfg
    print(f"data: {bench.source.description}; {len(bench.indices)} image(s); profile {bench.profile.name}; "
          f"device {bench.device}; executor {cfg.executor}; results in {bench.run_dir}")
    res = run_sharded(bench, stages)
    only, n = res["shard"]
    for stage in stages:
        rep = res["reports"][stage]
        print(f"{stage}:\n" + "\n".join(rep.lines()))
        for key, reason in rep.not_applicable.items():
            print(f"  not applicable: {key}: {reason}")
        for key, failed in rep.failed.items():
            for name, reason in list(failed.items())[:10]:
                print(f"  FAILED {stage} {key} on {name}: {reason}", file=sys.stderr)
    for key, err in res["errors"].items():
        print(f"  TASK FAILED {key}: {err.splitlines()[0]}", file=sys.stderr)
    if only is not None:
        print(f"shard {only}/{n} done; when every shard is, run `python -m benchmark merge` with the same options "
              f"(status: python -m benchmark status {bench.run_dir})")
    else:
        m = res["merged"] or {}
        print(f"merged into {bench.run_dir}: {m.get('maps', 0)} map rows, {m.get('metrics', 0)} metric rows, "
              f"{m.get('csv', 0)} CSV file pair(s)")
        if command == "run" and (bench.run_dir / "csv").is_dir():
            from .tables import build_tables

            paths = build_tables(bench.run_dir, bench.tag)
            print(paths["markdown"].read_text())
            try:
                from .report import build_report

                print(f"report: {build_report(bench.run_dir.parent)}  (the sanity check is not sharded: run "
                      f"`python -m benchmark sanity` with the same options)")
            except (ValueError, OSError) as err:
                print(f"the report could not be built ({err}); run `python -m benchmark report`", file=sys.stderr)
    ok = not res["errors"] and all(r.ok for r in res["reports"].values())
    return 0 if ok else 1


def cli_merge(bench) -> int:
    """``merge``: every finished shard of this configuration into the model stores, CSV files, tables."""
    with RunLock(bench.run_dir):
        counts = merge(bench)
    print(f"merged into {bench.run_dir}: {counts['clean']} clean rows, {counts['maps']} map rows, "
          f"{counts['metrics']} metric rows, {counts['csv']} CSV file pair(s)")
    if counts["csv"]:
        from .tables import build_tables

        print(build_tables(bench.run_dir, bench.tag)["markdown"].read_text())
    from .status import status_text

    print(status_text(bench.run_dir, verify=False))
    return 0
