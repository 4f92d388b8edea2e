"""Import torchvision even where its compiled operators cannot load.

Some environments pair a CPU build of torch with a CUDA build of torchvision (e.g. torch 2.13.0+cpu with the
only matching torchvision on the registry, 0.28.0+cu130). torchvision's ``_C`` extension then fails to load,
which torchvision tolerates, but its ``_meta_registrations`` module registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``, whose schemas only the extension defines, and the import dies
with ``RuntimeError: operator torchvision::nms does not exist``.

``import_torchvision()`` first imports torchvision normally. Only if that exact error occurs does it define
the two missing operator *schemas* with ``torch.library`` (no kernels: calling ``nms`` still fails loudly) and
import again. The pure-Python parts the benchmark uses (model definitions, weight enums, ``gaussian_blur``)
then work. Where torchvision loads normally this module does nothing.
"""

from __future__ import annotations

import sys
import types

_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library.Library alive (dropping it would unregister the schemas)
patched = False  # True when the schemas had to be defined here; recorded in the provenance


def import_torchvision() -> types.ModuleType:
    """Return the torchvision module, defining missing operator schemas only if the plain import fails."""
    global _library, patched
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_SCHEMAS:
        _library.define(schema)
    patched = True
    import torchvision

    return torchvision
