"""Ground-truth labels of an image list: the class CALM's remove-and-classify explains and counts
(``remove-classify --protocol calm``).

:data:`ILSVRC_VAL_LABELS` is ``image_lists/ilsvrc2012_val_labels.txt`` (``name class_index wnid`` for the 50 000
ILSVRC2012 val images, torchvision's class order; provenance in ``image_lists/README.md``). :func:`read_labels` also
reads the CALM authors' metadata format (``path,label``) and plain ``name label`` lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .lists import IMAGE_LISTS

ILSVRC_VAL_LABELS = IMAGE_LISTS / "ilsvrc2012_val_labels.txt"


def read_labels(path: str | os.PathLike = ILSVRC_VAL_LABELS) -> dict[str, int]:
    """{image name: 0-based class index} from ``name class [anything]`` or ``name,class`` lines (blank lines and
    lines starting with '#' ignored). A name given twice with different classes is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    out: dict[str, int] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(",") if "," in line else line.split()
        if len(fields) < 2:
            raise DataError(f"{path}, line {i}: expected 'name class' or 'name,class', got {line!r}")
        try:
            label = int(fields[1])
        except ValueError:
            raise DataError(f"{path}, line {i}: class {fields[1]!r} is not an integer") from None
        name = fields[0].strip()
        if out.get(name, label) != label:
            raise DataError(f"{path}: {name} is labelled both {out[name]} and {label}")
        out[name] = label
    if not out:
        raise DataError(f"label file {path} holds no labels")
    return out


def labels_for(names, labels: dict[str, int], source: str | os.PathLike = "the label file") -> list[int]:
    """The labels of ``names`` in order; every name must have one (a missing name is named in the error)."""
    missing = [n for n in names if n not in labels]
    if missing:
        raise DataError(f"{len(missing)} image(s) have no label in {source}, e.g. {missing[:3]}")
    return [labels[n] for n in names]
