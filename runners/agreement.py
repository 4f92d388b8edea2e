"""Does a run see the authors' images as the authors' models did? Its stored clean top-1 classes against the top-1
classes the Poly-CAM authors published for their VGG16 and ResNet50 on their 2000 images (benchmark/data/authors.py).

Comparable only for ``vgg16`` / ``resnet50`` with torchvision's ``IMAGENET1K_V1`` weights (recognised by the
sha256 of the weights file), the paper's preprocessing (224 px, no antialiasing) and the authors' image list (in
their order; ``--limit N`` compares its first N). Otherwise the result says why not. Agreement below 99 % is a
warning with the usual causes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.core.atomic import read_json_object
from benchmark.data.authors import IMAGENET1K_V1, TOP1_FILES, authors_names, authors_top1
from benchmark.data.lists import AUTHORS_LIST

from .store import DONE, H5Store, StoreError

THRESHOLD = 0.99
CAUSES = ("resizing with antialiasing (torchvision >= 0.17 antialiases by default; the paper protocol does not), a "
          "centre crop or a 256-px resize first, other weights than torchvision's IMAGENET1K_V1, or images decoded "
          "differently (another JPEG decoder, files re-encoded)")
SHOWN = 20


def not_comparable(reason: str) -> dict:
    return {"comparable": False, "reason": reason}


def agreement(model: str, weights_sha256: str | None, image_size: int, antialias: bool, names: list[str],
              top1: dict[str, int]) -> dict:
    """The comparison of ``top1`` (``{image: class}``, the run's stored clean top-1s) with the authors'; ``names`` is
    the run's whole image list."""
    if model not in TOP1_FILES:
        return not_comparable(f"the authors published top-1 classes for vgg16 and resnet50 only (this run: {model})")
    prefix = IMAGENET1K_V1[model]
    if not (weights_sha256 or "").startswith(prefix):
        return not_comparable(f"the weights are not torchvision's IMAGENET1K_V1 {model} weights (sha256 "
                              f"{str(weights_sha256)[:8]}..., expected {prefix}...)")
    if image_size != 224 or antialias:
        return not_comparable(f"the preprocessing differs from the paper's ({image_size} px, antialias {antialias})")
    theirs = authors_names()
    if names != theirs[:len(names)] or len(names) != len(theirs):
        inside = len(set(names) & set(theirs))
        return not_comparable(f"the image list is not the authors' {AUTHORS_LIST.name} ({inside} of its "
                              f"{len(names)} names are in it)")
    ref = authors_top1(model)
    compared = [n for n in names if n in top1]
    if not compared:
        return not_comparable("no clean top-1 stored yet")
    differ = [{"image": n, "ours": int(top1[n]), "authors": ref[n]} for n in compared if int(top1[n]) != ref[n]]
    rate = 1 - len(differ) / len(compared)
    out = {"comparable": True, "model": model, "list": AUTHORS_LIST.name, "compared": len(compared),
           "equal": len(compared) - len(differ), "agreement": rate, "differ": differ[:SHOWN],
           "differ_count": len(differ)}
    if rate < THRESHOLD:
        out["warning"] = (f"only {100 * rate:.1f} % of the top-1 classes equal the authors' (expected about 100 %): "
                          f"the images are not seen as the authors' model saw them. Usual causes: {CAUSES}")
    return out


def stored_top1(maps_h5: Path) -> tuple[list[str], dict[str, int]]:
    """(the store's image list, {image: clean top-1}) of the done rows that verify against their checksum."""
    with H5Store.read_only(maps_h5) as st:
        if not st.has_group("clean"):
            return st.names, {}
        rows = np.flatnonzero(st.status("clean") == DONE)
        values, bad = st.read_rows("clean", rows, mark=False)
        return st.names, {st.names[i]: int(values["target"][k]) for k, i in enumerate(rows) if int(i) not in bad}


def check_folder(run_dir: Path) -> dict:
    """:func:`agreement` of a results folder, from its ``provenance.json`` and ``maps.h5`` alone."""
    run_dir = Path(run_dir)
    try:
        prov = read_json_object(run_dir / "provenance.json")
    except (OSError, ValueError):
        return not_comparable(f"no readable provenance.json in {run_dir}")
    return folder_agreement(run_dir, prov)


def folder_agreement(run_dir: Path, prov: dict) -> dict:
    """:func:`agreement` of the clean top-1s of ``<run_dir>/maps.h5``, for the model and protocol ``prov`` (the
    folder's provenance) states."""
    if not (run_dir / "maps.h5").is_file():
        return not_comparable(f"no maps.h5 in {run_dir}")
    model, protocol = prov.get("model", {}), prov.get("protocol", {})
    prof = protocol.get("profile", {})
    try:
        names, top1 = stored_top1(run_dir / "maps.h5")
    except (StoreError, OSError, KeyError) as err:
        return not_comparable(f"{run_dir / 'maps.h5'} cannot be read ({err})")
    # the weights' sha256 as the protocol states it (runners.csvcheck holds the protocol to maps.h5's)
    return agreement(model.get("model", "?"), protocol.get("weights_sha256", model.get("weights_sha256")),
                     int(prof.get("image_size", 224)),
                     bool(prof.get("antialias", False)), names, top1)


def summary(res: dict) -> str:
    """One line for the tables' protocol notes, the report and the run's output."""
    if not res.get("comparable"):
        return f"top-1 agreement with the authors: not comparable ({res.get('reason')})"
    line = (f"top-1 agreement with the authors' {res['model']}: {res['equal']} of {res['compared']} images "
            f"({100 * res['agreement']:.2f} %)")
    if res.get("differ_count"):
        more = " ..." if res["differ_count"] > 5 else ""
        line += f"; differ: {', '.join(d['image'] for d in res['differ'][:5])}{more}"
    return line
