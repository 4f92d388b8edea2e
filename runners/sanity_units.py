"""The stored units of the sanity check, without torch: one ``randomisation/<image>__<map id>__<convention>.npz``
per (image, output map id, convention), and the rows of ``randomisation_<tag>.csv`` they give.

A unit holds ``image``, ``method``, ``convention``, ``layers`` (the randomised layers, in cascade order),
``targets`` (the explained class at steps 0..L), ``similarities`` ([L, S]: step s against step 0, in the order of
``similarity_names``), ``thumbs``, ``seed``, ``protocol`` and ``code`` (:mod:`runners.sanity` writes them).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

CONVENTIONS = ("original_top1", "randomised_top1")
THUMB = 112  # thumbnail side of the stored maps (figures only; the similarities use the 224x224 maps)
ROW_KEYS = ("image", "method", "convention", "step", "layer")  # then one column per similarity


def _safe(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def unit_path(folder: Path, image: str, method: str, convention: str) -> Path:
    return folder / f"{_safe(image)}__{method}__{convention}.npz"


def load_unit(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_units(folder: Path, names: list[str] | None = None) -> list[dict]:
    """Every stored unit of an image in ``names`` (default: every unit), in list order (default: by name), then
    method, then convention."""
    units = [load_unit(p) for p in sorted(folder.glob("*.npz"))] if folder.exists() else []
    if names is None:
        names = sorted({str(u["image"]) for u in units})
    pos = {n: k for k, n in enumerate(names)}
    units = [u for u in units if str(u["image"]) in pos]
    units.sort(key=lambda u: (pos[str(u["image"])], str(u["method"]), CONVENTIONS.index(str(u["convention"]))))
    return units


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
