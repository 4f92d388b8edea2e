r"""Cue localization on CUB-200-2011 class pairs (CALM paper; the authors' ``eval_cue_location.py``), for every
method.

Ground truth. A class has attribute ``a`` when ``class_attribute_labels_continuous.txt`` gives it >= 50 (%).
Two classes differ at the parts named by the attributes on which they differ (attribute names mapped to 7 parts:
head = bill/crown/eye/forehead/head/nape/throat, back, belly, breast, tail, leg, wing). Pairs ``(c1, c2)``,
``c1 < c2``, are grouped by their number of differing parts; groups 1, 2 and 3 are scored. For a test image of
``c1`` or ``c2``, its visible part clicks (``parts/part_locs.txt``, scaled to 224x224, truncated to int) are
merged as in the reference (head = mean of beak, crown, forehead, eyes, nape, throat; legs and wings one point
each side); every pixel goes to its nearest part point, and the true cue region is the pixels whose nearest point
is a differing part, inside the bird's segmentation (``segmentations/<class>/<name>.png`` > 0 after a bicubic
resize to 224x224). Images where no differing part is visible are skipped.

Score. ``s = clip(|S(x, c1) - S(x, c2)|)`` on 224x224 (``S`` the method's map; constant or NaN maps -> zeros,
the reference's ``clipping`` norm), and the pixel average precision (PxAP) of ``s`` against the true region
over all the pair's images, with the reference's histogram evaluator: 1000 log-spaced thresholds
``10^-(6.993..0)`` plus the edges 1, 2, 3; ``PxAP = 100 sum_i precision_i (recall_i - recall_{i-1})`` over
thresholds with a positive prediction. Scores below the first threshold (1.02e-7) fall outside the histogram and
are not counted (the reference's behaviour, kept). The result per group is the mean PxAP over its pairs.

Fix of the reference's defect (stated in every result): the reference creates one evaluator and accumulates the
histograms of *every* pair into it without resetting, so the PxAP it reports for a pair is that of all pairs
seen so far. Here each pair gets fresh histograms (:class:`PxAPHistogram` per pair); ``reset_per_pair=False``
reproduces the reference.

Images: the official test split (``train_test_split.txt`` = 0), RGB, bilinear antialiased resize to 224x224 (the
reference's torchvision ``Resize((224, 224))`` on PIL images), the model's normalisation.

Cost: every pair needs two maps of each of its images (about 60 test images per pair); CUB has 19 900 pairs.
``max_pairs`` (a seeded sample per group) bounds the work.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import MetricError

GROUPS = (1, 2, 3)
FIX = ("histograms reset for every class pair (the reference accumulates them over all pairs without reset, so "
       "its per-pair PxAP mixes every earlier pair)")
_HEAD_WORDS = ("bill", "crown", "eye", "forehead", "head", "nape", "throat")
_PART_WORDS = ((2, "back"), (3, "belly"), (4, "breast"), (5, "tail"), (6, "leg"), (7, "wing"))


def threshold_list(kind: str = "log", interval: float = 0.001) -> np.ndarray:
    """The reference's thresholds: ``log``: 10^-t for t in arange(0, 7, 7 interval) reversed; ``even``."""
    if kind == "log":
        t = np.arange(0, 7, interval * 7)
        return np.array([10 ** (-v) for v in t[::-1]])
    if kind == "even":
        return np.arange(0, 1, interval)
    raise MetricError(f"threshold kind must be log or even, not {kind!r}")


