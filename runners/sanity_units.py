"""The stored units of the sanity check, without torch: one ``randomisation/<image>__<map id>__<convention>.npz``
per (image, output map id, convention), and the rows of ``randomisation_<tag>.csv`` they give.

A unit holds ``image``, ``method``, ``convention``, ``layers`` (the randomised layers, in cascade order),
``targets`` (the explained class at steps 0..L), ``similarities`` ([L, S]: step s against step 0, in the order of
``similarity_names``), ``thumbs``, ``seed``, ``protocol`` and ``code`` (:mod:`runners.sanity` writes them).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .store import StoreError

CONVENTIONS = ("original_top1", "randomised_top1")
THUMB = 112  # thumbnail side of the stored maps (figures only; the similarities use the 224x224 maps)
ROW_KEYS = ("image", "method", "convention", "step", "layer")  # then one column per similarity
UNIT_KEYS = ("image", "method", "convention", "layers", "targets", "similarities", "protocol")  # what reading needs


def _safe(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def unit_path(folder: Path, image: str, method: str, convention: str) -> Path:
    return folder / f"{_safe(image)}__{method}__{convention}.npz"


class UnitError(StoreError):
    """A unit file that does not read (its zip CRC fails, it is truncated, a key is missing): named with the file."""


def load_unit(path: Path) -> dict:
    """The arrays of a unit; a :class:`UnitError` naming the file when it does not read (each array is checked
    against the CRC-32 its zip entry keeps)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            unit = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise UnitError(f"sanity-check unit {path} does not read ({type(err).__name__}: {err})") from None
    missing = [k for k in UNIT_KEYS if k not in unit]
    if missing:
        raise UnitError(f"sanity-check unit {path} lacks {missing}")
    return unit


def unit_reads(path: Path) -> bool:
    """Whether the unit at ``path`` exists and reads (:func:`load_unit`)."""
    if not path.is_file():
        return False
    try:
        load_unit(path)
    except UnitError:
        return False
    return True


class Units(NamedTuple):
    """The units that read, and ``(path, reason)`` of those that do not."""

    units: list[dict]
    damaged: list[tuple[Path, str]]


def load_units(folder: Path, names: list[str] | None = None) -> Units:
    """Every stored unit of an image in ``names`` (default: every unit), in list order (default: by name), then
    method, then convention; and the unit files that do not read."""
    units, damaged = [], []
    for p in sorted(folder.glob("*.npz")) if folder.exists() else []:
        try:
            units.append(load_unit(p))
        except UnitError as err:
            damaged.append((p, str(err)))
    if names is None:
        names = sorted({str(u["image"]) for u in units})
    pos = {n: k for k, n in enumerate(names)}
    units = [u for u in units if str(u["image"]) in pos]
    units.sort(key=lambda u: (pos[str(u["image"])], str(u["method"]), CONVENTIONS.index(str(u["convention"]))))
    return Units(units, damaged)


def unit_rows(units: list[dict]) -> tuple[list[list], list[list]]:
    """(the rows of ``randomisation_<tag>.csv``: :data:`ROW_KEYS` then the similarities, one per unit and step
    1..L; the rows of ``randomisation_targets_<tag>.csv``: the explained class at each step 0..L)."""
    rows, trows = [], []
    for u in units:
        image, method, conv = str(u["image"]), str(u["method"]), str(u["convention"])
        layers = [str(s) for s in u["layers"]]
        for s, layer in enumerate(layers, start=1):
            rows.append([image, method, conv, s, layer, *map(float, u["similarities"][s - 1])])
        for s in range(len(layers) + 1):
            trows.append([image, method, conv, s, layers[s - 1] if s else "", int(u["targets"][s])])
    return rows, trows
