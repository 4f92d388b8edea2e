"""Stored results are reused only with what made them.

- The code: a method's ``version`` is stored with its maps (another version is refused), and reusing results after
  the file that defines the method has changed is said, by name; ``--recompute`` drops a method's or a metric's
  stored results and computes them again in the same folder. The plugin is a real file, edited between real runs
  of ``python -m benchmark`` in child processes.
- The images: a folder's results are bound to each image's content (CRC-32 of the file); an image replaced under
  the same name (or another ``--data``) stops the command with a message naming it.
"""

import subprocess
import sys

import pytest

from conftest import REPO, run_cli
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


def stage(command, plugin, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", command, "--model", "efficientnet_lite0", "--profile",
                           "quick", "--limit", "1", "--no-progress", "--plugin", str(plugin), "--methods", "mean_map",
                           "--out", str(out), *map(str, extra)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def edited_runs(tmp_path_factory):
    """The same folder after: a first run (maps, then insertion), a run with a comment added to the plugin, a run
    with version 2, the same with --recompute, insertion again, insertion with --recompute insertion."""
    tmp = tmp_path_factory.mktemp("code")
    plugin, out = tmp / "mean_map.py", tmp / "out"
    runs = {}
    steps = [("first", 1, ""), ("first_metrics", 1, ""), ("edited", 1, "  # an edit"), ("version2", 2, "  # an edit"),
             ("recompute", 2, "  # an edit"), ("metrics_after", 2, "  # an edit"), ("recompute_metric", 2, ""),
             ("recompute_map_values", 2, ""), ("unknown_id", 2, ""), ("dry", 2, ""), ("dry_recompute", 2, "")]
    for name, version, edit in steps:
        plugin.write_text(PLUGIN.format(version=version, edit=edit))
        if name == "recompute":
            runs[name] = stage("maps", plugin, out, "--recompute", "mean_map")
        elif name == "recompute_metric":
            runs[name] = stage("metrics", plugin, out, "--metrics", "insertion", "--recompute", "insertion")
        elif name == "recompute_map_values":
            runs[name] = stage("metrics", plugin, out, "--metrics", "insertion", "--recompute", "mean_map")
        elif name.startswith("dry"):
            runs[name] = stage("run", plugin, out, "--metrics", "insertion", "--dry-run",
                               *(["--recompute", "mean_map"] if name == "dry_recompute" else []))
        elif name == "unknown_id":
            runs[name] = stage("maps", plugin, out, "--recompute", "mean_mapp")
        elif "metrics" in name:
            runs[name] = stage("metrics", plugin, out, "--metrics", "insertion")
        else:
            runs[name] = stage("maps", plugin, out)
    runs["folder"] = out / "efficientnet_lite0"
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
    assert "add --recompute mean_map to drop its stored results" in v2.stderr


def test_recompute_drops_the_maps_and_their_values_then_computes_them(edited_runs):
    import h5py

    assert edited_runs["first_metrics"].returncode == 0 and "insertion/mean_map: 1 computed" in \
        edited_runs["first_metrics"].stdout
    again = edited_runs["recompute"]
    assert again.returncode == 0, again.stderr
    assert "maps/mean_map: 1 stored map(s) dropped (--recompute)" in again.stdout
    assert "insertion/mean_map: 1 stored value(s) dropped with their maps (--recompute)" in again.stdout
    assert "mean_map: 1 computed, 0 already stored" in again.stdout
    assert "held no finished row" in again.stdout  # the group took version 2
    with h5py.File(edited_runs["folder"] / "maps.h5", "r") as f:
        assert f["maps/mean_map"].attrs["version"] == "2"
    after = edited_runs["metrics_after"]
    assert after.returncode == 0 and "insertion/mean_map: 1 computed, 0 already stored" in after.stdout


def test_recompute_of_a_metric_drops_its_values_only(edited_runs):
    run = edited_runs["recompute_metric"]
    assert run.returncode == 0, run.stderr
    assert "insertion/mean_map: 1 stored value(s) dropped (--recompute)" in run.stdout
    assert "insertion/mean_map: 1 computed, 0 already stored" in run.stdout
    assert "maps/mean_map" not in run.stdout
    values = edited_runs["recompute_map_values"]  # a method named to `metrics`: the values of its maps
    assert values.returncode == 0, values.stderr
    assert "insertion/mean_map: 1 stored value(s) dropped (--recompute)" in values.stdout
    assert "insertion/mean_map: 1 computed, 0 already stored" in values.stdout


def test_recompute_of_an_unknown_id_is_a_message(edited_runs):
    run = edited_runs["unknown_id"]
    assert run.returncode == 2 and "--recompute names ['mean_mapp']: neither a method nor a metric" in run.stderr
    assert "Traceback" not in run.stderr


def test_code_change_notice_rules():
    code = {"version": 1, "file": "m.py", "sha256": "b" * 64}
    assert code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "b" * 64}, code, 5) is None
    assert code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "a" * 64}, code, 0) is None
    assert code_change_notice("maps/m", None, code, 5) is None  # a group of an older harness: nothing to compare
    assert code_change_notice("maps/m", {"sha256": None}, code, 5) is None  # code defined in no file
    line = code_change_notice("maps/m", {"version": 1, "file": "m.py", "sha256": "a" * 64}, code, 5)
    assert line.startswith("maps/m: 5 stored result(s) reused, computed when m.py had sha256 aaaaaaaaaaaa;")
    assert "(bbbbbbbbbbbb)" in line


