"""Image lists: one file name per line, in the order the results keep. A name is a relative path inside the data
folder: absolute paths, ``..`` components, backslashes and control characters are refused, so no list can make
the harness read (or, through ``export-npz``, write) a file outside ``--data``."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from .errors import DataError

IMAGE_LISTS = Path(__file__).resolve().parents[2] / "image_lists"
# the Poly-CAM authors' 2000 ILSVRC2012 val images, in their order: the images behind the paper's tables
AUTHORS_LIST = IMAGE_LISTS / "polycam_images.txt"
DEFAULT_LIST = AUTHORS_LIST  # the list of a run on an image folder when --image-list is not given


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an image name (None when it can): it must be a relative path inside the data folder."""
    if "\\" in name:
        return "a backslash"
    if _CONTROL.search(name):
        return "a control character"
    p = PurePosixPath(name)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in p.parts:
        return "a '..' component"
    return None


def check_names(names: list[str], where: str) -> None:
    """Refuse names that would escape the data folder (see :func:`name_problem`), listing the first few."""
    bad = [(n, why) for n in names if (why := name_problem(n))]
    if bad:
        shown = "; ".join(f"{n!r} ({why})" for n, why in bad[:5])
        raise DataError(f"{where}: {len(bad)} name(s) are not relative paths inside the data folder: {shown}"
                        f"{' ...' if len(bad) > 5 else ''}")


def read_image_list(path: str | os.PathLike) -> list[str]:
    """One file name per line; blank lines and lines starting with '#' are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image list {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"image list {path} cannot be read as text ({err})") from None
    names = [ln.strip() for ln in text.splitlines()]
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
    check_names(names, f"image list {path}")
    return names
