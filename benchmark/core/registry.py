"""Registries of named classes (the methods, the metrics): one rule for ids, duplicates refused, plugins imported
from a file or a module name."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(dict):
    """``{id: class}`` of subclasses of ``base``; :meth:`register` is the class decorator.

    An id is lower-case ASCII letters, digits and ``_``, starting with a letter; one id names one class (the same
    class registered again, e.g. a module imported twice, is fine). ``required`` names class attributes every
    registered class must define, with their type (strings not empty); ``check`` adds the rules of one kind."""

    def __init__(self, kind: str, base: type, error: type[Exception], required: dict[str, type] | None = None,
                 check=None):
        super().__init__()
        self.kind, self.base, self.error, self.required = kind, base, error, dict(required or {})
        self.check = check  # check(cls): raises ``error`` for a class that breaks a rule of its own kind

    def register(self, cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise self.error(f"@register_{self.kind} takes a {self.base.__name__} subclass, got {cls!r}")
        if not ID_RE.match(getattr(cls, "id", "") or ""):
            raise self.error(f"{cls.__name__}: id {getattr(cls, 'id', '')!r} must be lower-case ASCII letters, "
                             "digits and '_', starting with a letter")
        for attr, kind in self.required.items():
            value = getattr(cls, attr, None)
            if not isinstance(value, kind) or value == "":
                raise self.error(f"{self.kind} {cls.id}: class attribute {attr!r} must be a non-empty "
                                 f"{kind.__name__}, got {value!r}")
        if self.check is not None:
            self.check(cls)
        old = self.get(cls.id)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise self.error(f"{self.kind} id {cls.id!r} is already registered by {old.__module__}.{old.__qualname__}")
        self[cls.id] = cls
        return cls

    def lookup(self, cls_id: str) -> type:
        try:
            return self[cls_id]
        except KeyError:
            raise self.error(f"unknown {self.kind} {cls_id!r}; registered: {', '.join(sorted(self))}") from None


def import_plugin(spec: str):
    """Import a plugin given as a ``.py`` file path or a module name; return the module. Raises ImportError with
    the reason (a missing file, or the exception the plugin raised while importing)."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ImportError(f"plugin file {spec} does not exist")
        name = f"benchmark_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"plugin {spec} is not a Python file (give a .py file or a module name)")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(name, None)
            raise ImportError(f"cannot import plugin {spec}: {type(err).__name__}: {err}") from err
        return module
    try:
        return importlib.import_module(spec)
    except Exception as err:
        raise ImportError(f"cannot import plugin {spec}: {type(err).__name__}: {err}") from err
