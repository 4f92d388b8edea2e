"""Floor 2, the saliency methods: one module per method family (formula, parameters, cost, metadata); imports only
the core and the models. Importing the package registers every built-in method: each module of this package that
defines ``@register_method`` classes is imported here (see :mod:`methods.base` for the contract)."""

import importlib
import pkgutil

from .base import (  # noqa: F401
    METHODS,
    Cost,
    Method,
    MethodError,
    NotApplicable,
    get_method_class,
    make_method,
    register_method,
)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
