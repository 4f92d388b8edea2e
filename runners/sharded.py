"""The sharded driver: plan the tasks of a run (:mod:`runners.tasks`), skip the finished shards, run the others on
the configured executor (:mod:`runners.executors`), and merge the finished shards into the model's stores and CSV
files (idempotent: a merge killed half-way is simply run again)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import shards as sh
from .clean import input_change_notice, input_code
from .context import DEFAULT_METRICS, RunContext
from .executors import make_executor
from .factory import build_methods, build_metric, build_metrics, in_run_order
from .report import StageReport, changed_code_files
from .scoring import write_metric_csvs
from .store import DONE, H5Store, RunLock, StoreError, move_aside
from .tasks import Task, share_context, summary


def plan(ctx: RunContext, stages: tuple[str, ...], n: int, only: int | None = None,
         map_ids: list[str] | None = None) -> tuple[list[Task], dict]:
    """The tasks of ``stages`` ("maps" includes its clean tasks) for shards ``only`` (or all of the n)."""
    # the driver fixes the batch size (after the memory bound) for every task, whatever memory its device has free
    cfg = dict(asdict(ctx.cfg), out=str(ctx.run_dir.parent.resolve()), progress=False,
               batch_size=ctx.resolve_batch_size(), pass_batch_size=ctx.resolve_pass_batch_size(),
               memory_gb=None, recompute=None)  # the driver drops what --recompute names, once
    cfg["plugins"] = [str(Path(p).resolve()) if Path(p).is_file() else p for p in cfg["plugins"]]
    share_context(cfg, ctx)  # the local executor's tasks share the driver's context (and its loaded model)
    splits = sh.shard_rows(ctx.indices, n, ctx.batch_size)
    chosen = range(n) if only is None else [only]
    proto, names = ctx.protocol(), ctx.source.names
    threads = ctx.cfg.threads if ctx.cfg.executor == "local" else (ctx.cfg.threads or 1)
    # expect: the attributes each result group must have (checked against the folder's stores before anything runs)
    tasks, info = [], {"not_applicable": {}, "produced": [], "splits": splits, "expect": {}, "outputs": {}}

    def shard_id(stage, name, i, extra):
        return sh.config_hash({"protocol": proto, "stage": stage, "name": name, "shard": [i, n],
                               "names": [names[k] for k in splits[i]], "batch_size": ctx.batch_size,
                               "skip_bad_images": ctx.cfg.skip_bad_images, **extra})

    producers: dict[str, tuple[str, dict[int, str]]] = {}
    if "maps" in stages:
        methods, skipped = build_methods(ctx, ctx.cfg.methods)
        info["not_applicable"].update(skipped)
        covered: set[str] = set()
        clean_h = {i: shard_id("clean", "clean", i, {}) for i in chosen}
        for i in chosen:
            tasks.append(Task("clean", "clean", i, n, splits[i], cfg, clean_h[i], threads=threads))
        for method in in_run_order(methods):
            if set(method.output_ids) <= covered:  # all its maps come from a method deriving several
                continue
            hashes, info["outputs"][method.id] = {}, list(method.output_ids)
            for i in chosen:
                hashes[i] = shard_id("maps", method.id, i, {"params": method.params, "clean": clean_h[i],
                                                             "outputs": list(method.output_ids),
                                                             **_version(method)})
                tasks.append(Task("maps", method.id, i, n, splits[i], cfg, hashes[i],
                                  deps=[f"clean:clean:{i}of{n}"], inputs={"clean": clean_h[i]}, threads=threads))
            for oid in method.output_ids:
                if oid not in covered:
                    producers[oid] = (method.id, hashes)
                    info["expect"][f"maps/{oid}"] = {"params": method.params, "version": method.version,
                                                     "code": method.code()}
                    info["produced"].append(oid)
            covered |= set(method.output_ids)
    if "metrics" in stages:
        metric_ids = ctx.cfg.metrics or list(DEFAULT_METRICS)
        if map_ids is None:
            map_ids = info["produced"] if "maps" in stages else _stored_map_ids(ctx)
        stored = {} if "maps" in stages else _stored_map_params(ctx)
        for metric in build_metrics(ctx, metric_ids):
            metric_id = metric.id
            for mid in map_ids:
                for i in chosen:
                    if mid in producers:
                        prod, hashes = producers[mid]
                        src, deps = (prod, hashes[i]), [f"maps:{prod}:{i}of{n}"]
                        extra = {"maps": hashes[i]}
                    elif mid in stored:
                        src, deps, extra = None, [], {"maps_params": stored[mid]}
                    else:
                        raise StoreError(f"no maps stored for {mid!r} in {ctx.run_dir / 'maps.h5'}; run the maps "
                                         "stage first")
                    name = f"{metric_id}/{mid}"
                    info["expect"][name] = {"params": metric.params, "version": metric.version,
                                            "code": metric.code()}
                    tasks.append(Task("metrics", name, i, n, splits[i], cfg,
                                      shard_id("metrics", name, i, {"params": metric.params, **extra,
                                                                    **_version(metric)}),
                                      deps=deps, inputs={"maps": src}, threads=threads))
    return tasks, info


def _version(obj) -> dict:
    """The class's ``version`` for a shard's configuration hash: another version makes its shards stale. Version 1
    adds nothing, so shards made before classes had a version keep their hash."""
    return {} if obj.version == 1 else {"version": obj.version}


def refuse_other_results(ctx: RunContext, expect: dict[str, dict]) -> None:
    """Before any task runs: a result group of the folder's ``maps.h5`` / ``metrics.h5`` that holds finished rows
    of other parameters or another ``version`` than ``expect`` (group -> attributes) is refused with the message
    of the one-process stages (:meth:`H5Store.check_group`), not found at the merge after the shards ran (after
    :func:`recompute_sharded` has dropped what ``--recompute`` names)."""
    for path, open_store, prefix in ((ctx.run_dir / "maps.h5", ctx.open_maps, True),
                                     (ctx.run_dir / "metrics.h5", ctx.open_metrics, False)):
        groups = {g: a for g, a in expect.items() if g.startswith("maps/") == prefix}
        if not groups or not path.exists():
            continue
        try:
            store = open_store(mode="r")
        except (OSError, StoreError):
            continue  # unreadable, or of another protocol: the merge says so (and rebuilds an unreadable store)
        with store:
            for group, attrs in groups.items():
                try:
                    if store.has_group(group):
                        store.check_group(group, attrs, ["params", "version"])
                except StoreError as err:
                    if not ctx.cfg.shard:
                        raise
                    raise StoreError(f"{err} (--recompute drops the folder's results, so it runs in a command that "
                                     "merges: give it to one without --shard)") from None


def recompute_sharded(ctx: RunContext, tasks: list[Task], info: dict, log=print) -> list[str]:
    """``--recompute`` in a sharded run (the driver merges, so it runs before any task): drop the asked groups of
    the folder's ``maps.h5`` / ``metrics.h5`` as one process does (:func:`runners.maps.drop_for_recompute`,
    :func:`runners.scoring.drop_values_for_recompute`), and move aside the finished shards of the asked methods and
    metrics, and of the metrics of their maps, so they run again. Returns the lines to say."""
    from .maps import drop_for_recompute
    from .scoring import drop_values_for_recompute

    asked, outputs = set(ctx.cfg.recompute or ()), info["outputs"]  # producer method id -> its output ids
    # an asked id: a producer (all its outputs), or one of its outputs (a variant, such as pcamp of pcampm)
    oids = {oid for mid, outs in outputs.items() if mid in asked for oid in outs} | asked
    redo = {t.key for t in tasks if (t.stage == "maps" and (t.name in asked or set(outputs[t.name]) & asked))
            or (t.stage == "metrics" and (t.name.split("/", 1)[0] in asked or t.name.split("/", 1)[1] in oids))}
    lines: list[str] = []
    ids = sorted(asked & (set(outputs) | {oid for outs in outputs.values() for oid in outs}))
    if (ctx.run_dir / "maps.h5").is_file() and ids:
        methods, _ = build_methods(ctx, ids)
        with ctx.open_maps() as store:
            lines += drop_for_recompute(ctx, store, methods)
    metric_keys = [t.name for t in tasks if t.stage == "metrics"]
    if (ctx.run_dir / "metrics.h5").is_file() and metric_keys:
        metric_ids, map_ids = (sorted({k.split("/", 1)[j] for k in metric_keys}) for j in (0, 1))
        with ctx.open_metrics() as store:
            lines += drop_values_for_recompute(ctx, store, metric_ids, map_ids)
    for t in tasks:
        if t.key in redo and t.paths().h5.exists():
            moved = move_aside(t.paths().h5, "recompute")
            move_aside(t.paths().manifest, "recompute")
            log(f"--recompute: {t.paths().h5.name} moved aside to {moved.name} and computed again")
    return lines


def _stored_map_params(ctx) -> dict[str, object]:
    path = ctx.run_dir / "maps.h5"
    if not path.exists():
        return {}
    with H5Store(path, ctx.source.names, {"protocol": ctx.protocol()}, check_attrs=["protocol"], mode="r") as s:
        return {g: s.group_attrs(f"maps/{g}").get("params") for g in s.groups("maps")}


def _stored_map_ids(ctx) -> list[str]:
    ids = list(_stored_map_params(ctx))
    if ctx.cfg.methods is not None:
        missing = [m for m in ctx.cfg.methods if m not in ids]
        if missing:
            raise StoreError(f"no maps stored for {missing} in {ctx.run_dir / 'maps.h5'}; run the maps stage "
                             f"first (stored: {ids or 'none'})")
        return list(ctx.cfg.methods)
    return ids


def merge(ctx: RunContext, tasks: list[Task] | None = None, log=print) -> dict:
    """Merge finished shards into ``maps.h5`` / ``metrics.h5`` and write the CSV files of the merged metrics.

    ``tasks`` None: every finished shard under ``shards/`` whose protocol is this run's. A metric value is merged only
    where its map is done in the merged ``maps.h5``. Returns counts, and ``not_merged``: the shards left out, with
    the reason (corrupt, truncated, unreadable), each also logged."""
    run_dir = ctx.run_dir
    not_merged: list[str] = []
    if tasks is None:
        found, not_merged = _finished_shards(run_dir, ctx.protocol())
    else:
        found = []
        for t in tasks:
            p = t.paths()
            if sh.check_shard(p, t.chash, verify=False)[0] == "done":
                found.append((t.stage, t.name, p.h5))
    for why in not_merged:
        log(f"not merged: {why}")
    out = {"clean": 0, "maps": 0, "metrics": 0, "csv": 0, "not_merged": not_merged}
    if not found:
        return out
    rank = {s: k for k, s in enumerate(sh.STAGES)}
    found.sort(key=lambda x: rank[x[0]])
    _check_model_store(run_dir / "maps.h5", log)
    if any(s in ("clean", "maps") for s, _, _ in found):
        with ctx.open_maps() as store:
            for stage, name, path in found:
                if stage == "clean":
                    out["clean"] += sh.merge_clean(store, path)
                elif stage == "maps":
                    sh.merge_clean(store, path)
                    out["maps"] += sh.merge_shard(store, path, "maps")
    metric_keys = sorted({name for stage, name, _ in found if stage == "metrics"})
    if metric_keys:
        _check_model_store(run_dir / "metrics.h5", log)
        with ctx.open_maps(mode="r") as maps:
            mids = {k.split("/", 1)[1] for k in metric_keys}
            done = {mid: maps.status(f"maps/{mid}") == DONE for mid in mids}
            crc = {mid: maps.read(f"maps/{mid}", "crc") for mid in mids}
        with ctx.open_metrics() as store:
            for stage, name, path in found:
                if stage == "metrics":
                    out["metrics"] += sh.merge_shard(store, path, name.split("/", 1)[0], maps_done=done.get,
                                                     maps_crc=crc.get, log=log)
            for key in metric_keys:
                if store.has_group(key):
                    metric_id, mid = key.split("/", 1)
                    write_metric_csvs(run_dir / "csv", ctx.tag, build_metric(ctx, metric_id), mid, store)
                    out["csv"] += 1
    ctx.write_provenance()
    return out


def _check_model_store(path: Path, log) -> None:
    """A model store HDF5 cannot open is reported by name and moved aside: the merge rebuilds it from shards."""
    if not path.exists():
        return
    try:
        with __import__("h5py").File(path, "r", locking=False) as f:
            f["names"].shape  # noqa: B018
    except (OSError, KeyError) as err:
        moved = move_aside(path, "corrupt")
        log(f"corrupt store: {path} is not a readable HDF5 file ({err}); moved aside to {moved.name}, rebuilt "
            "from the shards")


def _finished_shards(run_dir: Path, protocol: dict) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """(every finished shard of this protocol that checks out, the reasons of those that do not)."""
    out, bad = [], []
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
                bad.append(why)
    return out, bad


def run_sharded(ctx: RunContext, stages: tuple[str, ...], log=print) -> dict:
    """Plan, skip finished shards, run the rest on the configured executor, merge. Returns the stage reports."""
    cfg = ctx.cfg
    only, n = sh.parse_shard(cfg.shard) if cfg.shard else (None, cfg.shards or 1)
    lock = RunLock(ctx.run_dir / "shards" / f"lock-{only}of{n}") if only is not None else RunLock(ctx.run_dir)
    with lock:
        tasks, info = plan(ctx, stages, n, only)
        dropped = recompute_sharded(ctx, tasks, info, log) if cfg.recompute else []
        refuse_other_results(ctx, info["expect"])
        done: dict[str, dict] = {}
        todo = []
        for t in tasks:
            state, why = sh.check_shard(t.paths(), t.chash)
            if state == "done":
                done[t.key] = summary(t, skipped=True)
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
            make_executor(cfg, ctx.device.type == "cuda").run(todo, done, on_result)
        merged = merge(ctx, tasks, log) if only is None else None
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
            failed, stored_code = _shard_group_facts(t.paths().h5, group)
            rep.failed[key].update(failed)
            if group in info["expect"]:  # a finished shard reused: named when the files of its code changed since
                rep.reused_after_change(group, man.get("groups", {}).get(group, {}).get("done", 0),
                                        changed_code_files(stored_code, info["expect"][group]["code"]))
            continue
        rep.computed[key] += res["computed"].get(key, 0)
        rep.already[key] = rep.already.get(key, 0) + res["already"].get(key, 0)
        rep.not_applicable.update(res["not_applicable"])
        rep.failed[key].update(res["failed"].get(key, {}))
        rep.notices.extend(n for n in res.get("notices", []) if n not in rep.notices)
        for group, (n_done, files) in res.get("code_changes", {}).items():
            rep.reused_after_change(group, n_done, tuple(files))
        if key in res["seconds"]:
            rep.seconds[key] = rep.seconds.get(key, 0.0) + res["seconds"][key]
    reports["maps" if "maps" in stages else "metrics"].notices[:0] = input_notices(ctx, tasks, done) + dropped
    for key in list(reports["metrics"].computed):
        if key in reports["metrics"].not_applicable:
            reports["metrics"].computed.pop(key)
            reports["metrics"].failed.pop(key, None)
    return {"reports": reports, "errors": errors, "merged": merged, "tasks": tasks, "shard": (only, n)}


def input_notices(ctx: RunContext, tasks: list[Task], done: dict[str, dict]) -> list[str]:
    """The lines of :func:`runners.clean.input_change_notice` for a sharded run: the images of the folder's
    ``maps.h5`` and of the finished clean shards it reuses that were checked and classified by other model or
    image-loading code, or other package versions, than this process has; one line per such code, counting each
    image once (a merged shard's images are in both)."""
    sources = [ctx.run_dir / "maps.h5"]
    sources += [t.paths().h5 for t in tasks if t.stage == "clean" and (done.get(t.key) or {}).get("skipped")]
    by_code: dict[str, set[str]] = {}
    for path in sources:
        if not path.is_file():
            continue
        try:
            with H5Store.read_only(path) as s:
                if s.has_group("clean") and "code" in s.f["clean"].attrs:
                    key = json.dumps(s.group_attrs("clean")["code"], sort_keys=True)
                    rows = np.flatnonzero(s.status("clean") == DONE)
                    by_code.setdefault(key, set()).update(s.names[i] for i in rows)
        except (OSError, StoreError, KeyError, ValueError):
            continue  # unreadable: the merge says so
    now = input_code() if by_code else {}
    lines = (input_change_notice(json.loads(key), now, len(names)) for key, names in by_code.items())
    return [line for line in lines if line]


def _shard_group_facts(path: Path, group: str) -> tuple[dict[str, str], dict | None]:
    """(the failures of ``group`` in the shard at ``path``, by image; the ``code`` that computed it)."""
    try:
        with H5Store.read_only(path) as s:
            if not s.has_group(group):
                return {}, None
            return s.errors(group), s.group_attrs(group).get("code")
    except (OSError, StoreError, KeyError):
        return {}, None
