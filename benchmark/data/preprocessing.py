"""The paper's preprocessing (docs/protocol.md): decode with PIL, convert to RGB, ``ToTensor`` (0..1), then resize
the whole image directly to ``size x size`` (anisotropic, no centre crop) bilinearly with align_corners=False and
antialiasing as a recorded setting (paper: off, as torchvision 0.9's tensor resize). Normalisation is the model's
business (``ModelBundle.normalize``).

:func:`preprocess_pil` is the CALM authors' test transform instead: ``Resize((size, size))`` on the PIL image (PIL's
bilinear filter, which widens with the scale factor) and then ``ToTensor``; CALM's evaluations use it under their
``calm`` protocol (docs/calm.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


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


def preprocess_pil(img: Image.Image, size: int = 224) -> torch.Tensor:
    """PIL image -> [3, size, size] float32 in [0, 1], resized by PIL on the 8-bit image: torchvision's
    ``Resize((size, size))`` on a PIL image, then ``ToTensor`` (the CALM authors' test transform)."""
    return pil_to_tensor01(to_rgb(img).resize((size, size), Image.BILINEAR))
