"""Saliency methods. Importing the package registers every built-in method (see :mod:`methods.base`)."""

from .base import (METHODS, Cost, Method, MethodError, NotApplicable, get_method_class, load_plugin,  # noqa: F401
                   make_method, register_method)
from . import cam_family  # noqa: F401,E402
