"""The floors of the harness, read from the code: import cycles, imports that run upward, the largest modules and
functions.

    python scripts/architecture.py              # a report; exit status 1 if there is a cycle or an upward import
    python scripts/architecture.py --json       # the same facts as JSON

Every ``import`` and ``from ... import`` of the project's packages is read with :mod:`ast`, wherever it stands
(module level or inside a function), and so are ``importlib.import_module("...")`` calls with a literal name. A
module belongs to the first floor of :data:`FLOORS` whose prefix it starts with; :data:`MAY_IMPORT` says which
floors each floor may import (itself included). ``tests/test_architecture.py`` asserts the same rules.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "methods", "metrics", "runners")

# (module prefix, floor), most specific first; the order of the floors in MAY_IMPORT is bottom -> top
FLOORS = [
    ("benchmark.core", "core"),
    ("benchmark.models", "models"),
    ("benchmark.data", "data"),
    ("methods", "methods"),
    ("metrics", "metrics"),
    ("runners", "engine"),
    ("benchmark.perf", "perf"),
    ("benchmark.outputs", "outputs"),
    ("benchmark.cli", "cli"),
    ("benchmark.__main__", "cli"),
    ("benchmark", "core"),  # benchmark/__init__.py: the version only
]
MAY_IMPORT = {
    "core": {"core"},
    "models": {"core", "models"},
    "data": {"core", "data"},
    "methods": {"core", "models", "methods"},
    "metrics": {"core", "models", "metrics"},
    "engine": {"core", "models", "data", "methods", "metrics", "engine"},
    "perf": {"core", "models", "data", "methods", "metrics", "engine", "perf"},
    "outputs": {"core", "data", "metrics", "engine", "outputs"},
    "cli": {"core", "models", "data", "methods", "metrics", "engine", "perf", "outputs", "cli"},
}


def floor_of(module: str, floors=FLOORS) -> str | None:
    for prefix, floor in floors:
        if module == prefix or module.startswith(prefix + "."):
            return floor
    return None


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """{dotted module name: file} of every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to: itself, or its longest prefix that is a module."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.args[0] if node.args else None, ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for n in names:
            target = _resolve(n, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def _is_ancestor(pkg: str, module: str) -> bool:
    return module.startswith(pkg + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). A package importing its own submodules and
    a submodule importing its package's ``__init__`` is Python's package mechanics, not a cycle: edges from a module
    to one of its ancestor packages are left out."""
    edges = {m: {t for t in ts if not _is_ancestor(t, m)} for m, ts in graph.items()}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def upward_imports(graph: dict[str, set[str]], floors=FLOORS, may=MAY_IMPORT) -> list[tuple[str, str, str, str]]:
    """(module, its floor, imported module, that floor) for every import the floors do not allow."""
    out = []
    for m, targets in sorted(graph.items()):
        fm = floor_of(m, floors)
        for t in sorted(targets):
            ft = floor_of(t, floors)
            if fm is None or ft is None or ft not in may[fm]:
                out.append((m, fm, t, ft))
    return out


def sizes(root: Path = REPO, top: int = 10) -> dict:
    """The largest modules (lines) and functions (lines from ``def`` to the last line of the body)."""
    modules = project_modules(root)
    mod_lines = sorted(((len(p.read_text().splitlines()), m) for m, p in modules.items()), reverse=True)
    funcs = []
    for m, p in modules.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{m}.{node.name}",
                              "class" if isinstance(node, ast.ClassDef) else "def"))
    classes = sorted((f for f in funcs if f[2] == "class"), reverse=True)[:top]
    defs = sorted((f for f in funcs if f[2] == "def"), reverse=True)[:top]
    return {"modules": [{"module": m, "lines": n} for n, m in mod_lines[:top]],
            "classes": [{"class": name, "lines": n} for n, name, _ in classes],
            "functions": [{"function": name, "lines": n} for n, name, _ in defs],
            "module_count": len(modules), "total_lines": sum(n for n, _ in mod_lines)}


def facts(root: Path = REPO) -> dict:
    graph = import_graph(root)
    return {"cycles": cycles(graph),
            "upward_imports": [{"module": m, "floor": fm, "imports": t, "imported_floor": ft}
                               for m, fm, t, ft in upward_imports(graph)],
            "sizes": sizes(root)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--root", default=str(REPO), help="repository root (default: this one)")
    args = p.parse_args()
    f = facts(Path(args.root))
    if args.json:
        print(json.dumps(f, indent=2))
    else:
        print(f"import cycles: {len(f['cycles'])}")
        for c in f["cycles"]:
            print("  " + " <-> ".join(c))
        print(f"upward imports: {len(f['upward_imports'])}")
        for u in f["upward_imports"]:
            print(f"  {u['module']} ({u['floor']}) -> {u['imports']} ({u['imported_floor']})")
        s = f["sizes"]
        print(f"{s['module_count']} modules, {s['total_lines']} lines; largest modules:")
        for r in s["modules"]:
            print(f"  {r['lines']:5d}  {r['module']}")
        print("largest classes:")
        for r in s["classes"]:
            print(f"  {r['lines']:5d}  {r['class']}")
        print("largest functions:")
        for r in s["functions"]:
            print(f"  {r['lines']:5d}  {r['function']}")
    return 1 if f["cycles"] or f["upward_imports"] else 0


if __name__ == "__main__":
    sys.exit(main())
