"""The floors of the harness hold: no import cycle, no import that runs upward, one hook helper, one CLI wiring.

The rules (floors and what each may import) are in scripts/architecture.py and docs/architecture.md."""

import ast
import importlib.util
import re

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("architecture", REPO / "scripts" / "architecture.py")
arch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch)


@pytest.fixture(scope="module")
def graph():
    return arch.import_graph(REPO)


def test_every_module_belongs_to_a_floor(graph):
    assert len(graph) > 50
    assert [m for m in graph if arch.floor_of(m) is None] == []


def test_no_import_cycle(graph):
    assert arch.cycles(graph) == []


def test_no_import_runs_upward(graph):
    assert arch.upward_imports(graph) == []


def test_the_checks_can_fail():
    """A cycle and an upward import in a hand-made graph are found (the checks are not vacuous)."""
    fake = {"benchmark.core.a": {"methods.x"}, "methods.x": {"benchmark.core.a"}, "runners.y": {"benchmark.cli.z"},
            "benchmark.cli.z": set()}
    assert arch.cycles(fake) == [["benchmark.core.a", "methods.x"]]
    assert ("runners.y", "engine", "benchmark.cli.z", "cli") in arch.upward_imports(fake)
    assert ("benchmark.core.a", "core", "methods.x", "methods") in arch.upward_imports(fake)


def test_imports_inside_functions_and_import_module_are_seen(tmp_path):
    pkg = tmp_path / "runners"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from benchmark.cli import main\n")
    (pkg / "b.py").write_text("import importlib\nimportlib.import_module('benchmark.outputs.tables')\n")
    for p in ("benchmark", "benchmark/cli", "benchmark/outputs"):
        (tmp_path / p).mkdir(exist_ok=True)
        (tmp_path / p / "__init__.py").write_text("")
    (tmp_path / "benchmark/outputs/tables.py").write_text("")
    (tmp_path / "methods").mkdir()
    (tmp_path / "metrics").mkdir()
    g = arch.import_graph(tmp_path)
    assert g["runners.a"] == {"benchmark.cli"} and g["runners.b"] == {"benchmark.outputs.tables"}


def _py_files():
    for pkg in arch.PACKAGES:
        yield from (REPO / pkg).rglob("*.py")


def test_hooks_are_registered_through_the_one_helper():
    """Every ``register_forward_hook`` / ``register_forward_pre_hook`` of the harness is in benchmark/core/hooks.py
    (tensor gradient hooks, ``Tensor.register_hook``, are not module hooks)."""
    pattern = re.compile(r"register_forward_(pre_)?hook")
    offenders = [str(p.relative_to(REPO)) for p in _py_files()
                 if p != REPO / "benchmark/core/hooks.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_every_command_is_wired_through_the_table():
    """One wiring: every command of the table resolves to a handler (and its own arguments, when it has any), and
    the parser knows exactly the table's commands."""
    from benchmark.cli import _load, build_parser
    from benchmark.cli.commands import COMMANDS
    from benchmark.cli.options import GROUPS, OPTIONS

    for cmd in COMMANDS:
        assert callable(_load(cmd.handler)), cmd.name
        if cmd.arguments:
            assert callable(_load(cmd.arguments)), cmd.name
        for group in cmd.options:
            assert group in GROUPS or group in OPTIONS, (cmd.name, group)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(c.name for c in COMMANDS)


def test_no_dated_history_in_module_docstrings():
    """Measurements and their dates live in docs/measurements.md and CHANGELOG.md, not in the code."""
    dated = []
    for p in _py_files():
        tree = ast.parse(p.read_text())
        doc = ast.get_docstring(tree) or ""
        if re.search(r"20\d\d-\d\d(-\d\d)?", doc):
            dated.append(str(p.relative_to(REPO)))
    assert dated == []
