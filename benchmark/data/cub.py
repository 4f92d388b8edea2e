"""CUB-200-2011's annotations for CALM's cue localization (docs/calm.md): class attributes, part clicks,
segmentations, the test split, and the true cue region of a class pair on an image.

A class has attribute ``a`` when ``class_attribute_labels_continuous.txt`` gives it >= 50 (%). Two classes differ
at the parts named by the attributes on which they differ (attribute names mapped to 7 parts: head =
bill/crown/eye/forehead/head/nape/throat, back, belly, breast, tail, leg, wing). For a test image of ``c1`` or
``c2``, its visible part clicks (``parts/part_locs.txt``, scaled to 224x224, truncated to int) are merged as in the
reference (head = mean of beak, crown, forehead, eyes, nape, throat; legs and wings one point each side); every
pixel goes to its nearest part point, and the true cue region is the pixels whose nearest point is a differing
part, inside the bird's segmentation (``segmentations/<class>/<name>.png`` > 0 after a bicubic resize to
224x224). Images where no differing part is visible have no region (None).

Test images (``test_list``): ``calm`` (default) = the CALM authors' list of 5794 test images
(``image_lists/calm_cub_test_image_ids.txt``, :data:`CALM_TEST_LIST`, in their order), ``split`` = the images
marked 0 in CUB's ``train_test_split.txt``, or the path of another list (one ``images/``-relative path a line).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .lists import IMAGE_LISTS

CALM_TEST_LIST = IMAGE_LISTS / "calm_cub_test_image_ids.txt"
TEST_LISTS = ("calm", "split")

_HEAD_WORDS = ("bill", "crown", "eye", "forehead", "head", "nape", "throat")
_PART_WORDS = ((2, "back"), (3, "belly"), (4, "breast"), (5, "tail"), (6, "leg"), (7, "wing"))


def attribute_parts(name: str) -> list[int]:
    """Part ids (1 head .. 7 wing) an attribute name refers to (the reference's word matching)."""
    out = [1] if any(w in name for w in _HEAD_WORDS) else []
    return out + [pid for pid, word in _PART_WORDS if word in name]


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        p = root / c
        if p.exists():
            return p
    raise FileNotFoundError(f"CUB-200-2011 folder {root}: none of {list(candidates)} found. Give the extracted "
                            "CUB_200_2011 folder with attributes.txt and the segmentations folder (separate "
                            "download) inside it or next to it")


@dataclass
class CubImage:
    image_id: int
    path: str  # relative to images/
    label: int  # 0-based
    train: bool


class CUB:
    """CUB-200-2011 annotations needed by cue localization (ids as in the files: 1-based)."""

    def __init__(self, root: str | Path, test_list: str | Path = "calm"):
        self.root = root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"CUB folder {root} does not exist")
        attr_names = _find(root, "attributes/attributes.txt", "attributes.txt", "../attributes.txt")
        self.attribute_names = [ln.split(" ", 1)[1].strip() for ln in attr_names.read_text().splitlines() if ln]
        cont = _find(root, "attributes/class_attribute_labels_continuous.txt")
        self.class_attributes = np.loadtxt(cont, ndmin=2) >= 50  # [classes, attributes]
        if self.class_attributes.shape[1] != len(self.attribute_names):
            raise DataError(f"{cont} has {self.class_attributes.shape[1]} attributes, {attr_names} names "
                              f"{len(self.attribute_names)}")
        self.images_dir = _find(root, "images")
        self.seg_dir = _find(root, "segmentations", "../segmentations")
        paths = dict(_pairs(_find(root, "images.txt")))
        labels = {int(k): int(v) - 1 for k, v in _pairs(_find(root, "image_class_labels.txt"))}
        split = {int(k): v == "1" for k, v in _pairs(_find(root, "train_test_split.txt"))}
        self.images = [CubImage(int(i), p, labels[int(i)], split.get(int(i), False)) for i, p in paths.items()]
        self.test_list = str(test_list)
        self._test = self._read_test_list(test_list)
        self.parts: dict[int, dict[int, tuple[float, float]]] = {}
        for ln in _find(root, "parts/part_locs.txt").read_text().splitlines():
            f = ln.split()
            if len(f) >= 5 and int(float(f[4])):
                self.parts.setdefault(int(f[0]), {})[int(f[1])] = (float(f[2]), float(f[3]))
        self.num_classes = self.class_attributes.shape[0]
        self.attr_parts = [attribute_parts(n) for n in self.attribute_names]

    def differing_parts(self, c1: int, c2: int) -> list[int]:
        """Part ids (1..7) where 0-based classes c1 and c2 differ in some attribute."""
        diff = np.nonzero(self.class_attributes[c1] != self.class_attributes[c2])[0]
        return sorted({p for a in diff for p in self.attr_parts[a]})

    def pairs_by_group(self) -> dict[int, list[tuple[int, int]]]:
        out: dict[int, list[tuple[int, int]]] = {}
        for c1, c2 in itertools.combinations(range(self.num_classes), 2):
            out.setdefault(len(self.differing_parts(c1, c2)), []).append((c1, c2))
        return out

    def _read_test_list(self, test_list) -> list[CubImage]:
        if str(test_list) == "split":
            return [im for im in self.images if not im.train]
        path = CALM_TEST_LIST if str(test_list) == "calm" else Path(test_list)
        if not path.is_file():
            raise FileNotFoundError(f"CUB test list {path} does not exist (test_list: calm, split or a file)")
        by_path = {im.path: im for im in self.images}
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        missing = [n for n in names if n not in by_path]
        if missing:
            raise DataError(f"{len(missing)} image(s) of the test list {path} are not in {self.root}/images.txt, "
                            f"e.g. {missing[:3]}")
        return [by_path[n] for n in names]

    def test_images(self, classes) -> list[CubImage]:
        """The test images of the ``classes`` (0-based), in the test list's order."""
        return [im for im in self._test if im.label in classes]

    def open(self, im: CubImage) -> Image.Image:
        return Image.open(self.images_dir / im.path).convert("RGB")

    def part_points(self, im: CubImage, size: tuple[int, int], out: int = 224) -> tuple[np.ndarray, list[int]]:
        """Merged part points [P, 2] (x, y at ``out`` resolution, int) and their part ids (1..7)."""
        locs = self.parts.get(im.image_id, {})
        w, h = size
        pts = {pid: np.array([x / w * out, y / h * out]) for pid, (x, y) in locs.items()}
        coords, ids = [], []
        head = [pts[p] for p in (2, 5, 6, 7, 10, 11, 15) if p in pts]
        if head:
            coords.append(np.mean(head, axis=0))
            ids.append(1)
        for union_id, pid in ((2, 1), (3, 3), (4, 4), (5, 14)):  # back, belly, breast, tail
            if pid in pts:
                coords.append(pts[pid])
                ids.append(union_id)
        for union_id, pids in ((6, (8, 12)), (7, (9, 13))):  # legs, wings: each side its own point
            for pid in pids:
                if pid in pts:
                    coords.append(pts[pid])
                    ids.append(union_id)
        return (np.array(coords).astype(int) if coords else np.zeros((0, 2), int)), ids

    def cue_mask(self, im: CubImage, diff_parts: list[int], out: int = 224) -> np.ndarray | None:
        """[out, out] uint8 true cue region (see the module docstring), or None if no differing part is visible."""
        with Image.open(self.images_dir / im.path) as img:
            size = img.size
        coords, ids = self.part_points(im, size, out)
        if not any(i in diff_parts for i in ids):
            return None
        ys, xs = np.mgrid[0:out, 0:out]
        pix = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (x, y) in raster order
        d = ((pix[:, None, :] - coords[None, :, :]) ** 2).sum(axis=2)
        nearest = d.argmin(axis=1)
        region = np.isin(nearest, [k for k, i in enumerate(ids) if i in diff_parts]).reshape(out, out)
        seg_path = self.seg_dir / (im.path[:-4] + ".png")
        if not seg_path.is_file():
            raise FileNotFoundError(f"segmentation {seg_path} is missing")
        seg = np.array(Image.open(seg_path).convert("L").resize((out, out), Image.BICUBIC)) > 0
        return (region & seg).astype(np.uint8)


def _pairs(path: Path):
    for ln in path.read_text().splitlines():
        f = ln.split()
        if len(f) >= 2:
            yield f[0], f[1]
