"""Floor 1, the data: image lists, image sources (demo photos, an ILSVRC folder), decoding and checking, the
paper's preprocessing, the image cache of a stage, CUB-200-2011's annotations, ILSVRC labels and the Poly-CAM
authors' reference data. Imports only the core.

The names below are loaded on first use, so that a floor reading only lists (the outputs) does not import torch."""

import importlib

_EXPORTS = {"DataError": "errors", "read_image_list": "lists", "preprocess": "preprocessing", "resize": "preprocessing",
            "to_rgb": "preprocessing", "DemoSource": "sources", "FolderSource": "sources", "ImageSource": "sources",
            "check_images": "sources", "format_bad_images": "sources", "make_source": "sources"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
