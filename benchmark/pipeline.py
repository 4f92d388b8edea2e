"""Orchestration: images -> model -> maps -> store -> metrics -> CSV -> tables, one direction, resumable.

Every stage skips what the stores already hold, so a killed run started again computes only what is missing.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from methods.base import METHODS, Method, MethodError, NotApplicable, get_method_class, load_builtin_methods, load_plugin
from metrics.base import Metric, get_metric_class

from . import data as data_mod
from . import precision as precision_mod
from .csvio import write_metric_csvs
from .imagecache import ImageCache
from .models import ModelBundle, load_model
from .profiles import get_profile
from .provenance import environment, file_sha256
from .store import DONE, FAILED, IMG_BAD, IMG_OK, H5Store, RunLock, StoreError
from .writer import BackgroundWriter

DEFAULT_METRICS = ("insertion", "deletion")


@dataclass
class RunConfig:
    model: str = "vgg16"
    weights: str = "imagenet"
    data: str | None = None
    image_list: str | None = None
    limit: int | None = None
    methods: list[str] | None = None
    metrics: list[str] | None = None
    out: str | None = None
    device: str = "auto"
    profile: str = "paper"
    seed: int = 0
    batch_size: int | None = None
    skip_bad_images: bool = False
    plugins: list[str] = field(default_factory=list)
    progress: bool = True
    # scale-out (benchmark/executor.py): executor local|ray, shards per method, or one shard "i/n" of a split
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    shards: int | None = None
    shard: str | None = None
    threads: int | None = None  # torch threads per task (Ray default 1)
    precision: str = "fp32"  # fp32 (paper) | tf32 | bf16: benchmark/precision.py
    cache_gb: float | None = None  # device memory for decoded images and blurred baselines (default: 4 GB)
    memory_gb: float | None = None  # bound on the memory of the passes (default: from free GPU memory; none on CPU)
    pass_batch_size: int | None = None  # inputs per pass of deterministic work (default: --batch-size, else tuned)

    @property
    def sharded(self) -> bool:
        """Work goes through shard stores and a merge (Ray, several shards, or one shard of a split)."""
        return self.executor != "local" or bool(self.shard) or (self.shards or 1) > 1


@dataclass
class StageReport:
    """What a stage computed, skipped and failed, per method (or metric/method)."""

    computed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    produced: list[str] = field(default_factory=list)  # every map id the stage covered (variants included)
    already: dict[str, int] = field(default_factory=dict)  # images found done in the store (resumed)

    def lines(self) -> list[str]:
        return [f"  {key}: {n} computed, {self.already.get(key, 0)} already stored, {len(self.failed.get(key, {}))} "
                f"failed" + (f" ({self.seconds[key]:.1f} s)" if key in self.seconds else "")
                for key, n in self.computed.items()]

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], not {name!r}")
    return torch.device(name)


def model_tag(model: str, weights: str) -> str:
    name = "efficientnet_lite0" if model == "efficientnet-lite0" else model
    return f"{name}-random" if weights == "random" else name


class Benchmark:
    """One model run: its image source, its stores in ``<out>/<model tag>/`` and the stages."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profile = get_profile(cfg.profile)
        for plugin in cfg.plugins:
            load_plugin(plugin)
        load_builtin_methods()
        self.device = resolve_device(cfg.device)
        self.batch_size = cfg.batch_size or (128 if self.device.type == "cuda" else 32)
        if self.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        self.source = data_mod.make_source(cfg.data, cfg.image_list)
        self.tag = model_tag(cfg.model, cfg.weights)
        out = Path(cfg.out) if cfg.out else Path("results") / self.profile.name
        self.run_dir = out / self.tag
        n = len(self.source.names)
        if cfg.limit is not None and cfg.limit < 1:
            raise ValueError("--limit must be >= 1")
        self.indices = list(range(min(n, cfg.limit) if cfg.limit else n))
        self._model: ModelBundle | None = None
        self.memory: dict | None = None  # the memory bound applied to the batch size (benchmark/memory.py)
        self._pass_bs = cfg.pass_batch_size or cfg.batch_size  # None: tuned on first use
        self.pass_tuning: dict | None = None
        if self._pass_bs is not None and self._pass_bs < 1:
            raise ValueError("--pass-batch-size must be >= 1")
        if cfg.memory_gb is not None and cfg.memory_gb <= 0:
            raise ValueError("--memory-gb must be > 0")
        self.precision = precision_mod.check_precision(cfg.precision)
        precision_mod.configure(self.precision, self.device)
        self._cache: ImageCache | None = None

    # ----------------------------------------------------------------------------------------- basics
    @property
    def model(self) -> ModelBundle:
        if self._model is None:
            self._model = load_model(self.cfg.model, self.cfg.weights, self.device, seed=self.cfg.seed)
            self._bound_batch_size()
        return self._model

    def _bound_batch_size(self) -> None:
        """Cap the batch size by the memory bound (``--memory-gb``, or the free GPU memory), once the model is
        loaded; a run plans its shards and batches after this."""
        if self.memory is not None or (self.cfg.memory_gb is None and self.device.type != "cuda"):
            return
        from .memory import bounded_batch_size

        bs, self.memory = bounded_batch_size(self.batch_size, self._model.net, self.profile.image_size,
                                             self.device, self.cfg.memory_gb, self.cfg.cache_gb)
        if bs < self.batch_size:
            tqdm.write(f"batch size {self.batch_size} -> {bs}: {self.memory['bytes_per_input'] / 2**20:.0f} MiB "
                       f"per model input (estimate) within a budget of {self.memory['budget_bytes'] / 2**30:.1f} GiB "
                       "(--memory-gb / free GPU memory)")
            self.batch_size = bs

    def resolve_pass_batch_size(self) -> int:
        """Model inputs per forward pass for the deterministic methods and every metric: ``--batch-size`` when
        given, else the model's fastest size on this device (:func:`benchmark.costs.tune_pass_batch_size`), at most
        the memory-bounded batch size. Their results do not depend on it (tested); stochastic methods, whose noise
        draws follow the batch, always use ``--batch-size`` (default 32 CPU / 128 GPU) so they are the same on
        every machine."""
        if self._pass_bs is None:
            from .costs import tune_pass_batch_size

            bounded = self.resolve_batch_size()
            cap = bounded if self.memory is not None and self.memory.get("cap") is not None else None
            with self.autocast():
                self._pass_bs, self.pass_tuning = tune_pass_batch_size(self.model.net, self.profile.image_size,
                                                                       self.device, cap=cap)
        return self._pass_bs

    def pass_size_for(self, method: Method) -> int:
        """Inputs per pass for ``method`` (see :meth:`resolve_pass_batch_size`)."""
        return self.resolve_batch_size() if getattr(method, "stochastic", False) else self.resolve_pass_batch_size()

    def resolve_batch_size(self) -> int:
        """The batch size after the memory bound (loads the model when a bound applies)."""
        if self.cfg.memory_gb is not None or self.device.type == "cuda":
            _ = self.model
        return self.batch_size

    def protocol(self) -> dict:
        """What must be equal for results to be mixed in one store."""
        return {"profile": self.profile.as_dict(), "model": self.tag, "weights": self.cfg.weights,
                "seed": self.cfg.seed, "precision": self.precision}

    def provenance(self) -> dict:
        src = self.source
        lst = self.cfg.image_list
        return {"protocol": self.protocol(), "model": self.model.describe(), "data": src.description,
                "image_list": lst, "image_list_sha256": file_sha256(lst) if lst else None,
                "limit": self.cfg.limit, "batch_size": self.batch_size,
                "pass_batch_size": self.resolve_pass_batch_size(), "pass_batch_tuning": self.pass_tuning,
                "memory_bound": self.memory,
                "environment": environment(self.device)}

    def open_maps(self, mode: str = "a") -> H5Store:
        attrs = {"protocol": self.protocol()} if mode == "r" else {"protocol": self.protocol(),
                                                                  "provenance": self.provenance()}
        return H5Store(self.run_dir / "maps.h5", self.source.names, attrs, check_attrs=["protocol"], mode=mode)

    def open_metrics(self) -> H5Store:
        return H5Store(self.run_dir / "metrics.h5", self.source.names, {"protocol": self.protocol()},
                       check_attrs=["protocol"])

    def lock(self) -> RunLock:
        return RunLock(self.run_dir)

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="img", disable=not self.cfg.progress, dynamic_ncols=True)

    # ----------------------------------------------------------------------------------------- images
    def check_images(self, store: H5Store) -> list[int]:
        """Decode every selected image not yet known good; stop on bad ones unless --skip-bad-images."""
        status = store.f["image_status"][()]
        todo = [i for i in self.indices if status[i] != IMG_OK]
        bad = data_mod.check_images(self.source, [self.source.names[i] for i in todo], progress=self.cfg.progress)
        bad_by_name = {b.name: b.reason for b in bad}
        marks = {i: ((IMG_BAD, bad_by_name[self.source.names[i]]) if self.source.names[i] in bad_by_name
                     else (IMG_OK, "")) for i in todo}
        store.mark_images(marks)
        if bad and not self.cfg.skip_bad_images:
            raise data_mod.DataError(data_mod.format_bad_images(bad))
        status = store.f["image_status"][()]
        usable = [i for i in self.indices if status[i] == IMG_OK]
        skipped = len(self.indices) - len(usable)
        if skipped:
            tqdm.write(f"skipping {skipped} bad image(s), recorded in {store.path} (image_status, image_error)")
        return usable

    def _decode(self, indices: list[int]) -> torch.Tensor:
        """Normalised [B,3,224,224] images on the CPU (PIL decode, resize, the model's normalisation)."""
        x = torch.stack([data_mod.preprocess(self.source.open(self.source.names[i]), self.profile.image_size,
                                             self.profile.antialias) for i in indices])
        return self.model.normalize(x)

    def load_images(self, indices: list[int]) -> torch.Tensor:
        """Normalised [B,3,224,224] images on the device (from the stage's image cache when one is open)."""
        if self._cache is not None:
            return self._cache.images(indices)
        return self._decode(indices).to(self.device)

    def prefetch(self, indices: list[int]) -> None:
        """Decode the next chunk in the background while the model works on this one."""
        if self._cache is not None and indices:
            self._cache.prefetch(indices)

    @contextlib.contextmanager
    def image_cache(self):
        """For a stage: every image decoded once, derived inputs (the blur) computed once, next chunk prefetched."""
        if self._cache is not None:
            yield self._cache
            return
        gb = 4.0 if self.cfg.cache_gb is None else self.cfg.cache_gb
        if gb < 0:
            raise ValueError("--cache-gb must be >= 0")
        self._cache = ImageCache(self._decode, self.device, int(gb * 2**30))
        try:
            yield self._cache
        finally:
            self.image_counters = dict(self._cache.counters)
            self._cache.close()
            self._cache = None

    def autocast(self):
        return precision_mod.autocast(self.precision, self.device)

    def ensure_targets(self, store: H5Store, usable: list[int]) -> None:
        """One clean forward pass per image: the explained class (top-1) and its probability."""
        store.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")}, {"what": "top-1 of the clean image"})
        st = store.status("clean")
        todo = [i for i in usable if st[i] != DONE]
        if not todo:
            return
        from runners.batched import predict

        bar = self._bar(len(todo), "clean forward (targets)")
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            self.prefetch(todo[start + self.batch_size:start + 2 * self.batch_size])
            with self.autocast():
                cls, prob = predict(self.model.net, self.load_images(chunk), self.batch_size)
            store.write("clean", chunk, target=cls.cpu().numpy(), prob=prob.cpu().numpy())
            bar.update(len(chunk))
        bar.close()

    # ----------------------------------------------------------------------------------------- methods
    def make_methods(self, ids: list[str] | None, report: StageReport) -> list[Method]:
        """Instantiate the asked methods. Asked explicitly and not applicable: an error before any work.
        Default (all registered): the ones not applicable to this model are reported and left out."""
        explicit = ids is not None
        ids = ids if explicit else sorted(METHODS)
        out = []
        for mid in ids:
            method = get_method_class(mid)(quick=self.profile.quick_methods, seed=self.cfg.seed)
            method.batch_size = self.pass_size_for(method)
            try:
                method.check_applicable(self.model)
            except NotApplicable as err:
                if explicit:
                    raise
                report.not_applicable[mid] = str(err)
                continue
            out.append(method)
        return out

    def compute_maps(self, method: Method, store: H5Store, usable: list[int], report: StageReport) -> None:
        """Compute the images whose maps (for any output id of the method) are not all stored yet."""
        groups = {oid: f"maps/{oid}" for oid in method.output_ids}
        for oid, group in groups.items():
            store.ensure_group(group, {"map": ((self.profile.image_size,) * 2, "f4")},
                               {"params": method.params, "method": method.describe(), "produced_by": method.id},
                               check=["params"])
        missing = np.zeros(len(store.names), bool)
        for group in groups.values():
            missing |= store.status(group) != DONE
        todo = [i for i in usable if missing[i]]
        report.computed[method.id], report.failed[method.id] = 0, {}
        report.produced.extend(oid for oid in method.output_ids if oid not in report.produced)
        report.already[method.id] = len(usable) - len(todo)
        if not todo:
            return
        targets_all = store.read("clean", "target")
        t0 = time.perf_counter()
        bar = self._bar(len(todo), f"maps {method.id}")
        # the maps of a chunk are copied to the host, checked and stored by a background writer while the model
        # computes the next chunk; leaving early (an error, Ctrl-C) still stores every chunk already computed
        with BackgroundWriter() as writer:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start:start + self.batch_size]
                self.prefetch(todo[start + self.batch_size:start + 2 * self.batch_size])
                for sub, maps, errors in self._explain(method, chunk, targets_all):
                    writer.submit(self._store_maps, store, groups, method, sub, maps, errors, report)
                bar.update(len(chunk))
        bar.close()
        report.seconds[method.id] = time.perf_counter() - t0

    def _store_maps(self, store: H5Store, groups: dict[str, str], method: Method, sub: list[int],
                    maps: dict[str, torch.Tensor] | None, errors: dict[str, dict[int, str]],
                    report: StageReport) -> None:
        """Copy a chunk's maps to the host, fail the NaN / infinite / constant ones (for their own output id
        only: a constant Poly-CAM ablation map does not fail the PCAM+- map) and store the others."""
        if maps is not None:
            maps = {k: v.float().cpu().numpy() for k, v in maps.items()}
            errors = {oid: dict(e) for oid, e in errors.items()}
            for oid, m in maps.items():
                finite = np.isfinite(m).all(axis=(1, 2))
                constant = finite & (m.max(axis=(1, 2)) == m.min(axis=(1, 2)))
                bad = {sub[k]: "map contains NaN or infinite values" for k in np.flatnonzero(~finite)}
                bad.update({sub[k]: "constant map (no ranking)" for k in np.flatnonzero(constant)})
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
                    report.failed[method.id][self.source.names[i]] = reason
                if oid == method.id:
                    done_all.discard(i)
                elif i in sub:
                    report.failed.setdefault(oid, {})[self.source.names[i]] = reason
        report.computed[method.id] += len(done_all)

    def _explain(self, method: Method, chunk: list[int], targets_all: np.ndarray):
        """Yield ``(images, {oid: maps on the device}, {oid: {image: reason}})`` for a chunk. A chunk that raises
        is retried image by image so one bad image fails alone (for every output id)."""
        x = self.load_images(chunk)
        t = torch.as_tensor(targets_all[chunk], device=self.device)
        try:
            with self.autocast():
                maps = method.compute_all(self.model, x, t, self.profile.image_size)
            maps = {k: v.detach() for k, v in maps.items()}
        except Exception as err:
            if len(chunk) == 1:
                reason = f"{type(err).__name__}: {err}"
                yield [], None, {oid: {chunk[0]: reason} for oid in method.output_ids}
                return
            for i in chunk:
                yield from self._explain(method, [i], targets_all)
            return
        yield list(chunk), maps, {}

    def maps_stage(self) -> StageReport:
        report = StageReport()
        methods = self.make_methods(self.cfg.methods, report)
        with self.lock(), self.open_maps() as store, self.image_cache():
            usable = self.check_images(store)
            self.ensure_targets(store, usable)
            # Methods deriving several maps run first: the ones they also produce are then already stored.
            for method in sorted(methods, key=lambda m: -len(m.variants)):
                self.compute_maps(method, store, usable, report)
        self._write_provenance()
        return report

    # ----------------------------------------------------------------------------------------- metrics
    def metrics_stage(self) -> StageReport:
        report = StageReport()
        metric_ids = self.cfg.metrics or list(DEFAULT_METRICS)
        metric_objs: list[Metric] = [get_metric_class(m)(self.profile, self.resolve_pass_batch_size(), self.cfg.seed)
                                     for m in metric_ids]
        with self.lock(), self.open_maps() as maps, self.open_metrics() as store, self.image_cache():
            usable = self.check_images(maps)
            self.ensure_targets(maps, usable)
            stored = maps.groups("maps")
            method_ids = self.cfg.methods if self.cfg.methods is not None else stored
            missing = [m for m in method_ids if m not in stored]
            if missing:
                raise StoreError(f"no maps stored for {missing} in {maps.path}; run the maps stage first "
                                 f"(stored: {stored or 'none'})")
            targets_all = maps.read("clean", "target")
            for metric in metric_objs:
                for mid in method_ids:
                    if self._score(metric, mid, maps, store, usable, targets_all, report):
                        write_metric_csvs(self.run_dir / "csv", self.tag, metric, mid, store)
        self._write_provenance()
        return report

    def explainer_for(self, mid: str, maps: H5Store):
        """``explainer(x, targets) -> [B,H,W]``: recompute the stored map ``mid`` with the same method class,
        parameters and seed (for metrics that re-explain perturbed inputs). Raises NotApplicable for map ids
        no registered method computes (imported maps, ablation maps)."""
        attrs = maps.group_attrs(f"maps/{mid}")
        cls = METHODS.get(mid)
        if cls is None:
            raise NotApplicable(f"no registered method computes {mid!r} on its own (imported or derived maps)")
        method = cls(quick=self.profile.quick_methods, seed=self.cfg.seed)
        method.batch_size = self.pass_size_for(method)
        stored = attrs.get("params")
        if stored is not None and stored != method.params and attrs.get("produced_by") == mid:
            raise NotApplicable(f"the stored maps of {mid} were made with other parameters ({stored})")
        size = self.profile.image_size

        def explain(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return method.compute_all(self.model, x, targets, size)[mid]

        explain.method = method
        return explain

    def _score(self, metric: Metric, mid: str, maps: H5Store, store: H5Store, usable: list[int],
               targets_all: np.ndarray, report: StageReport) -> bool:
        """Score the maps of ``mid`` not yet scored; return False when the metric does not apply to them."""
        key = f"{metric.id}/{mid}"
        explainer = None
        if metric.needs_method:
            try:
                explainer = self.explainer_for(mid, maps)
            except NotApplicable as err:
                report.not_applicable[key] = str(err)
                return False
        arrays = {"value": ((), "f8")}
        if metric.has_curve:
            arrays["curve"] = ((metric.curve_length,), "f4")
        store.ensure_group(key, arrays, {"params": metric.params, "metric": metric.describe(),
                                         "map_params": maps.group_attrs(f"maps/{mid}").get("params")},
                           check=["params", "map_params"])
        mst, st = maps.status(f"maps/{mid}"), store.status(key)
        report.computed[key], report.failed[key] = 0, {}
        for i in usable:
            if mst[i] == FAILED:
                report.failed[key][self.source.names[i]] = "no map (the method failed on this image)"
        todo = [i for i in usable if mst[i] == DONE and st[i] != DONE]
        report.already[key] = int(sum(st[i] == DONE for i in usable))
        if not todo:
            return True
        t0 = time.perf_counter()
        bar = self._bar(len(todo), f"{metric.id} {mid}")
        step = max(1, self.batch_size // (metric.curve_length or 1))  # about one batch of passes per call
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            self.prefetch(todo[start + step:start + 2 * step])
            for sub, res, errors in self._measure(metric, mid, chunk, maps, targets_all, explainer):
                if sub:
                    store.write(key, sub, **res)
                    report.computed[key] += len(sub)
                for i, reason in errors.items():
                    store.fail(key, i, reason)
                    report.failed[key][self.source.names[i]] = reason
            bar.update(len(chunk))
        bar.close()
        report.seconds[key] = time.perf_counter() - t0
        return True

    def _measure(self, metric: Metric, mid: str, chunk: list[int], maps: H5Store, targets_all: np.ndarray,
                 explainer):
        """Metric values for a chunk; a chunk that raises is retried image by image so one image fails alone."""
        x = self.load_images(chunk)
        m = torch.as_tensor(maps.read(f"maps/{mid}", "map", chunk), device=self.device)
        t = torch.as_tensor(targets_all[chunk], device=self.device)
        kwargs = {"explainer": explainer}
        if metric.prepare_key is not None:
            if self._cache is not None:
                kwargs["prepared"] = self._cache.derived(metric.prepare_key, chunk, x, metric.prepare)
            else:
                kwargs["prepared"] = metric.prepare(x)
        try:
            with self.autocast():
                res = metric.compute(self.model, x, m, t, **kwargs)
            res = {k: v.detach().cpu().numpy() for k, v in res.items()}
        except Exception as err:
            if len(chunk) == 1:
                yield [], None, {chunk[0]: f"{type(err).__name__}: {err}"}
                return
            for i in chunk:
                yield from self._measure(metric, mid, [i], maps, targets_all, explainer)
            return
        finite = np.isfinite(res["value"])
        good = [k for k in range(len(chunk)) if finite[k]]
        errors = {chunk[k]: f"{metric.id} is not finite ({res['value'][k]})" for k in range(len(chunk))
                  if not finite[k]}
        yield [chunk[k] for k in good], {k: v[good] for k, v in res.items()}, errors

    # ----------------------------------------------------------------------------------------- outputs
    def _write_provenance(self) -> None:
        import json

        path = self.run_dir / "provenance.json"
        tmp = path.with_suffix(".json.tmp")
        prov = self.provenance()
        prov["config"] = asdict(self.cfg)
        tmp.write_text(json.dumps(prov, indent=2, default=str))
        tmp.replace(path)

    def tables_stage(self):
        from .tables import build_tables

        return build_tables(self.run_dir, self.tag)


def method_catalogue() -> list[dict]:
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
