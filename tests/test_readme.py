"""The README tells the truth: its test command is the one CI runs, and its plugin example is the real file."""

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci == 'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q'
    assert ci in (REPO / "README.md").read_text()


def test_readme_plugin_example_is_the_example_file():
    readme = (REPO / "README.md").read_text()
    code = (REPO / "examples/vanilla_gradient.py").read_text()
    body = code[code.index("import torch"):].strip()
    assert body in readme