class PxAPHistogram:
    """The reference's ``MaskEvaluator``: score histograms at true and false pixels, then PxAP."""

    def __init__(self, thresholds: np.ndarray | None = None):
        t = threshold_list() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        self.edges = np.append(t, [1.0, 2.0, 3.0])
        self.true_hist = np.zeros(len(self.edges) - 1)
        self.false_hist = np.zeros(len(self.edges) - 1)
        self.true_pixels = 0  # every true pixel, also those scored below the first threshold (not in the histogram)

    def accumulate(self, score: np.ndarray, gt: np.ndarray) -> None:
        if score.shape != gt.shape:
            raise MetricError(f"score map {score.shape} and ground truth {gt.shape} differ in shape")
        self.true_hist += np.histogram(score[gt == 1], bins=self.edges)[0]
        self.true_pixels += int((gt == 1).sum())
        self.false_hist += np.histogram(score[gt == 0], bins=self.edges)[0]

    def compute(self) -> float:
        tp = self.true_hist[::-1].cumsum()
        fn = self.true_hist.sum() - tp
        fp = self.false_hist[::-1].cumsum()
        if self.true_pixels == 0:
            raise MetricError("no true cue pixel in this pair's images")
        if ((tp + fn) <= 0).all():
            return 0.0  # every true pixel scored below the first threshold: the map finds none of them
        if ((tp + fp) <= 0).all():
            return 0.0  # the reference raises; a map that is zero everywhere finds nothing
        nonzero = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        return float(100 * (precision[1:] * np.diff(recall))[nonzero[1:]].sum())


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

    def __init__(self, root: str | Path):
        self.root = root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"CUB folder {root} does not exist")
        attr_names = _find(root, "attributes/attributes.txt", "attributes.txt", "../attributes.txt")
        self.attribute_names = [ln.split(" ", 1)[1].strip() for ln in attr_names.read_text().splitlines() if ln]
        cont = _find(root, "attributes/class_attribute_labels_continuous.txt")
        self.class_attributes = np.loadtxt(cont, ndmin=2) >= 50  # [classes, attributes]
        if self.class_attributes.shape[1] != len(self.attribute_names):
            raise MetricError(f"{cont} has {self.class_attributes.shape[1]} attributes, {attr_names} names "
                              f"{len(self.attribute_names)}")
        self.images_dir = _find(root, "images")
        self.seg_dir = _find(root, "segmentations", "../segmentations")
        paths = dict(_pairs(_find(root, "images.txt")))
        labels = {int(k): int(v) - 1 for k, v in _pairs(_find(root, "image_class_labels.txt"))}
        split = {int(k): v == "1" for k, v in _pairs(_find(root, "train_test_split.txt"))}
        self.images = [CubImage(int(i), p, labels[int(i)], split.get(int(i), False)) for i, p in paths.items()]
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

    def test_images(self, classes) -> list[CubImage]:
        return [im for im in self.images if not im.train and im.label in classes]

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


def clip_norm(m: np.ndarray) -> np.ndarray:
    """The reference's ``clipping`` norm: NaN or constant -> zeros, else clipped to [0, 1]."""
    if np.isnan(m).any() or m.min() == m.max():
        return np.zeros_like(m)
    return np.clip(m, 0.0, 1.0)


def cue_localization(model, method, cub_root, groups=GROUPS, max_pairs: int | None = None, seed: int = 0,
                     batch_size: int = 32, reset_per_pair: bool = True, progress: bool = False) -> dict:
    """Mean PxAP per group of 1/2/3 differing parts for ``method`` (a :class:`methods.base.Method`) on
    ``model`` (a ModelBundle: any classifier, or a CALM model for calm_em/calm_ml).

    Returns {"pxap": {group: mean PxAP}, "pairs": {group: [(c1, c2, PxAP, images)]}, "fix": ..., "seed": ...,
    "failed": [(c1, c2, reason)]}.
    ``max_pairs``: at most that many pairs per group, drawn with ``numpy.random.default_rng(seed)``."""
    from tqdm import tqdm

    from benchmark.data import preprocess

    cub = CUB(cub_root)
    by_group = cub.pairs_by_group()
    rng = np.random.default_rng(seed)
    method.check_applicable(model)
    result = {"pxap": {}, "pairs": {}, "fix": FIX if reset_per_pair else "none (reference behaviour)",
              "seed": seed, "max_pairs": max_pairs, "method": method.id, "failed": []}
    shared = PxAPHistogram()
    for g in groups:
        pairs = by_group.get(g, [])
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
        scores = []
        result["pairs"][g] = []
        for c1, c2 in tqdm(pairs, desc=f"cue localization, {g} part(s)", disable=not progress):
            hist = PxAPHistogram() if reset_per_pair else shared
            diff = cub.differing_parts(c1, c2)
            items = [(im, cub.cue_mask(im, diff)) for im in cub.test_images((c1, c2))]
            items = [(im, m) for im, m in items if m is not None]
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                x = model.normalize(torch.stack([preprocess(cub.open(im), 224, antialias=True) for im, _ in chunk])
                                    .to(model.device))
                t1 = torch.full((len(chunk),), c1, device=model.device)
                s1 = method(model, x, t1).cpu().numpy()
                s2 = method(model, x, torch.full_like(t1, c2)).cpu().numpy()
                for k, (_im, m) in enumerate(chunk):
                    hist.accumulate(clip_norm(np.abs(s1[k] - s2[k]).astype(np.float64)), m)
            if items:
                try:
                    ap = hist.compute()
                except MetricError as err:  # recorded; the other pairs go on
                    result["failed"].append((c1, c2, str(err)))
                    continue
                scores.append(ap)
                result["pairs"][g].append((c1, c2, ap, len(items)))
        result["pxap"][g] = float(np.mean(scores)) if scores else float("nan")
    return result
