"""The files the tables and the report read (the CSV files, ``provenance.json`` and ``precision_drift.json`` of a
model folder) against what they were written from.

The tables and figures are built from the CSV files alone, so that files made elsewhere can be tabled too. Where
the model folder holds a ``metrics.h5``, every metric CSV read is compared with it, image by image: the file must
hold exactly the store's done values, bit for bit (a value is written as float64 in full precision, a curve as its
float32 widened to float64, so equal means equal). A file that disagrees (edited, replaced, or left behind by an
interrupted write) is left out of the tables and figures, and named with what differs and how to write it again; a
file the store holds no values for is used and named as unchecked. The sanity check's ``randomisation_<tag>.csv``
is compared in the same way with the units it was written from (``randomisation/*.npz``), the protocol, metric
parameters and top-1 agreement ``provenance.json`` states with those of ``maps.h5`` and ``metrics.h5``, the summary
``precision_drift.json`` states with the one computed again from its fp32 side (``precision_drift.npz``) and the
stored maps and values (:mod:`runners.drift`), and the files of ``remove-classify`` (no store) with the sha256 its
``remove_classify_<protocol>.json`` recorded.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.atomic import read_json_object, sha256_file
from benchmark.core.csvfiles import (
    REWRITE,
    SIMILARITIES,
    CSVFileError,
    read_curves_csv,
    read_randomisation,
    read_values_csv,
)

from .agreement import folder_agreement
from .agreement import summary as top1_summary
from .drift import DRIFT_ARRAYS, DRIFT_FILE, drift_row, read_drift
from .sanity_units import ROW_KEYS, load_units, unit_rows
from .store import DONE, H5Store, StoreError, lock_holder, stored_names

STORE_FILE = "metrics.h5"
UNITS_DIR = "randomisation"
SANITY_REWRITE = "`python -m benchmark sanity` (same options) writes it again from the units"


# The metrics whose CSV files the tables and figures read: {metric id: (CSV prefix, has a curve)}. Written here, not
# read from the registry, so the tables never import torch (tests/test_reliability.py checks it against the
# registry).
TABLE_METRICS = {"insertion": ("ins", True), "deletion": ("del", True), "sensitivity": ("sens", False),
                 "remove_classify": ("rc", True)}


def csv_stems(metrics: dict[str, tuple[str, bool]] = TABLE_METRICS) -> dict[str, tuple[str, str]]:
    """``{CSV stem: (metric id, stored array)}``: ``ins_auc`` -> (insertion, value), ``ins_details`` ->
    (insertion, curve), ``sens`` -> (sensitivity, value), ..."""
    out = {}
    for metric_id, (prefix, has_curve) in metrics.items():
        if has_curve:
            out[f"{prefix}_auc"] = (metric_id, "value")
            out[f"{prefix}_details"] = (metric_id, "curve")
        else:
            out[prefix] = (metric_id, "value")
    return out


CSV_STEMS = csv_stems()
# The files of `remove-classify` (runners.remove_classify): rc_<protocol>_auc / rc_<protocol>_details, vouched for by
# the sha256 its remove_classify_<protocol>.json records.
RC_STEM = re.compile(r"^rc_([A-Za-z0-9]+)_(?:auc|details)$")


def _normal(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _first_difference(said: dict, stored: dict, prefix: str = "") -> str:
    """``key: said X, stored Y`` for the first key (depth first) whose values differ."""
    if isinstance(said, dict) and isinstance(stored, dict):
        for k in sorted(set(said) | set(stored)):
            if _normal(said.get(k)) != _normal(stored.get(k)):
                return _first_difference(said.get(k), stored.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: it says {said!r}, the store {stored!r}"


def _example(names: list[str], shown: int = 2) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


@dataclass
class StoreCheck:
    """The comparisons of one model folder: ``disagree`` (a file that does not hold what the store holds) and
    ``unchecked`` (a file the store cannot vouch for), one line per file."""

    run_dir: Path
    disagree: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    _verdict: dict = field(default_factory=dict, repr=False)

    @property
    def store_path(self) -> Path:
        return Path(self.run_dir) / STORE_FILE

    def applies(self) -> bool:
        return self.store_path.is_file()

    def usable(self, stem: str, method: str, path: Path, frame: pd.DataFrame | pd.Series) -> bool:
        """False when the file ``path`` (read as ``frame``: one row per image) disagrees with the store's
        ``<metric>/<method>``, or (a ``remove-classify`` file, ``rc_<protocol>_*``) with the sha256 its
        ``remove_classify_<protocol>.json`` records; the line saying how is added once, however often it is read."""
        if not self.applies() and not RC_STEM.match(stem):  # remove-classify's files have a record of their own
            if STORE_FILE not in self._verdict:  # said once for the folder
                self._verdict[STORE_FILE] = True
                self.unchecked.append(f"csv/: no {STORE_FILE} in this folder (CSV files made elsewhere, or copied "
                                      "without it): its metric CSV files are shown as found, not checked")
            return True
        if path.name not in self._verdict:
            self._verdict[path.name] = self._compare(stem, method, path, frame)
        return self._verdict[path.name]

    def _compare(self, stem: str, method: str, path: Path, frame) -> bool:
        if stem not in CSV_STEMS:
            protocol = RC_STEM.match(stem)
            if protocol:
                return self._compare_recorded(protocol.group(1), method, path)
            self.unchecked.append(f"{path.name}: no store or record vouches for files {stem}_*: shown as found, not "
                                  "checked")
            return True
        metric_id, array = CSV_STEMS[stem]
        key = f"{metric_id}/{method}"
        try:
            with H5Store.read_only(self.store_path) as store:
                if not store.has_group(key):
                    self.unchecked.append(f"{path.name}: {STORE_FILE} holds no {metric_id} values of {method} (not "
                                          "written from this folder's store): shown as found, not checked")
                    return True
                rows = np.flatnonzero(store.status(key) == DONE)
                stored, bad = store.read_rows(key, rows, mark=False)
                names = store.names
        except (OSError, StoreError, KeyError, ValueError) as err:
            self.unchecked.append(f"{path.name}: not checked: {self.store_path} could not be read ({err})")
            return True
        values = np.asarray(stored[array], dtype=np.float64).reshape(len(rows), -1)
        good = ~np.isin(rows, bad)
        held = (pd.Index([names[i] for i in rows[good]]), values[good])
        corrupt = [names[i] for i in bad]
        if corrupt:
            self.unchecked.append(f"{path.name}: {len(corrupt)} of its values not checked: their rows in "
                                  f"{STORE_FILE} fail their checksum ({_example(corrupt)}; `python -m benchmark "
                                  "status` names them, the next metrics stage computes them again)")
        parts, only_lacks = self._differences(frame, held, corrupt)
        if not parts:
            return True
        pid = self.writer() if only_lacks else None
        if pid is not None:  # values stored since the file was written, by a run going on now
            self.unchecked.append(f"{path.name}: {parts[0]} (a run is writing this folder now: pid {pid}); the "
                                  "file's own values are used")
            return True
        self.disagree.append(f"{path.name} disagrees with {STORE_FILE}: " + "; ".join(parts) + ". Left out of the "
                             f"tables and figures: {REWRITE}")
        return False

    def _compare_recorded(self, protocol: str, method: str, path: Path) -> bool:
        """A ``remove-classify`` CSV file (no store: its evaluation runs apart) against the sha256 that
        ``remove_classify_<protocol>.json`` recorded for it when it was written."""
        record = Path(self.run_dir) / f"remove_classify_{protocol}.json"
        try:
            entry = read_json_object(record).get("methods", {}).get(method, {})
            sha = entry.get("csv_sha256", {}).get(path.name) if isinstance(entry, dict) else None
        except (OSError, ValueError, AttributeError) as err:
            self.unchecked.append(f"{path.name}: not checked: {record.name} could not be read ({err})")
            return True
        if sha is None:
            self.unchecked.append(f"{path.name}: {record.name} records no sha256 of it (written by an older harness, "
                                  "or placed by hand): shown as found, not checked")
            return True
        if sha256_file(path) == sha:
            return True
        self.disagree.append(f"{path.name} is not the file `remove-classify` wrote (its sha256 is not the one "
                             f"{record.name} records). Left out of the tables: `python -m benchmark remove-classify "
                             f"--protocol {protocol}` with the same options writes it again")
        return False

    def writer(self) -> str | None:
        """The pid of another process writing this folder now, or None."""
        return lock_holder(self.run_dir)

    @staticmethod
    def _differences(frame, held: tuple[pd.Index, np.ndarray], corrupt: list[str]) -> tuple[list[str], bool]:
        """(what differs between the file's rows ``frame`` and the store's values ``held`` (their image names and
        rows), one part each; whether the file only lacks values the store holds)."""
        held_names, held_values = held
        got = np.asarray(frame, dtype=np.float64).reshape(len(frame), -1)
        index = pd.Index([str(n) for n in frame.index])
        pos = held_names.get_indexer(index)  # -1: an image the store does not hold
        found = np.flatnonzero(pos >= 0)
        if got.shape[1] != held_values.shape[1]:
            differ = found
        else:
            a, b = got[found], held_values[pos[found]]
            same = ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)
            differ = found[~same]
        extra = [n for n in index[pos < 0] if n not in set(corrupt)]
        lacking = sorted(held_names[~held_names.isin(index)])
        parts = []
        if index.has_duplicates:
            parts.append(f"{len(index) - index.nunique()} repeated image row(s)")
        if len(differ):
            k = int(differ[0])
            n, ref, mine = index[k], held_values[pos[k]], got[k]
            if ref.size == 1 and mine.size == 1:
                shown = f" ({n}: {float(mine[0])!r} in the file, {float(ref[0])!r} stored)"
            else:
                shown = f" (e.g. {n})"
            parts.append(f"{len(differ)} of its {len(index)} value row(s) differ from the store's{shown}")
        if extra:
            parts.append(f"{len(extra)} image(s) that {STORE_FILE} has not scored ({_example(extra)})")
        if lacking:
            parts.append(f"it lacks {len(lacking)} value(s) that {STORE_FILE} holds ({_example(lacking)})")
        return parts, bool(lacking) and len(parts) == 1

    @property
    def provenance_agrees(self) -> bool:
        """False once ``provenance.json`` was found to disagree with the stores (:meth:`check_provenance`)."""
        return self._verdict.get("provenance.json", True)

    def provenance_state(self) -> str:
        """What the check says of ``provenance.json``, for the report's provenance table."""
        if not self.provenance_agrees:
            return "DISAGREES with the stores (named at the top): the fields below are as it states them"
        stores = [n for n in ("maps.h5", STORE_FILE) if (Path(self.run_dir) / n).is_file()]
        return f"agrees with {' and '.join(stores)}" if stores else "not checked (no store next to it)"

    def check_provenance(self, provenance: dict) -> None:
        """The protocol and metric parameters that ``provenance.json`` states (the tables print them) must be those
        of the stores: a replaced or stale ``provenance.json`` is named as disagreeing (once)."""
        if "provenance.json" in self._verdict or not isinstance(provenance.get("protocol"), dict):
            return
        self._verdict["provenance.json"] = True
        metrics = provenance.get("metrics") if isinstance(provenance.get("metrics"), dict) else {}
        said = []
        for name in ("maps.h5", STORE_FILE):
            path = Path(self.run_dir) / name
            if not path.is_file():
                continue
            try:
                with H5Store.read_only(path) as store:
                    stored = store.attrs().get("protocol")
                    params = {m: store.group_attrs(f"{m}/{g}").get("params") for m in metrics
                              for g in store.groups(str(m))[:1]} if name == STORE_FILE else {}
            except (OSError, StoreError, KeyError, ValueError):
                continue  # an unreadable store is named by `status` and by the stages
            if stored is not None and _normal(stored) != _normal(provenance["protocol"]):
                said.append(f"its protocol is not {name}'s ({_first_difference(provenance['protocol'], stored)})")
            for m, p in params.items():
                if p is not None and _normal(p) != _normal(metrics[m]):
                    said.append(f"its {m} parameters are not {name}'s ({_first_difference(metrics[m], p)})")
        said += self._top1_differs(provenance)
        if said:
            self._verdict["provenance.json"] = False
            self.disagree.append("provenance.json disagrees with the stores: " + "; ".join(said) + ". The tables "
                                 "would print a protocol the results were not computed with; every computing stage "
                                 "writes it again (e.g. `python -m benchmark metrics` with the folder's options)")

    def _top1_differs(self, provenance: dict) -> list[str]:
        """The top-1 agreement with the authors' classes that ``provenance.json`` states (the tables and the report
        print it), against the one computed again from ``maps.h5``'s clean top-1s: one line when they differ."""
        said = provenance.get("top1_agreement")
        if said is None or not (Path(self.run_dir) / "maps.h5").is_file():
            return []
        try:
            again = folder_agreement(Path(self.run_dir), provenance)
        except (AttributeError, TypeError, ValueError) as err:  # fields of the wrong kind
            return [f"its top-1 agreement cannot be computed again from it ({type(err).__name__}: {err})"]
        if _normal(again) == _normal(said):
            return []
        pid = self.writer()
        if pid is not None:  # clean top-1s stored since, by a run going on (it writes provenance.json at its end)
            self.unchecked.append(f"provenance.json: its top-1 agreement is not that of maps.h5 now (a run is "
                                  f"writing this folder: pid {pid}); shown as it states it")
            return []
        try:
            shown = f"it says [{top1_summary(said)}], maps.h5 gives [{top1_summary(again)}]"
        except (AttributeError, KeyError, TypeError, ValueError):
            shown = _first_difference(said, again) if isinstance(said, dict) else f"it says {said!r}"
        return [f"its top-1 agreement is not that of maps.h5's clean top-1s ({shown})"]

    def drift_usable(self, drift: dict) -> bool:
        """False when ``precision_drift.json`` (read as ``drift``) is not the summary that its fp32 side
        (``precision_drift.npz``) and the stored maps and values give again, bit for bit (an edited file, or a
        stale one: maps or values computed again since); named once. Without the arrays (an older harness) or
        the stores, it is shown as found and named as not checked."""
        if DRIFT_FILE not in self._verdict:
            self._verdict[DRIFT_FILE] = self._compare_drift(drift)
        return self._verdict[DRIFT_FILE]

    def _compare_drift(self, drift: dict) -> bool:
        redo = "`python -m benchmark run` with the folder's options and --drift-images writes it again"
        if "error" in drift:
            self.disagree.append(f"{drift['error']}: left out of the report; {redo}")
            return False
        arrays_path, maps_path = Path(self.run_dir) / DRIFT_ARRAYS, Path(self.run_dir) / "maps.h5"
        if not arrays_path.is_file() or not maps_path.is_file():
            missing = DRIFT_ARRAYS if not arrays_path.is_file() else "maps.h5"
            self.unchecked.append(f"{DRIFT_FILE}: no {missing} next to it (written by an older harness, or copied "
                                  "alone): shown as found, not checked")
            return True
        try:
            said, again = drift.get("methods", {}), {}
            with np.load(arrays_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            with H5Store.read_only(maps_path) as maps:
                precision = (maps.attrs().get("protocol") or {}).get("precision")
                if precision is not None and precision != drift.get("precision"):
                    raise _DriftMismatch(f"it was computed at {drift.get('precision')!r}, maps.h5 at {precision!r}")
                scores = H5Store.read_only(self.store_path) if self.applies() else None
                pos = {n: i for i, n in enumerate(maps.names)}
                try:
                    for oid, row in said.items():
                        again[oid] = self._drift_again(oid, row, arrays, maps, scores, pos)
                finally:
                    if scores is not None:
                        scores.close()
        except _DriftMismatch as err:
            self.disagree.append(f"{DRIFT_FILE} disagrees with the stores: {err}. Left out of the report; {redo}")
            return False
        except (OSError, StoreError, KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile,
                zlib.error) as err:
            self.disagree.append(f"{DRIFT_FILE} could not be checked against {DRIFT_ARRAYS} and the stores "
                                 f"({type(err).__name__}: {err}). Left out of the report; {redo}")
            return False
        if _normal(again) != _normal(said):
            self.disagree.append(f"{DRIFT_FILE} disagrees with the summary of {DRIFT_ARRAYS} and the stores "
                                 f"({_first_difference(said, again)}). Left out of the report; {redo}")
            return False
        return True

    @staticmethod
    def _drift_again(oid: str, row: dict, arrays: dict, maps: H5Store, scores: H5Store | None,
                     pos: dict[str, int]) -> dict:
        """The drift row of ``oid`` computed again from the fp32 arrays and the stores' rows of its images (``pos``:
        image name -> row of the stores)."""
        names = [str(n) for n in row["image_names"]]
        if [str(n) for n in arrays[f"images__{oid}"]] != names:
            raise _DriftMismatch(f"{oid}: its images are not those of {DRIFT_ARRAYS}")
        if any(n not in pos for n in names):
            raise _DriftMismatch(f"{oid}: an image of it is not in maps.h5's list")
        rows = [pos[n] for n in names]

        def held(store: H5Store | None, group: str) -> np.ndarray:
            if store is None or not store.has_group(group) or not (store.status(group)[rows] == DONE).all():
                raise _DriftMismatch(f"{group}: the store no longer holds the finished rows it was computed from")
            values, bad = store.read_rows(group, rows, mark=False)
            if bad:
                raise _DriftMismatch(f"{group}: rows it was computed from fail their checksum")
            return values

        stored_maps = held(maps, f"maps/{oid}")["map"]
        values = {m: (arrays[f"fp32__{m}__{oid}"], held(scores, f"{m}/{oid}")["value"])
                  for m in row.get("metrics", {})}
        return dict(drift_row(arrays[f"map__{oid}"], stored_maps, values), image_names=names)

    def randomisation_usable(self, path: Path, df: pd.DataFrame) -> bool:
        """False when ``randomisation_<tag>.csv`` (read as ``df``) does not hold exactly the rows of the units in
        ``randomisation/`` it was written from (of the images of the folder's list)."""
        if path.name not in self._verdict:
            self._verdict[path.name] = self._compare_randomisation(path, df)
        return self._verdict[path.name]

    def _compare_randomisation(self, path: Path, df: pd.DataFrame) -> bool:
        folder = Path(self.run_dir) / UNITS_DIR
        if not folder.is_dir():
            self.unchecked.append(f"{path.name}: no {UNITS_DIR}/ folder of units next to it: shown as found, not "
                                  "checked")
            return True
        try:
            maps_h5 = Path(self.run_dir) / "maps.h5"
            units, damaged = load_units(folder, stored_names(maps_h5) if maps_h5.is_file() else None)
        except (OSError, KeyError, ValueError) as err:
            self.unchecked.append(f"{path.name}: not checked: {folder} could not be read ({err})")
            return True
        self.disagree += [f"{reason}; `python -m benchmark sanity` moves it aside and computes it again" for _, reason
                          in damaged]
        rows, _ = unit_rows(units)
        sims = [str(s) for s in units[0].get("similarity_names", SIMILARITIES)] if units else []
        cols = list(ROW_KEYS) + sims
        if any(c not in df.columns for c in cols):
            self.disagree.append(f"{path.name} disagrees with its units in {UNITS_DIR}/: its columns are not "
                                 f"{cols}. Left out of the tables and figures: {SANITY_REWRITE}")
            return False
        key = list(ROW_KEYS[:4])
        held = {tuple(r[:4]): (r[4], np.asarray(r[5:], np.float64)) for r in rows}
        got = {}
        try:
            for r in df[cols].itertuples(index=False):
                got[(str(r[0]), str(r[1]), str(r[2]), int(r[3]))] = (str(r[4]), np.asarray(r[5:], np.float64))
        except (ValueError, TypeError) as err:
            self.disagree.append(f"{path.name} disagrees with its units in {UNITS_DIR}/: a row does not read ({err})."
                                 f" Left out of the tables and figures: {SANITY_REWRITE}")
            return False
        differ = [k for k, (layer, v) in got.items() if k in held and
                  (layer != held[k][0] or not np.array_equal(v, held[k][1], equal_nan=True))]
        extra = [k for k in got if k not in held]
        lacking = [k for k in held if k not in got]
        parts = []
        if len(got) != len(df):
            parts.append(f"{len(df) - len(got)} repeated row(s)")
        if differ:
            parts.append(f"{len(differ)} of its {len(df)} row(s) differ from the units' (e.g. "
                         f"{dict(zip(key, differ[0]))})")
        if extra:
            parts.append(f"{len(extra)} row(s) no unit holds (e.g. {dict(zip(key, extra[0]))})")
        if lacking:
            parts.append(f"it lacks {len(lacking)} row(s) of the units (e.g. {dict(zip(key, lacking[0]))})")
        if not parts:
            return True
        self.disagree.append(f"{path.name} disagrees with its units in {UNITS_DIR}/: " + "; ".join(parts) +
                             f". Left out of the tables and figures: {SANITY_REWRITE}")
        return False


class _DriftMismatch(Exception):
    """What makes ``precision_drift.json`` disagree with its arrays and the stores (said once, with the file)."""


def check_folder(run_dir: Path, tag: str | None = None) -> tuple[StoreCheck, int]:
    """Every metric CSV of ``<run_dir>/csv`` (of model tag ``tag``, default the folder's name), its randomisation
    CSV and its ``precision_drift.json``, judged against the folder's stores as the tables and the report would
    read them: (the check, the number of files read). A file that does not read as its format is counted as
    disagreeing."""
    run_dir = Path(run_dir)
    tag = tag or run_dir.name
    check, n = StoreCheck(run_dir), 0
    prov = run_dir / "provenance.json"
    if prov.is_file():
        try:
            check.check_provenance(json.loads(prov.read_text()))
        except (OSError, ValueError, AttributeError) as err:
            check.disagree.append(f"provenance.json does not read ({err}); every computing stage writes it again")
    drift = read_drift(run_dir)
    if drift is not None:
        n += 1
        check.drift_usable(drift)
    csv_dir = run_dir / "csv"
    if not csv_dir.is_dir():
        return check, n
    for stem in CSV_STEMS:
        read = read_curves_csv if stem.endswith("_details") else read_values_csv
        head = f"{stem}_{tag}_"
        for path in sorted(csv_dir.glob(f"{head}*.csv")):
            n += 1
            try:
                check.usable(stem, path.name[len(head):-len(".csv")], path, read(path))
            except CSVFileError as err:
                check.disagree.append(str(err))
    for path in sorted(csv_dir.glob(f"rc_*_{tag}_*.csv")):
        stem, _, method = path.name[:-len(".csv")].partition(f"_{tag}_")
        if RC_STEM.match(stem):
            n += 1
            check.usable(stem, method, path, None)
    path = csv_dir / f"randomisation_{tag}.csv"
    if path.is_file():
        n += 1
        try:
            check.randomisation_usable(path, read_randomisation(path))
        except (ValueError, OSError) as err:
            check.disagree.append(f"{path.name} does not read ({err}); {SANITY_REWRITE}")
    return check, n
