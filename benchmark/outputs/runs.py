"""The results folders the tables and figures read: one :class:`Run` per model folder (its CSV files, read once,
and its provenance), how to find them under a results folder, and the names of what they hold (the Poly-CAM
ablation ids, the floor baselines, the paper's model labels).

A model folder is ``<results>/<profile>/<model tag>/`` with ``csv/`` (``<prefix>_<tag>_<method>.csv`` per method)
and ``provenance.json`` (profile, protocol, model, image list, top-1 agreement)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.core.atomic import read_json_object
from benchmark.core.csvfiles import read_curves_csv, read_randomisation, read_values_csv
from runners.agreement import summary as agreement_summary
from runners.csvcheck import StoreCheck
from runners.drift import read_drift

ABLATION_RE = re.compile(r"^(pcam(p|m|pm)_(step\d+|nolnorm)|cam(p|m|pm)_l\d+)$")
VARIANTS = {"p": "+", "m": "-", "pm": "±"}
PROVENANCE_REMEDY = "every stage writes it again (e.g. `python -m benchmark metrics` on this folder)"
MODEL_LABELS = {"vgg16": "VGG16", "resnet50": "ResNet50"}
# The model-independent baselines of methods/baselines.py (family "baseline"; tests/test_tables.py checks the
# registry against this list): the floor rows of the tables, never compared, ranked or marked best.
FLOOR_METHODS = ("random_map", "centre_prior", "edge_map")


def is_floor(method: str) -> bool:
    """True for the model-independent baselines (:data:`FLOOR_METHODS`)."""
    return method in FLOOR_METHODS


def method_label(method: str) -> str:
    """The method's cell in a table: its id, with `` (floor)`` for a model-independent baseline."""
    return f"{method} (floor)" if is_floor(method) else method


def is_ablation(method: str) -> bool:
    """True for the Poly-CAM ablation ids (``pcamW_stepK``, ``camW_lI``, ``pcamW_nolnorm``)."""
    return bool(ABLATION_RE.match(method))


