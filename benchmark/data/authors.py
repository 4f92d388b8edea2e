"""The Poly-CAM authors' published reference data, shipped in ``image_lists/``: their 2000 ILSVRC2012 val images
(:data:`~benchmark.data.lists.AUTHORS_LIST`, in their order) and the top-1 class their VGG16 and ResNet50 gave each
image under the paper's preprocessing (``polycam_<model>_top1.csv``, ``name,class`` without header).

A run with the same weights, preprocessing and images should reproduce those top-1 classes (about 100 %); a drop
means something differs. ``IMAGENET1K_V1`` holds the first 8 hex digits of the sha256 of torchvision's
``IMAGENET1K_V1`` weight files (torchvision names the files after them: ``vgg16-397923af.pth``,
``resnet50-0676ba61.pth``), the weights the authors used.
"""

from __future__ import annotations

from .errors import DataError
from .lists import AUTHORS_LIST, IMAGE_LISTS, read_image_list

TOP1_FILES = {"vgg16": IMAGE_LISTS / "polycam_vgg16_top1.csv", "resnet50": IMAGE_LISTS / "polycam_resnet50_top1.csv"}
IMAGENET1K_V1 = {"vgg16": "397923af", "resnet50": "0676ba61"}


def authors_names() -> list[str]:
    return read_image_list(AUTHORS_LIST)


def authors_top1(model: str) -> dict[str, int]:
    """``{image name: class}`` the authors' ``model`` (vgg16 or resnet50) predicted."""
    path = TOP1_FILES.get(model)
    if path is None:
        raise DataError(f"the authors published top-1 classes for {', '.join(TOP1_FILES)} only, not {model!r}")
    out = {}
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, cls = line.strip().rpartition(",")
        try:
            out[name] = int(cls)
        except ValueError:
            raise DataError(f"{path}, line {k}: expected name,class, not {line!r}") from None
    return out
