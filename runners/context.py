"""The run context: one model run's configuration, model, images, stores and batch sizes, shared by every stage.

``RunContext(RunConfig(...))`` resolves the profile, device, precision and image source at once; the model is
loaded, and the inputs per pass tuned, on first use. Stores live in ``<out>/<model tag>/`` (``maps.h5``,
``metrics.h5``, ``csv/``, ``provenance.json``). :meth:`RunContext.view` gives the same run restricted to a shard
of the image list (the executors' tasks).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import torch
from tqdm.auto import tqdm

from benchmark.core import precision as precision_mod
from benchmark.core.atomic import read_json_object, sha256_file, write_text
from benchmark.core.memory import bounded_batch_size
from benchmark.core.profiles import Profile, get_profile
from benchmark.data.imagecache import ImageCache
from benchmark.data.lists import AUTHORS_LIST
from benchmark.data.preprocessing import preprocess
from benchmark.data.sources import ImageSource, make_source
from benchmark.models import ModelBundle, load_model
from benchmark.models.loading import check_model_name
from methods.base import load_builtin_methods

from .agreement import agreement, stored_top1
from .overrides import check_overrides, check_recompute
from .plugins import load_plugin
from .progress import PassProgress
from .provenance import environment
from .store import COMPACT, H5Store, RunLock, StoreError
from .tuning import cached_pass_batch_size, cached_tuning

DEFAULT_METRICS = ("insertion", "deletion")
COMPACT_CHOICES = ("none", "ablations", "all")


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
    # scale-out (runners/executors.py): executor local|ray, shards per method, or one shard "i/n" of a split
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    shards: int | None = None
    shard: str | None = None
    threads: int | None = None  # torch threads per task (Ray default 1)
    precision: str = "fp32"  # fp32 (paper) | tf32 | bf16: benchmark/core/precision.py
    cache_gb: float | None = None  # device memory for decoded images and blurred baselines (default: 4 GB)
    memory_gb: float | None = None  # bound on the memory of the passes (default: from free GPU memory; none on CPU)
    # inputs per pass of deterministic work, fixed by a driver for its tasks (None: --batch-size, else tuned)
    pass_batch_size: int | None = None
    overrides: dict = field(default_factory=dict)  # --set: {method or metric id: {parameter: value}}
    # --compact-maps none|ablations|all (runners/store.py COMPACT); None: as the folder's maps.h5 says (else none)
    compact_maps: str | None = None
    # --recompute: method or metric ids whose stored results are dropped, once per command, and computed again
    recompute: list[str] | None = None

    @property
    def sharded(self) -> bool:
        """Work goes through shard stores and a merge (Ray, several shards, or one shard of a split)."""
        return self.executor != "local" or bool(self.shard) or (self.shards or 1) > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], not {name!r}")
    return torch.device(name)


def model_tag(model: str, weights: str) -> str:
    """The model's folder and file name: ``<model>``, ``<model>-random`` for random weights."""
    name = "efficientnet_lite0" if model == "efficientnet-lite0" else model
    return f"{name}-random" if weights == "random" else name


def run_dir_of(cfg: RunConfig) -> Path:
    out = Path(cfg.out) if cfg.out else Path("results") / get_profile(cfg.profile).name
    return out / model_tag(cfg.model, cfg.weights)


class SubSource(ImageSource):
    """The images of one shard, in list order (an image source over a subset of another)."""

    def __init__(self, parent: ImageSource, names: list[str]):
        self.parent, self.names = parent, names
        self.description = f"{parent.description} [shard of {len(names)}]"

    def open(self, name: str):
        return self.parent.open(name)

    def fingerprint(self, name: str) -> int:
        return self.parent.fingerprint(name)


