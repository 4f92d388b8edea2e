"""The cascading-randomisation sanity check as a stage of a run (paper Sec. 4.4, Appendix G; Adebayo et al. 2018).

For each chosen image (default: the first ``profile.sanity_images`` usable images of the run), each method and
each target convention, the maps are recomputed on the network randomised from the output layer down to layer
``s``, for every ``s`` (layer order, seeding and similarity measures: :mod:`metrics.randomisation`; the maps come
from the maps stage's per-chunk call :func:`runners.maps.explain_chunk`), and compared with the trained network's
map. Target conventions:

- ``original_top1`` (Adebayo et al.): explain the clean image's top-1 class of the trained model at every step;
- ``randomised_top1`` (the Poly-CAM reference code): explain the randomised network's own top-1 at each step.

Both conventions of a step go through the method in one call (two rows; one when the two classes coincide).

Outputs, in ``<run dir>``:

- ``randomisation/<image>__<method>__<convention>.npz``: one file per unit (similarities, explained classes,
  layer names, 112x112 min-max normalised float16 thumbnails of every step's map for the figures, protocol),
  written to a temporary name and renamed: a killed run leaves only complete units, and the same command
  started again computes only the missing units;
- ``csv/randomisation_<tag>.csv``, long format, columns ``image, method, convention, step, layer, spearman,
  spearman_abs, ssim, hog`` (step 1..L, ``layer`` = the module re-initialised at that step), rebuilt from the
  units; ``csv/randomisation_targets_<tag>.csv``: the class explained per image, method, convention and step;
- ``csv/randomisation_<tag>.json``: seeds, layer order, similarity parameters, method parameters;
The grids of the paper's Figures 26-28 (``figures/randomisation_<tag>_<image>.png``) are drawn from the units by
:mod:`benchmark.outputs.randomisation_grid`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmark.core.atomic import atomic_write, write_text
from benchmark.core.codefiles import code_files
from methods.base import METHODS, Method, MethodError, NotApplicable
from metrics import randomisation as rnd

from .clean import prepare
from .context import RunContext
from .factory import build_method
from .maps import explain_chunk
from .report import add_code_change, changed_code_files, code_change_notices
from .sanity_units import CONVENTIONS, ROW_KEYS, THUMB, UnitError, load_unit, load_units, unit_path, unit_rows
from .store import DONE, StoreError, move_aside

COLUMNS = ROW_KEYS + rnd.SIMILARITIES


@dataclass
class SanityReport:
    csv: Path | None = None
    targets_csv: Path | None = None
    params_json: Path | None = None
    images: list[str] = field(default_factory=list)  # the images checked, in list order
    touched: list[str] = field(default_factory=list)  # the images with units computed by this call
    computed: dict[str, int] = field(default_factory=dict)  # method -> (image, convention) units computed
    already: dict[str, int] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> {image: reason}
    not_applicable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    layers: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # units reused although their code changed since, one line each

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())

    def lines(self) -> list[str]:
        return [f"  {m}: {n} (image, convention) computed, {self.already.get(m, 0)} already stored, "
                f"{len(self.failed.get(m, {}))} image(s) failed" for m, n in self.computed.items()]


def _thumb(m: torch.Tensor) -> np.ndarray:
    t = F.interpolate(m[None, None].float(), size=(THUMB, THUMB), mode="bilinear", align_corners=False)[0, 0]
    return rnd.minmax(t.cpu().numpy()).astype(np.float16)


def _moved_aside(path: Path, reason: str, now: bool = False) -> str:
    """Move a unit that does not read aside; the line that says so (``now``: it is computed again by this call)."""
    dest = move_aside(path, "corrupt")
    return f"{reason}: moved aside to {dest.name if dest else '(gone)'}; " + (
        "computed again now" if now else "computed again when the sanity check next covers its image")


class _Failed(Exception):
    """A method failed on the image: the message is the reason explain_chunk recorded."""


def _reason(err: Exception) -> str:
    return str(err) if isinstance(err, _Failed) else f"{type(err).__name__}: {err}"


class _Unit:
    """Results of one (image, output map id, convention) across the steps, before they are written."""

    def __init__(self, n_steps: int):
        self.sims = np.full((n_steps, len(rnd.SIMILARITIES)), np.nan)
        self.targets = np.zeros(n_steps + 1, np.int64)
        self.thumbs: list[np.ndarray] = []
        self.reference: np.ndarray | None = None
        self.reference_hog: np.ndarray | None = None


class SanityCheck:
    """The stage for one run context (its model, images, profile, seed, folders)."""

    def __init__(self, ctx: RunContext, methods: list[str] | None = None, n_images: int | None = None,
                 conventions: list[str] | None = None):
        self.ctx = ctx
        self.conventions = list(conventions or CONVENTIONS)
        bad = [c for c in self.conventions if c not in CONVENTIONS]
        if bad or not self.conventions:
            raise ValueError(f"unknown convention(s) {bad}; choose among {', '.join(CONVENTIONS)}")
        self.n_images = ctx.profile.sanity_images if n_images is None else int(n_images)
        if self.n_images < 1:
            raise ValueError("--images must be >= 1")
        self.explicit = methods is not None
        self.ids = list(methods) if methods is not None else list(ctx.profile.sanity_methods)
        if not self.ids:
            raise ValueError("no method to check: give --methods")
        self.folder = ctx.run_dir / "randomisation"
        self.csv_dir = ctx.run_dir / "csv"

    # ------------------------------------------------------------------------------------------ methods
    def make_methods(self, report: SanityReport) -> tuple[list[Method], dict[str, Method]]:
        """Instantiate the producers of the asked map ids; ``{map id: producing method}``. A method with variants
        (``pcampm``) gives its variants (``pcamp``, ``pcamm``) from the same maps."""
        known = [m for m in self.ids if m in METHODS]
        unknown = [m for m in self.ids if m not in METHODS]
        methods: list[Method] = []
        for mid in known:
            method = build_method(self.ctx, mid)
            try:
                method.check_applicable(self.ctx.model)
            except NotApplicable as err:
                if self.explicit:
                    raise
                report.not_applicable[mid] = str(err)
                continue
            methods.append(method)
        producer: dict[str, Method] = {}
        for method in sorted(methods, key=lambda m: -len(m.output_ids)):
            for oid in method.output_ids:
                if oid in self.ids and oid not in producer:
                    producer[oid] = method
        for mid in unknown:  # a variant id (pcampm_step1) is fine when its method is asked for too
            if mid not in producer:
                raise MethodError(f"no registered method computes {mid!r} on its own; registered: "
                                  f"{', '.join(sorted(METHODS))} (a variant is checked with its method: add it)")
        used = [m for m in methods if any(p is m for p in producer.values())]
        return used, producer

    def protocol(self, method: Method, order: list[str]) -> dict:
        c = self.ctx
        return {"model": c.tag, "weights": c.cfg.weights, "weights_sha256": c.model.weights_sha256,
                "seed": c.cfg.seed, "profile": c.profile.name,
                "precision": c.precision, "image_size": c.profile.image_size, "method": method.id,
                "method_params": method.params, "layers": order, "similarities": rnd.describe(), "thumb": THUMB,
                **({"version": method.version} if method.version != 1 else {})}  # 1: units of older harnesses

    @staticmethod
    def code(method: Method) -> dict:
        """What computed a unit (:meth:`Parametrised.code` of the method), its ``files`` joined by those of the
        similarity measures (:mod:`metrics.randomisation`): a unit reused after one of them changed is named."""
        code = method.code()
        return dict(code, files={**code["files"], **code_files(rnd.__name__, rnd.__file__)})

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> SanityReport:
        c = self.ctx
        report = SanityReport()
        t0 = time.perf_counter()
        methods, producer = self.make_methods(report)
        with c.lock(), c.open_maps() as maps:
            usable = prepare(c, maps)
            report.notices += c.take_notices()
            targets_all = maps.read("clean", "target")
            clean_status = maps.status("clean")
        chosen = [i for i in usable if clean_status[i] == DONE][:self.n_images]
        report.images = [c.source.names[i] for i in chosen]
        with c.lock():
            order = rnd.randomisation_order(c.model.net, c.profile.image_size, c.device)
            report.layers = order
            report.notices += self.drop_for_recompute(producer)
            protocols = {oid: self.protocol(m, order) for oid, m in producer.items()}
            codes = {oid: self.code(m) for oid, m in producer.items()}
            changes: dict[str, tuple[int, tuple[str, ...]]] = {}
            for oid in producer:
                report.computed[oid], report.already[oid], report.failed[oid] = 0, 0, {}
            for i in chosen:
                name = c.source.names[i]
                todo = {}
                for oid, method in producer.items():
                    for conv in self.conventions:
                        path = unit_path(self.folder, name, oid, conv)
                        if path.exists():
                            try:
                                stored_code = self._check_protocol(path, protocols[oid])
                            except UnitError as err:  # damaged: moved aside, computed again below
                                report.notices.append(_moved_aside(path, str(err), now=True))
                            else:
                                add_code_change(changes, f"randomisation/{oid}", 1,
                                                changed_code_files(stored_code, codes[oid]))
                                report.already[oid] += 1
                                continue
                        todo.setdefault(method, []).append((oid, conv))
                if todo:
                    self._image(i, int(targets_all[i]), todo, order, protocols, codes, report)
                    report.touched.append(name)
            report.csv, report.targets_csv = self.write_csv(report)
            report.params_json = self.write_params(order, producer, chosen)
            report.notices += code_change_notices(changes)
        c.progress.settle("sanity")
        report.seconds = time.perf_counter() - t0
        return report

    def drop_for_recompute(self, producer: dict[str, Method]) -> list[str]:
        """``--recompute``: the stored units of the asked methods (by method or output id) are moved aside as
        ``<unit>.recompute-<time>-<pid>`` (never read again) and computed again, once per command; a line each."""
        asked, lines = set(self.ctx.cfg.recompute or ()), []
        for oid, method in producer.items():
            key = f"randomisation/{oid}"
            if key in self.ctx.dropped or not {oid, method.id} & asked:
                continue
            self.ctx.dropped.add(key)
            units = sorted(p for conv in CONVENTIONS for p in self.folder.glob(f"*__{oid}__{conv}.npz"))
            for path in units:
                move_aside(path, "recompute")
            if units:
                lines.append(f"{key}: {len(units)} stored unit(s) moved aside (--recompute)")
        return lines

    def _check_protocol(self, path: Path, protocol: dict) -> dict | None:
        """The code that computed the unit at ``path`` (None for a unit of an older harness); a StoreError when its
        protocol (seed, layers, method parameters and version, ...) is not ``protocol``."""
        unit = load_unit(path)
        stored = json.loads(str(unit["protocol"]))
        if stored != json.loads(json.dumps(protocol, default=str)):
            raise StoreError(f"{path} was computed with another protocol:\n  stored: {stored}\n  asked:  {protocol}\n"
                             "Use another --out folder (results of two protocols are never mixed), or add "
                             f"--recompute {protocol['method']} to compute the units of that method again.")
        return json.loads(str(unit["code"])) if "code" in unit else None

    @torch.no_grad()
    def _image(self, i: int, target: int, todo: dict[Method, list[tuple[str, str]]], order: list[str],
               protocols: dict, codes: dict, report: SanityReport) -> None:
        """Every step for one image and the missing (map id, convention) units of each method; write the units."""
        c = self.ctx
        name = c.source.names[i]
        size = c.profile.image_size
        x = c.load_images([i])
        units = {(oid, conv): _Unit(len(order)) for pairs in todo.values() for oid, conv in pairs}
        failed: dict[Method, str] = {}

        def explain(method: Method, model, classes: list[int]) -> dict[int, dict[str, torch.Tensor]]:
            """The maps of ``classes`` (each explained once), through the maps stage's per-chunk call."""
            uniq = sorted(set(classes))
            t = torch.tensor(uniq, device=c.device)
            out = {}
            for part in explain_chunk(method, model, x.expand(len(uniq), -1, -1, -1), t, uniq, size, c.autocast):
                for errs in part.errors.values():
                    if errs:
                        raise _Failed(next(iter(errs.values())))
                for k, cls in enumerate(part.rows):
                    out[cls] = {oid: m[k].float() for oid, m in part.maps.items()}
            return out

        def record(method: Method, maps_by_class, classes: dict[str, int], step: int) -> None:
            for oid, conv in todo[method]:
                u = units[(oid, conv)]
                m = maps_by_class[classes[conv]][oid]
                u.targets[step] = classes[conv]
                u.thumbs.append(_thumb(m) if torch.isfinite(m).all() else np.full((THUMB, THUMB), np.nan, np.float16))
                arr = m.cpu().numpy()
                if step == 0:
                    u.reference = arr
                    u.reference_hog = rnd.hog_features(arr) if np.isfinite(arr).all() else None
                elif u.reference is not None and np.isfinite(u.reference).all():
                    sims = rnd.similarities(u.reference, arr, u.reference_hog)
                    u.sims[step - 1] = [sims[s] for s in rnd.SIMILARITIES]

        bar = c.bar(len(order) + 1, f"sanity {name}", unit="step")
        cost = {m: m.cost(c.model).passes for m in todo}  # the run's bar advances by the planned passes
        for method in todo:  # step 0: the trained network, both conventions explain the clean top-1
            try:
                record(method, explain(method, c.model, [target]), dict.fromkeys(CONVENTIONS, target), 0)
            except Exception as err:  # noqa: BLE001 (any failure of a method fails its units, the stage goes on)
                failed[method] = f"trained model: {_reason(err)}"
        bar.update(1)
        c.progress.advance_run(sum(cost.values()), key="sanity")
        for step, layer, net in rnd.cascade(c.model.net, order, c.cfg.seed):
            model = dataclasses.replace(c.model, net=net)
            with c.autocast():
                new_top1 = int(net(x).argmax(dim=1)[0])
            classes = {"original_top1": target, "randomised_top1": new_top1}
            for method, pairs in todo.items():
                if method in failed:
                    continue
                try:
                    record(method, explain(method, model, [classes[conv] for _, conv in pairs]), classes, step)
                except Exception as err:  # noqa: BLE001
                    failed[method] = f"step {step} ({layer}): {_reason(err)}"
            bar.update(1)
            c.progress.advance_run(1 + sum(cost[m] * len({classes[conv] for _, conv in todo[m]}) for m in todo),
                                   key="sanity")
        bar.close()
        for method, pairs in todo.items():
            for oid, conv in pairs:
                if method in failed:
                    report.failed[oid][name] = failed[method]
                    continue
                u = units[(oid, conv)]
                prot = json.dumps(protocols[oid], default=str)
                payload = {"image": np.array(name), "method": np.array(oid), "convention": np.array(conv),
                           "layers": np.array(order), "targets": u.targets, "similarities": u.sims,
                           "similarity_names": np.array(rnd.SIMILARITIES), "thumbs": np.stack(u.thumbs),
                           "seed": np.array(c.cfg.seed), "protocol": np.array(prot),
                           "code": np.array(json.dumps(codes[oid]))}
                path = unit_path(self.folder, name, oid, conv)
                atomic_write(path, lambda fh, p=payload: np.savez_compressed(fh, **p))
                report.computed[oid] += 1

    # ------------------------------------------------------------------------------------------ outputs
    def write_csv(self, report: SanityReport) -> tuple[Path | None, Path | None]:
        """Rebuild ``randomisation_<tag>.csv`` and ``randomisation_targets_<tag>.csv`` from every stored unit; a
        unit that does not read is moved aside (said in ``report``), and computed again by the next call that
        checks its image."""
        units, damaged = load_units(self.folder, self.ctx.source.names)
        report.notices += [_moved_aside(path, reason) for path, reason in damaged]
        if not units:
            return None, None
        rows, trows = unit_rows(units)
        tag = self.ctx.tag
        csv = self.csv_dir / f"randomisation_{tag}.csv"
        tcsv = self.csv_dir / f"randomisation_targets_{tag}.csv"
        write_text(csv, pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index=False))
        write_text(tcsv, pd.DataFrame(trows, columns=["image", "method", "convention", "step", "layer", "target"])
                   .to_csv(index=False))
        return csv, tcsv

    def write_params(self, order: list[str], producer: dict[str, Method], chosen: list[int]) -> Path:
        c = self.ctx
        params = {"what": "cascading randomisation sanity check (Adebayo et al. 2018; Poly-CAM Appendix G)",
                  "model": c.tag, "weights": c.cfg.weights, "profile": c.profile.name, "seed": c.cfg.seed,
                  "seed_rule": "the layer of step s is re-initialised after torch.manual_seed(seed + s), on the CPU",
                  "layers": {str(s): name for s, name in enumerate(order, start=1)},
                  "conventions": {"original_top1": "the trained model's top-1 on the clean image (Adebayo et al.)",
                                  "randomised_top1": "the randomised model's top-1 at each step (Poly-CAM reference)"},
                  "similarities": rnd.describe(), "thumbnail_side": THUMB,
                  "note": "images and methods of the latest call; each unit in randomisation/*.npz keeps its own "
                          "protocol (seed, layers, method parameters)",
                  "images": [c.source.names[i] for i in chosen],
                  "methods": {oid: {"computed_by": m.id, "params": m.params, "seed": m.seed}
                              for oid, m in producer.items()}}
        return write_text(self.csv_dir / f"randomisation_{c.tag}.json", json.dumps(params, indent=2, default=str))


def run_sanity(ctx: RunContext, methods: list[str] | None = None, n_images: int | None = None,
               conventions: list[str] | None = None) -> SanityReport:
    """The sanity check for ``ctx`` (see the module docstring); default methods and image count from the profile
    (``sanity_methods``, ``sanity_images``)."""
    return SanityCheck(ctx, methods, n_images, conventions).run()
