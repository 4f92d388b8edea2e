"""Image lists: one file name per line, in the order the results keep."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

IMAGE_LISTS = Path(__file__).resolve().parents[2] / "image_lists"
DEFAULT_LIST = IMAGE_LISTS / "ilsvrc2012_val_2000.txt"  # the list of the paper profile


def read_image_list(path: str | os.PathLike) -> list[str]:
    """One file name per line; blank lines and lines starting with '#' are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image list {path} does not exist")
    names = [ln.strip() for ln in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"image list {path} holds no file names")
    seen, dups = set(), []
    for n in names:
        if n in seen:
            dups.append(n)
        seen.add(n)
    if dups:
        raise DataError(f"image list {path} names {len(dups)} file(s) twice, e.g. {dups[:3]}")
    return names
