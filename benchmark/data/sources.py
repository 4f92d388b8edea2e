"""Where images come from: the demo photos shipped with scikit-image, or a folder (ILSVRC2012 val, flat or in class
sub-folders); decoding and checking every listed file."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import DataError
from .lists import DEFAULT_LIST, check_names, name_problem, read_image_list
from .preprocessing import to_rgb

DEMO_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")
DATA_ENV = "BENCHMARK_DATA"  # default for --data


class ImageSource:
    """Where images come from. ``names`` in list order; ``open(name)`` returns a decoded RGB PIL image."""

    description: str = ""
    names: list[str]
    origin: str = "--data"  # where the data came from: --data, $BENCHMARK_DATA or "no --data given"
    list_path: Path | None = None  # the list file of the names, when there is one

    def open(self, name: str) -> Image.Image:
        raise NotImplementedError

    def fingerprint(self, name: str) -> int:
        """CRC-32 of the image's content as stored (the file's bytes where there is a file; here the decoded
        pixels): results are bound to it, so a file replaced or another --data is noticed."""
        return zlib.crc32(self.open(name).tobytes())


class DemoSource(ImageSource):
    """The real photos that ship inside scikit-image (no download): cat, coffee, astronaut, rocket, motorcycle."""

    description = "demo: 5 real photos shipped with scikit-image (chelsea, coffee, astronaut, rocket, motorcycle)"

    def __init__(self, names: Sequence[str] | None = None):
        self.names = list(names) if names is not None else [f"{n}.png" for n in DEMO_IMAGES]
        unknown = [n for n in self.names if Path(n).stem not in DEMO_IMAGES]
        if unknown:
            raise DataError(f"not demo images: {unknown}; the demo set is {[n + '.png' for n in DEMO_IMAGES]}")

    def open(self, name: str) -> Image.Image:
        import skimage.data

        arr = getattr(skimage.data, Path(name).stem)()
        if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
            arr = arr[0]
        return to_rgb(Image.fromarray(arr))


class FolderSource(ImageSource):
    """A folder of images, e.g. the ILSVRC2012 val folder. Files are found at ``root/name`` or, for a val set
    sorted into class sub-folders, at ``root/<any sub-folder>/name``."""

    def __init__(self, root: str | os.PathLike, names: Sequence[str]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist (set --data DIR or ${DATA_ENV})")
        check_names(list(names), f"images of {self.root}")
        self.names = list(names)
        self.description = f"folder {self.root} ({len(self.names)} listed images)"
        self._index: dict[str, Path] | None = None

    def path(self, name: str) -> Path | None:
        if name_problem(name):  # names come checked from the list; this guards any other caller
            raise DataError(f"{name!r} is not a relative path inside {self.root}")
        direct = self.root / name
        if direct.is_file():
            return direct
        if self._index is None:
            self._index = {}
            for sub in self.root.iterdir():
                if sub.is_dir():
                    for f in sub.iterdir():
                        self._index.setdefault(f.name, f)
        return self._index.get(name)

    def fingerprint(self, name: str) -> int:
        """CRC-32 of the file's bytes."""
        path = self.path(name)
        if path is None:
            raise FileNotFoundError(f"{name}: no such file in {self.root}")
        crc = 0
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                crc = zlib.crc32(block, crc)
        return crc

    def open(self, name: str) -> Image.Image:
        path = self.path(name)
        if path is None:
            raise FileNotFoundError(f"{name}: no such file in {self.root}")
        with Image.open(path) as img:
            img.load()  # full decode: truncated or corrupt data raises here
            return to_rgb(img)


@dataclass
class BadImage:
    name: str
    reason: str


def check_images(source: ImageSource, names: Sequence[str] | None = None, progress: bool = True) -> list[BadImage]:
    """Fully decode every listed image; return the missing, unreadable or corrupt ones with the reason."""
    from tqdm.auto import tqdm

    bad = []
    names = source.names if names is None else names
    for name in tqdm(names, desc="checking images", unit="img", disable=not progress or not names, leave=False):
        try:
            img = source.open(name)
            if img.width < 1 or img.height < 1:
                raise ValueError("empty image")
        except FileNotFoundError:
            bad.append(BadImage(name, "missing file"))
        except Exception as err:  # PIL raises many types for corrupt data
            bad.append(BadImage(name, f"unreadable: {type(err).__name__}: {err}"))
    return bad


def format_bad_images(bad: Sequence[BadImage]) -> str:
    lines = [f"{len(bad)} image(s) cannot be used:"] + [f"  {b.name}: {b.reason}" for b in bad]
    lines.append("Fix or remove them, or pass --skip-bad-images to run on the rest (the skipped ones are recorded).")
    return "\n".join(lines)


def make_source(data: str | None, image_list: str | None, demo_by_default: bool = True) -> ImageSource:
    """The images of a run. ``data``: ``demo`` (the scikit-image photos), a folder, or None: ``$BENCHMARK_DATA``,
    else the demo photos where ``demo_by_default`` (the quick profile) and an error naming the remedies otherwise
    (the paper profile runs on ILSVRC2012 val). ``image_list``: a list file, by default the authors' 2000 images
    for a folder. The source's ``origin`` says where the data came from; ``list_path`` is the list file (or None)."""
    origin = "--data"
    if not data:
        data, origin = os.environ.get(DATA_ENV), f"${DATA_ENV}"
    if not data:
        if not demo_by_default:
            raise DataError(f"the paper profile runs on ILSVRC2012 val images: give --data DIR (the val folder, files "
                            f"at DIR/NAME or DIR/<class>/NAME) or set ${DATA_ENV}; for the demo photos use "
                            "--profile quick, or --data demo")
        data, origin = "demo", "no --data given"
    if data == "demo":
        source = DemoSource(read_image_list(image_list) if image_list else None)
        source.list_path = Path(image_list) if image_list else None
    else:
        path = Path(image_list) if image_list is not None else DEFAULT_LIST
        source = FolderSource(data, read_image_list(path))
        source.list_path = path
    source.origin = origin
    return source