class RunContext:
    """One model run: its configuration, profile, device, image source, stores and (lazily) model."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profile: Profile = get_profile(cfg.profile)
        for plugin in cfg.plugins:
            load_plugin(plugin)
        load_builtin_methods()
        check_overrides(cfg.overrides)
        check_recompute(cfg)
        self.device = resolve_device(cfg.device)
        if cfg.batch_size is not None and cfg.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, not {cfg.batch_size}")
        self.batch_size = cfg.batch_size or (128 if self.device.type == "cuda" else 32)
        if cfg.limit is not None and cfg.limit < 1:
            raise ValueError("--limit must be >= 1")
        if cfg.memory_gb is not None and cfg.memory_gb <= 0:
            raise ValueError("--memory-gb must be > 0")
        if cfg.cache_gb is not None and cfg.cache_gb < 0:
            raise ValueError("--cache-gb must be >= 0")
        if cfg.pass_batch_size is not None and cfg.pass_batch_size < 1:
            raise ValueError(f"pass_batch_size must be >= 1, not {cfg.pass_batch_size}")
        check_model_name(cfg.model)  # a mistyped model is said before anything about the data
        self.source: ImageSource = make_source(cfg.data, cfg.image_list, demo_by_default=self.profile.quick)
        self.tag = model_tag(cfg.model, cfg.weights)
        self.run_dir = run_dir_of(cfg)
        n = len(self.source.names)
        self.indices = list(range(min(n, cfg.limit) if cfg.limit else n))
        self.precision = precision_mod.check_precision(cfg.precision)
        precision_mod.configure(self.precision, self.device)
        if cfg.compact_maps is not None and cfg.compact_maps not in COMPACT_CHOICES:
            raise ValueError(f"--compact-maps must be one of {', '.join(COMPACT_CHOICES)}, not {cfg.compact_maps!r}")
        self._compact = cfg.compact_maps
        self._model: ModelBundle | None = None
        self.memory: dict | None = None  # the memory bound applied to the batch size (benchmark/core/memory.py)
        self._pass_bs = cfg.pass_batch_size or cfg.batch_size  # None: tuned on first use
        self.pass_tuning: dict | None = None
        self._cache: ImageCache | None = None
        self._progress: PassProgress | None = None
        self.image_counters: dict = {}
        self.dropped: set[str] = set()  # groups --recompute has dropped in this command (never twice)
        self.notices: list[str] = []  # lines found by the image checks, said once: by the first stage's report
        self._noticed: set[str] = set()

    def notice(self, line: str) -> None:
        """Say ``line`` in the next stage report, once per command."""
        if line not in self._noticed:
            self._noticed.add(line)
            self.notices.append(line)

    def take_notices(self) -> list[str]:
        """The lines found by the checks of :func:`runners.clean.prepare` not said yet (then none)."""
        out, self.notices = self.notices, []
        return out

    # ----------------------------------------------------------------------------------------- the model
    @property
    def model(self) -> ModelBundle:
        if self._model is None:
            self._model = load_model(self.cfg.model, self.cfg.weights, self.device, seed=self.cfg.seed)
            self._model.input_size = self.profile.image_size
            self._bound_batch_size()
        return self._model

    def _bound_batch_size(self) -> None:
        """Cap the batch size by the memory bound (``--memory-gb``, or the free GPU memory), once the model is
        loaded; a run plans its shards and batches after this."""
        if self.memory is not None or (self.cfg.memory_gb is None and self.device.type != "cuda"):
            return
        bs, self.memory = bounded_batch_size(self.batch_size, self._model.net, self.profile.image_size,
                                             self.device, self.cfg.memory_gb, self.cfg.cache_gb)
        if bs < self.batch_size:
            tqdm.write(f"batch size {self.batch_size} -> {bs}: {self.memory['bytes_per_input'] / 2**20:.0f} MiB "
                       f"per model input (estimate) within a budget of {self.memory['budget_bytes'] / 2**30:.1f} GiB "
                       "(--memory-gb / free GPU memory)")
            self.batch_size = bs

    def resolve_batch_size(self) -> int:
        """The batch size after the memory bound (loads the model when a bound applies)."""
        if self.cfg.memory_gb is not None or self.device.type == "cuda":
            _ = self.model
        return self.batch_size

    def resolve_pass_batch_size(self) -> int:
        """Model inputs per forward pass for the deterministic methods and every metric: ``--batch-size`` when
        given, else the model's fastest size on this device (:func:`runners.tuning.cached_pass_batch_size`: measured
        once per machine, model and precision), at most the memory-bounded batch size. Their results do not depend
        on it (tested); stochastic methods, whose noise draws follow the batch, always use ``--batch-size`` (default
        32 CPU / 128 GPU) so they are the same on every machine."""
        if self._pass_bs is None:
            bounded = self.resolve_batch_size()
            cap = bounded if self.memory is not None and self.memory.get("cap") is not None else None
            with self.autocast():
                self._pass_bs, self.pass_tuning = cached_pass_batch_size(
                    self.model.net, self.model.name, self.profile.image_size, self.device, self.precision, cap=cap,
                    echo=tqdm.write if self.cfg.progress else None)
        return self._pass_bs

    def known_pass_batch_size(self) -> tuple[int, str]:
        """The inputs per pass without measuring anything (the dry run): ``--batch-size``, the size stored for this
        machine, model and precision, or a provisional default (the run itself will measure it); (size, where from).
        The run's methods and metrics are then built with it."""
        if self._pass_bs is not None:
            return self._pass_bs, "given"
        bounded = self.resolve_batch_size()
        cap = bounded if self.memory is not None and self.memory.get("cap") is not None else None
        tuned = cached_tuning(self.model.name, self.profile.image_size, self.device, self.precision, cap)
        if tuned is not None:
            self._pass_bs, self.pass_tuning = int(tuned["chosen"]), tuned
            return self._pass_bs, f"stored for this machine, measured {tuned.get('measured')}"
        self._pass_bs = min(128 if self.device.type == "cuda" else 8, bounded)
        return self._pass_bs, "provisional: this machine has no stored measurement; the run measures it once"

    def autocast(self):
        return precision_mod.autocast(self.precision, self.device)

    # ----------------------------------------------------------------------------------------- identity
    def protocol(self) -> dict:
        """What must be equal for results to be mixed in one store: the profile, the model, its weights (their
        content's sha256: a file replaced at the same path is a different protocol), the seed, the precision and,
        when not the default, the compact storage of the maps (``--compact-maps``: float16 maps move the metrics'
        values slightly)."""
        proto = {"profile": self.profile.as_dict(), "model": self.tag, "weights": self.cfg.weights,
                 "weights_sha256": self.model.weights_sha256, "seed": self.cfg.seed, "precision": self.precision}
        if self.compact_maps != "none":
            proto["compact_maps"] = self.compact_maps
        return proto

    def _stored_compact(self, path: Path) -> str | None:
        """The ``--compact-maps`` of an existing store (its root protocol), None when there is no readable one."""
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r", locking=False) as f:
                proto = f.attrs.get("protocol")
            return json.loads(proto).get("compact_maps", "none") if proto is not None else None
        except (OSError, ValueError, AttributeError):
            return None  # the store's own checks say what is wrong with it

    @property
    def compact_maps(self) -> str:
        """``--compact-maps`` of this run: as asked, else as the folder's maps.h5 was made, else ``none``."""
        if self._compact is None:
            self._compact = self._stored_compact(self.run_dir / "maps.h5") or "none"
        return self._compact

    def map_storage(self, output_id: str) -> dict:
        """The ``storage`` group attribute of the maps of ``output_id``: {"storage": COMPACT} when they are stored
        compactly (``--compact-maps all``, or ``ablations`` and a Poly-CAM ablation id), else {}."""
        from methods.polycam import is_ablation
        mode = self.compact_maps
        return {"storage": COMPACT} if mode == "all" or (mode == "ablations" and is_ablation(output_id)) else {}

    def _check_compact(self, path: Path) -> None:
        stored = self._stored_compact(path)
        if stored is not None and stored != self.compact_maps:
            raise StoreError(f"{path} was made with --compact-maps {stored}; this command asks for --compact-maps "
                             f"{self.compact_maps}. Continue it with --compact-maps {stored}, or use another --out "
                             "folder (maps of two storage layouts are never mixed).")

    def provenance(self) -> dict:
        lst = self.source.list_path
        return {"protocol": self.protocol(), "model": self.model.describe(), "data": self.source.description,
                "data_source": {"data": str(getattr(self.source, "root", "demo")), "origin": self.source.origin},
                "image_list": str(lst) if lst else None, "image_list_name": lst.name if lst else None,
                "image_list_sha256": sha256_file(lst) if lst else None,
                "image_list_is_authors": bool(lst) and sha256_file(lst) == sha256_file(AUTHORS_LIST),
                "limit": self.cfg.limit, "batch_size": self.batch_size,
                "pass_batch_size": self.resolve_pass_batch_size(), "pass_batch_tuning": self.pass_tuning,
                "memory_bound": self.memory, "compact_maps": self.compact_maps,
                "environment": environment(self.device)}

    def write_provenance(self, metric_params: dict[str, dict] | None = None) -> Path:
        """``provenance.json``: the run's provenance, its configuration, and the parameters of every metric
        scored in this folder so far (kept across commands: each command adds the metrics it ran)."""
        path = self.run_dir / "provenance.json"
        prov = self.provenance()
        prov["config"] = asdict(self.cfg)
        old = {}
        if path.exists():
            try:
                old = read_json_object(path).get("metrics", {})
            except (OSError, ValueError):
                old = {}
        prov["metrics"] = {**old, **(metric_params or {})}
        if (self.run_dir / "maps.h5").is_file():
            names, top1 = stored_top1(self.run_dir / "maps.h5")
            prov["top1_agreement"] = agreement(self.model.name, self.model.weights_sha256, self.profile.image_size,
                                               self.profile.antialias, names, top1)
        return write_text(path, json.dumps(prov, indent=2, default=str))

    # ----------------------------------------------------------------------------------------- stores
    def open_maps(self, mode: str = "a") -> H5Store:
        self._check_compact(self.run_dir / "maps.h5")
        attrs = {"protocol": self.protocol()} if mode == "r" else {"protocol": self.protocol(),
                                                                  "provenance": self.provenance()}
        return H5Store(self.run_dir / "maps.h5", self.source.names, attrs, check_attrs=["protocol"], mode=mode)

    def open_metrics(self, mode: str = "a") -> H5Store:
        self._check_compact(self.run_dir / "metrics.h5")
        return H5Store(self.run_dir / "metrics.h5", self.source.names, {"protocol": self.protocol()},
                       check_attrs=["protocol"], mode=mode)

    def lock(self) -> RunLock:
        return RunLock(self.run_dir)

    @property
    def progress(self) -> PassProgress:
        """The run's progress in model passes (:mod:`runners.progress`)."""
        if self._progress is None:
            self._progress = PassProgress(lambda: self.model.net, enabled=self.cfg.progress)
        return self._progress

    def bar(self, total: int, desc: str, unit: str = "img"):
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.cfg.progress, dynamic_ncols=True)

    # ----------------------------------------------------------------------------------------- images
    def _decode(self, indices: list[int]) -> torch.Tensor:
        """Normalised [B,3,224,224] images on the CPU (PIL decode, resize, the model's normalisation)."""
        x = torch.stack([preprocess(self.source.open(self.source.names[i]), self.profile.image_size,
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

    def derived(self, key: str, indices: list[int], x: torch.Tensor, make) -> torch.Tensor:
        """``make(x)`` per image, computed once per stage and image when a cache is open (e.g. the blur)."""
        if self._cache is not None:
            return self._cache.derived(key, indices, x, make)
        return make(x)

    @contextlib.contextmanager
    def image_cache(self):
        """For a stage: every image decoded once, derived inputs (the blur) computed once, next chunk prefetched."""
        if self._cache is not None:
            yield self._cache
            return
        gb = 4.0 if self.cfg.cache_gb is None else self.cfg.cache_gb
        self._cache = ImageCache(self._decode, self.device, int(gb * 2**30))
        try:
            yield self._cache
        finally:
            self.image_counters = dict(self._cache.counters)
            self._cache.close()
            self._cache = None

    # ----------------------------------------------------------------------------------------- shards
    def view(self, rows: list[int]) -> "RunContext":
        """This run restricted to the images ``rows`` of its list (a shard): the same model, configuration and
        batch sizes; its image list, indices and stores' rows are the shard's (local row k = list row rows[k])."""
        _ = self.model  # loaded once here, shared by every view
        view = object.__new__(RunContext)
        view.__dict__.update(self.__dict__)
        view.source = SubSource(self.source, [self.source.names[i] for i in rows])
        view.indices = list(range(len(rows)))
        view._cache = None
        view.image_counters = {}
        return view
