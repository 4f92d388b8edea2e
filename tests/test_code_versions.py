"""Results are reused only by the code that computed them: a method's ``version`` is stored with its maps (another
version is refused), and reusing results after the file that defines the method has changed is said, by name.

The plugin is a real file, edited between real runs of ``python -m benchmark maps`` in child processes."""

import subprocess
import sys

import pytest

from conftest import REPO
from runners.report import code_change_notice

PLUGIN = '''
from methods import Method, register_method


@register_method
class MeanMap(Method):
    id = "mean_map"
    family = "plugin"
    citation = "test plugin"
    version = {version}

    def explain(self, model, x, targets):
        return x.mean(1){edit}
'''


def maps_run(plugin, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", "maps", "--model", "efficientnet_lite0", "--profile",
                           "quick", "--limit", "1", "--no-progress", "--plugin", str(plugin), "--methods", "mean_map",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def edited_runs(tmp_path_factory):
    """The same folder after: a first run, a run with a comment added to the plugin, a run with version 2."""
    tmp = tmp_path_factory.mktemp("code")
    plugin, out = tmp / "mean_map.py", tmp / "out"
    runs = {}
    for name, version, edit in [("first", 1, ""), ("edited", 1, "  # an edit"), ("version2", 2, "  # an edit")]:
        plugin.write_text(PLUGIN.format(version=version, edit=edit))
        runs[name] = maps_run(plugin, out)
    return runs


def test_unchanged_code_reuses_silently(edited_runs):
    first = edited_runs["first"]
    assert first.returncode == 0, first.stderr
    assert "mean_map: 1 computed, 0 already stored" in first.stdout
    assert "has changed since" not in first.stdout


def test_an_edited_file_reuses_its_results_and_says_so(edited_runs):
    edited = edited_runs["edited"]
    assert edited.returncode == 0, edited.stderr
    assert "mean_map: 0 computed, 1 already stored" in edited.stdout
    assert ("maps/mean_map: 1 stored result(s) reused, computed when mean_map.py had sha256" in edited.stdout
            and "its version (1) has not" in edited.stdout)


def test_another_version_is_refused_with_a_message(edited_runs):
    v2 = edited_runs["version2"]
    assert v2.returncode == 2, v2.stdout + v2.stderr
    assert "maps/mean_map" in v2.stderr and "computed by version 1 of its code; this is version 2" in v2.stderr
    assert "Traceback" not in v2.stderr


def test_code_change_notice_rules():
    code = {"version": 1, "file": "m.py", "sha256": "b" * 64}
    assert code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "b" * 64}, code, 5) is None
    assert code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "a" * 64}, code, 0) is None
    assert code_change_notice("maps/m", None, code, 5) is None  # a group of an older harness: nothing to compare
    assert code_change_notice("maps/m", {"sha256": None}, code, 5) is None  # code defined in no file
    line = code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "a" * 64}, code, 5)
    assert line.startswith("maps/m: 5 stored result(s) reused, computed when m.py had sha256 aaaaaaaaaaaa;")
    assert "(bbbbbbbbbbbb)" in line
