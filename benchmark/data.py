"""Images: the list of names, where the files are, decoding, checking and the paper's preprocessing.

Preprocessing (conventions section 1): decode with PIL, convert to RGB, ``ToTensor`` (0..1), then resize the
whole image directly to ``size x size`` (anisotropic, no centre crop) bilinearly with align_corners=False and
antialiasing as a recorded setting (paper: off, as torchvision 0.9's tensor resize). Normalisation is the
model's business (``ModelBundle.normalize``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DEMO_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")
DATA_ENV = "BENCHMARK_DATA"  # default for --data


class DataError(Exception):
    """A problem with the image list or the image files; the message says which files and why."""


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


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, CMYK, palette (with or without transparency), 16-bit and alpha images become 8-bit RGB.

    Alpha is dropped (the colour under it is kept), as torchvision's ``convert('RGB')`` loaders do.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


class ImageSource:
    """Where images come from. ``names`` in list order; ``open(name)`` returns a decoded RGB PIL image."""

    description: str = ""
    names: list[str]

    def open(self, name: str) -> Image.Image:
        raise NotImplementedError


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
        self.names = list(names)
        self.description = f"folder {self.root} ({len(self.names)} listed images)"
        self._index: dict[str, Path] | None = None

    def path(self, name: str) -> Path | None:
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
    for name in tqdm(names, desc="checking images", unit="img", disable=not progress, leave=False):
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


def pil_to_tensor01(img: Image.Image) -> torch.Tensor:
    """``ToTensor``: HWC uint8 RGB -> CHW float32 in [0, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(x: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """Direct bilinear resize of [C,H,W] or [B,C,H,W] to ``size x size`` (align_corners=False)."""
    batched = x.ndim == 4
    out = F.interpolate(x if batched else x[None], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=antialias)
    return out if batched else out[0]


def preprocess(img: Image.Image, size: int = 224, antialias: bool = False) -> torch.Tensor:
    """PIL image -> [3, size, size] float32 in [0, 1] (before the model's normalisation)."""
    return resize(pil_to_tensor01(img), size, antialias)


def iter_batches(source: ImageSource, indices: Sequence[int], batch_size: int, size: int = 224,
                 antialias: bool = False) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (image indices, [B,3,size,size] tensor in 0..1) in list order."""
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start:start + batch_size])
        yield chunk, torch.stack([preprocess(source.open(source.names[i]), size, antialias) for i in chunk])


def make_source(data: str | None, image_list: str | None) -> ImageSource:
    """``--data demo`` (or nothing) gives the scikit-image photos; otherwise a folder with a list file."""
    data = data or os.environ.get(DATA_ENV) or "demo"
    if data == "demo":
        return DemoSource(read_image_list(image_list) if image_list else None)
    if image_list is None:
        image_list = str(Path(__file__).resolve().parent.parent / "image_lists" / "ilsvrc2012_val_2000.txt")
    return FolderSource(data, read_image_list(image_list))
