"""The parameters of a method or a metric: its paper values, its quick values, then the caller's overrides, each
override checked against the type of the value it replaces before anything runs or is stored; then the class's own
range checks (``check_params``, written with :func:`require`). :class:`Parametrised` is the base that methods and
metrics share for this.

Type rules (the default's type decides; JSON gives ``--set`` values their type):

- ``bool``: ``true`` / ``false`` only;
- ``int``: an integer (``8``; ``8.0`` and ``true`` are refused);
- ``float``: any finite number, stored as a float (``2`` becomes ``2.0``, so ``--set x.std=2`` and ``x.std=2.0``
  are the same parameters);
- ``str``: a string; ``list``: a list, whose items have the type of the default's first item;
- ``None``: anything (the parameter has no default type).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, ClassVar

from .atomic import sha256_file
from .codefiles import code_files


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_value(owner: str, name: str, default: Any, value: Any, error: type[Exception]) -> Any:
    """``value`` as parameter ``name`` of ``owner`` (replacing ``default``), or ``error`` saying what is expected."""
    where = f"{owner}: parameter {name!r}"
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise error(f"{where} takes true or false, not {_describe(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where} takes an integer (default {default}), not {_describe(value)}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise error(f"{where} takes a finite number (default {default}), not {_describe(value)}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise error(f"{where} takes a string (default {default!r}), not {_describe(value)}")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise error(f"{where} takes a list (default {list(default)}), not {_describe(value)}")
        if default:
            return [check_value(owner, f"{name}[{i}]", default[0], v, error) for i, v in enumerate(value)]
        return list(value)
    return value


def resolve_params(owner: str, paper: dict, quick_params: dict, quick: bool, overrides: dict,
                   error: type[Exception]) -> dict:
    """``paper``, updated by ``quick_params`` when ``quick``, then by the checked ``overrides``; an unknown name
    or a value of the wrong type raises ``error`` naming the parameter and what it takes."""
    params = dict(paper)
    if quick:
        params.update(quick_params)
    unknown = set(overrides) - set(params)
    if unknown:
        raise error(f"{owner}: unknown parameter(s) {sorted(unknown)}; known: {sorted(params)}")
    for name, value in overrides.items():
        params[name] = check_value(owner, name, params[name], value, error)
    return params


def require(owner: str, name: str, value: Any, ok: bool, what: str, error: type[Exception]) -> None:
    """Raise ``error`` (``"<owner>: parameter 'name' must be <what>, not <value>"``) unless ``ok``."""
    if not ok:
        raise error(f"{owner}: parameter {name!r} must be {what}, not {value!r}")


class Parametrised:
    """What a method and a metric share: ``paper_params`` (the paper's values), ``quick_params`` (cheaper values for
    the quick profile), a seed for every random draw, a pass size, and ``check_params`` range rules. Subclasses set
    ``params_error``, the exception a bad parameter raises."""

    id: ClassVar[str] = ""
    paper_params: ClassVar[dict[str, Any]] = {}
    quick_params: ClassVar[dict[str, Any]] = {}
    params_error: ClassVar[type[Exception]] = ValueError
    # raise it when a change of the code changes the results: stored results of another version are never reused
    version: ClassVar[int] = 1

    def __init__(self, quick: bool = False, seed: int = 0, batch_size: int = 32, **overrides: Any):
        """``quick``: the cheaper ``quick_params``; ``seed``: every random draw; ``batch_size``: model inputs per
        forward pass (the harness sets it from --batch-size or the tuned pass size); ``overrides``: parameters."""
        params = resolve_params(self.id, self.paper_params, self.quick_params, quick, overrides, self.params_error)
        if int(batch_size) < 1:
            raise self.params_error(f"{self.id}: batch_size must be >= 1, not {batch_size}")
        self.params = params
        self.seed = seed
        self.batch_size = int(batch_size)
        self.check_params()

    @classmethod
    def code(cls) -> dict[str, Any]:
        """``{"version", "module", "file", "sha256", "files"}``: the class's ``version``; its module and the file
        that defines it, by content; ``files``: ``{module: sha256}`` of that module and the project modules it
        imports, transitively (:func:`benchmark.core.codefiles.code_files`). Stored with every result group:
        results of another ``version`` are refused, and results reused after one of these files has changed are
        named (the harness cannot tell whether the change alters them)."""
        try:
            path = Path(inspect.getfile(cls))
            digest = sha256_file(path)
            files = code_files(cls.__module__, path)
        except (TypeError, OSError):  # defined in no file (an interactive session)
            return {"version": cls.version, "module": cls.__module__, "file": None, "sha256": None, "files": {}}
        return {"version": cls.version, "module": cls.__module__, "file": path.name, "sha256": digest, "files": files}

    def check_params(self) -> None:
        """Raise ``params_error`` for a parameter value outside its range (called when the object is built, before
        any image; the types were checked already). Write each rule as ``self.require(name, ok, what)``."""

    def require(self, name: str, ok: bool, what: str) -> None:
        """``params_error("<id>: parameter 'name' must be <what>, not <value>")`` unless ``ok``."""
        require(self.id, name, self.params[name], ok, what, self.params_error)