def test_the_dry_run_counts_what_is_left_and_what_recompute_drops(edited_runs):
    dry, again = edited_runs["dry"], edited_runs["dry_recompute"]
    assert dry.returncode == 0 and again.returncode == 0, dry.stderr + again.stderr
    assert "| maps | mean_map | 0 |" in dry.stdout and "| metrics | insertion/mean_map | 0 |" in dry.stdout
    assert "| maps | mean_map | 1 |" in again.stdout and "| metrics | insertion/mean_map | 1 |" in again.stdout


def test_an_image_replaced_under_its_name_stops_the_command_and_loses_nothing(photo_folder, tmp_path):
    import h5py
    from PIL import Image

    folder, lst, names = photo_folder
    args = ["--model", "efficientnet_lite0", "--profile", "quick", "--data", folder, "--image-list", lst, "--limit",
            2, "--methods", "gradcam", "--out", tmp_path / "out", "--no-progress"]
    first = run_cli("maps", *args)
    assert first.returncode == 0, first.stderr
    original = (folder / names[1]).read_bytes()
    with Image.open(folder / names[2]) as other:  # a good image, another content, the same name
        other.convert("RGB").save(folder / names[1], quality=92)
    replaced = run_cli("metrics", *args, "--metrics", "insertion")
    assert replaced.returncode == 2
    assert f"1 image(s) differ from those the results in {tmp_path / 'out' / 'efficientnet_lite0'} were computed " \
           f"from (same name, other content: another --data, or files replaced): {names[1]}." in replaced.stderr
    assert "Traceback" not in replaced.stderr
    run_dir = tmp_path / "out" / "efficientnet_lite0"
    with h5py.File(run_dir / "maps.h5", "r") as f:
        assert f["maps/gradcam/status"][:2].tolist() == [1, 1]  # the maps are kept
    with h5py.File(run_dir / "metrics.h5", "r") as f:
        assert "insertion" not in f  # nothing scored on the other image
    (folder / names[1]).write_bytes(original)  # the image the folder was made with: the command goes on
    restored = run_cli("metrics", *args, "--metrics", "insertion")
    assert restored.returncode == 0, restored.stderr
    assert "insertion/gradcam: 2 computed, 0 already stored, 0 failed" in restored.stdout