def ablation_layer_count(ids) -> int:
    """Number of Poly-CAM layers implied by ablation ids: step K means K+1 layers, camW_lI means I layers."""
    steps = [int(m.rsplit("step", 1)[1]) for m in ids if "_step" in m]
    layers = [int(m.rsplit("_l", 1)[1]) for m in ids if m.startswith("cam")]
    return max([s + 1 for s in steps] + layers + [1])


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """One model folder: its tag, its CSV folder and what its provenance says."""

    tag: str
    run_dir: Path
    provenance: dict = field(default_factory=dict)
    csv: Path | None = None  # default: <run_dir>/csv
    _values: dict = field(default_factory=dict, repr=False, compare=False)  # prefix -> {method: Series}
    _check: StoreCheck | None = field(default=None, repr=False, compare=False)

    @property
    def check(self) -> StoreCheck:
        """The comparison of the files read (CSV files, ``provenance.json``) with the folder's stores
        (:mod:`runners.csvcheck`); the provenance is judged when the check is made."""
        if self._check is None:
            self._check = StoreCheck(self.run_dir)
            self._check.check_provenance(self.provenance)
        return self._check

    @property
    def csv_dir(self) -> Path:
        return Path(self.csv) if self.csv is not None else self.run_dir / "csv"

    @property
    def profile(self) -> str:
        return self.provenance.get("protocol", {}).get("profile", {}).get("name", "unknown")

    @property
    def label(self) -> str:
        return MODEL_LABELS.get(self.tag, self.tag)

    def protocol_text(self) -> str:
        p = self.provenance.get("protocol", {}).get("profile")
        if not p:
            return f"`{self.tag}`: profile unknown (no provenance.json)"
        ins = self.provenance.get("metrics", {}).get("insertion") or self.provenance.get("metrics", {}).get("deletion")
        insdel = (f"{ins.get('steps')} insertion/deletion steps, blur {ins.get('blur_kernel')}x"
                  f"{ins.get('blur_kernel')} sigma {ins.get('blur_sigma')}, ") if ins else ""
        lst = self.provenance.get("image_list_name")
        images = (f"; images: {lst}" + (" (the Poly-CAM authors' list)" if self.provenance.get("image_list_is_authors")
                                        else " (not the authors' list)")) if lst else "; images: the demo photos"
        top1 = self.provenance.get("top1_agreement")
        agree = f"; {agreement_summary(top1)}" if top1 else ""
        unsure = "" if self.check.provenance_agrees else " [provenance.json disagrees with the stores: named above]"
        return (f"`{self.tag}`: profile `{p.get('name')}` ({insdel}{p.get('image_size')} px, antialias "
                f"{p.get('antialias')}{images}{agree}){unsure}")

    def polycam_layers(self) -> list[str] | None:
        m = self.provenance.get("model", {})
        sets, preset = m.get("layer_sets") or {}, m.get("polycam_preset")
        return list(sets[preset]) if preset in sets else None

    def _per_method(self, stem: str, read) -> dict:
        """``{method: read(path)}`` for the files ``<stem>_<tag>_<method>.csv`` of the CSV folder, less those
        that disagree with the folder's ``metrics.h5`` (named in :attr:`check`)."""
        pattern = re.compile(rf"^{re.escape(stem)}_{re.escape(self.tag)}_(.+)\.csv$")
        out = {}
        if self.csv_dir.is_dir():
            for path in sorted(self.csv_dir.glob(f"{stem}_*.csv")):
                m = pattern.match(path.name)
                if m:
                    frame = read(path)
                    if self.check.usable(stem, m.group(1), path, frame):
                        out[m.group(1)] = frame
        return out

    def curves(self, prefix: str) -> dict[str, pd.DataFrame]:
        """``{method: per-image curves}`` from ``<prefix>_details_<tag>_<method>.csv`` files."""
        return self._per_method(f"{prefix}_details", read_curves_csv)

    def values(self, prefix: str) -> dict[str, pd.Series]:
        """``{method: per-image Series}`` from ``<prefix>_<tag>_<method>.csv`` files (read once per Run)."""
        if prefix not in self._values:
            self._values[prefix] = self._per_method(prefix, read_values_csv)
        return dict(self._values[prefix])

    @property
    def randomisation_path(self) -> Path:
        return self.csv_dir / f"randomisation_{self.tag}.csv"

    def randomisation(self) -> pd.DataFrame | None:
        """The sanity check's similarities (``randomisation_<tag>.csv``); None when the file is absent or disagrees
        with the units it was written from (named in :attr:`check`)."""
        path = self.randomisation_path
        if not path.exists():
            return None
        df = read_randomisation(path)
        return df if self.check.randomisation_usable(path, df) else None

    def drift(self) -> dict | None:
        """The run's precision drift (``precision_drift.json``, :mod:`runners.drift`); None when there is none (an
        fp32 run) or when it disagrees with its fp32 arrays and the stores (named in :attr:`check`)."""
        drift = read_drift(self.run_dir)
        return drift if drift is not None and self.check.drift_usable(drift) else None

    def ablation_aucs(self) -> tuple[dict, dict, set[str]]:
        """(insertion values, deletion values, the Poly-CAM ablation map ids among them)."""
        ins, dele = self.values("ins_auc"), self.values("del_auc")
        return ins, dele, {m for m in set(ins) | set(dele) if is_ablation(m)}


def load_run(run_dir: str | Path, tag: str | None = None) -> Run:
    run_dir = Path(run_dir)
    prov_path = run_dir / "provenance.json"
    prov = read_json_object(prov_path, PROVENANCE_REMEDY) if prov_path.exists() else {}
    return Run(tag or run_dir.name, run_dir, prov)


def _model_order(tag: str) -> tuple:
    base = tag.split("-")[0]
    return (MODEL_LABELS.get(base) is None, list(MODEL_LABELS).index(base) if base in MODEL_LABELS else 0, tag)


def find_runs(results_dir: str | Path) -> list[Run]:
    """The model folders under ``results_dir`` (or ``results_dir`` itself if it is one): folders with ``csv/``.
    The paper's models come first (VGG16, ResNet50), then the others by name."""
    results_dir = Path(results_dir)
    if (results_dir / "csv").is_dir():
        return [load_run(results_dir)]
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no results folder {results_dir}: run the benchmark first (python -m benchmark run)"
                                + elsewhere_hint(results_dir))
    runs = [load_run(d) for d in results_dir.iterdir() if (d / "csv").is_dir()]
    return sorted(runs, key=lambda r: _model_order(r.tag))


def has_runs(folder: Path) -> bool:
    try:
        return folder.is_dir() and any((d / "csv").is_dir() for d in folder.iterdir())
    except OSError:
        return False


def elsewhere_hint(results_dir: Path) -> str:
    """``"; results exist in results/quick (--profile quick)"`` when folders next to the missing one (the other
    profiles' ``results/<profile>``) hold model folders; ``""`` otherwise."""
    parent = results_dir.parent
    if not parent.is_dir():
        return ""
    found = sorted(d for d in parent.iterdir() if d != results_dir and has_runs(d))
    if not found:
        return ""
    return "; results exist in " + ", ".join(f"{d} (--profile {d.name}, or --out {d})" for d in found)
