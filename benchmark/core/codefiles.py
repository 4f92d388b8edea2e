"""The source files a class's results depend on: the module that defines it and the project modules it imports,
transitively, each by the sha256 of its bytes.

Every ``import`` and ``from ... import`` of a module is read with :mod:`ast`, wherever it stands (module level or
inside a function), and so is ``importlib.import_module("a.b")`` (or ``__import__``) with the name written as a
string; a name computed at run time is not followed. A module counts when its source is a ``.py`` file outside the
standard library and the installed packages (``site-packages``): this project's own modules in a checkout or an
editable install, a plugin and the helpers next to it. Installed packages (torch, captum, ...) are identified by
their versions instead (``provenance.json``, and the ``clean`` group's record of what computed a folder's results).
``from pkg import name`` counts ``pkg.name`` when it is a module, else ``pkg``; the ``__init__`` of the packages
above a module does not count unless it is imported by name. A package whose ``__init__`` loads its names on first
use (a module-level ``__getattr__``, as :mod:`benchmark.data`) counts all its modules, since which one a name comes
from is not written in an import.
"""

from __future__ import annotations

import ast
import importlib.util
import site
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

from .atomic import sha256_file


@lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    """The folders of the standard library and of installed packages (their resolved paths, with a separator)."""
    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # a virtualenv of an old layout
        pass
    paths.add(site.getusersitepackages())
    roots = {str(Path(p).resolve()) for p in paths if p}
    return tuple(sorted(r.rstrip("/\\") + "/" for r in roots))


def is_project_file(path: str | Path | None) -> bool:
    """Whether ``path`` is the source of a module of this project (a ``.py`` file outside the installed roots)."""
    if not path or not str(path).endswith(".py"):
        return False
    resolved = str(Path(path).resolve())
    return not any(resolved.startswith(root) for root in _installed_roots())


def module_file(name: str) -> str | None:
    """The source file of module ``name`` (``None`` when it has none or cannot be found), without importing a module
    that is not imported yet: the file is looked up along the search path of the package above it."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    parent, _, last = name.rpartition(".")
    try:
        if not parent:
            spec = importlib.util.find_spec(name)
            return spec.origin if spec is not None and spec.has_location else None
        locations = getattr(sys.modules.get(parent), "__path__", None)
        if locations is None:
            parent_file = module_file(parent)
            if parent_file is None or not parent_file.endswith("__init__.py"):
                return None
            locations = [str(Path(parent_file).parent)]
        for folder in locations:
            for candidate in (Path(folder) / f"{last}.py", Path(folder) / last / "__init__.py"):
                if candidate.is_file():
                    return str(candidate)
    except (ImportError, ValueError, AttributeError):
        return None
    return None


def _imported_names(path: str, module: str) -> set[str]:
    """The module names ``path`` (module ``module``) imports: ``import a.b`` gives ``a.b``; ``from a import b``
    gives ``a.b`` when that is a module, else ``a``; relative imports are resolved against ``module``."""
    tree = ast.parse(Path(path).read_bytes(), filename=path)
    package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    if Path(path).name == "__init__.py" and any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                                                for node in tree.body):  # lazy exports: every module of the package
        folder = Path(path).parent
        names.update(f"{module}.{p.stem}" for p in folder.glob("*.py") if p.name != "__init__.py")
        names.update(f"{module}.{p.parent.name}" for p in folder.glob("*/__init__.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _literal_import(node):
            names.add(node.args[0].value)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue  # beyond the top of the package: Python would refuse it too
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                source = ".".join(p for p in (base, node.module) if p)
            else:
                source = node.module or ""
            if not source:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                names.add(sub if alias.name != "*" and module_file(sub) is not None else source)
    return names


def _literal_import(call: ast.Call) -> bool:
    """Whether ``call`` is ``importlib.import_module("a.b")`` / ``import_module("a.b")`` / ``__import__("a.b")``
    with an absolute module name written as a string (a name computed at run time cannot be followed)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return (name in ("import_module", "__import__") and bool(call.args) and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str) and not call.args[0].value.startswith("."))


@lru_cache(maxsize=None)
def _file_facts(path: str, module: str, stamp: tuple[int, int]) -> tuple[str, frozenset[str] | None]:
    """The sha256 of ``path`` and the names it imports (None when they cannot be read), cached by file stamp."""
    digest = sha256_file(path)
    try:
        return digest, frozenset(_imported_names(path, module))
    except (OSError, SyntaxError, ValueError):
        return digest, None


def code_files(module: str, path: str | Path) -> dict[str, str]:
    """``{module name: sha256}`` of ``module`` (source ``path``) and of the project modules it imports,
    transitively (see the module docstring for what counts)."""
    found: dict[str, str] = {}
    todo = [(module, str(path))]
    while todo:
        name, file = todo.pop()
        if name in found:
            continue
        stat = Path(file).stat()
        found[name], imported = _file_facts(file, name, (stat.st_mtime_ns, stat.st_size))
        for other in sorted((imported or frozenset()) - set(found)):
            other_file = module_file(other)
            if is_project_file(other_file):
                todo.append((other, other_file))
    return dict(sorted(found.items()))
