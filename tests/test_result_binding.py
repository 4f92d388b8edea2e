"""Stored results are reused only with what made them.

- The code: a method's ``version`` is stored with its maps (another version is refused), and reusing results after
  the file that defines the method, or a project file it imports, has changed is said, by name; ``--recompute``
  drops a method's or a metric's stored results and computes them again in the same folder. The plugin and its
  helper are real files, edited between real runs of ``python -m benchmark`` in child processes.
- The images: a folder's results are bound to each image's content (CRC-32 of the file); an image replaced under
  the same name (or another ``--data``) stops the command with a message naming it.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmark.core.codefiles import code_files
from conftest import REPO, run_cli
from runners.report import StageReport, changed_code_files, code_change_notices

PLUGIN = '''
from mean_map_helper import channel_mean

from methods import Method, register_method


@register_method
class MeanMap(Method):
    id = "mean_map"
    family = "plugin"
    citation = "test plugin"
    version = {version}

    def explain(self, model, x, targets):
        return channel_mean(x){edit}
'''
HELPER = '''
def channel_mean(x):
    return x.mean(1){edit}
'''


def stage(command, plugin, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", command, "--model", "efficientnet_lite0", "--profile",
                           "quick", "--limit", "1", "--no-progress", "--plugin", str(plugin), "--methods", "mean_map",
                           "--out", str(out), *map(str, extra)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{plugin.parent}"))


@pytest.fixture(scope="module")
def edited_runs(tmp_path_factory):
    """The same folder after: a first run (maps, then insertion), a run with a comment added to the plugin, one
    with a comment added to its helper too, a run with version 2, the same with --recompute, insertion again,
    insertion with --recompute insertion."""
    tmp = tmp_path_factory.mktemp("code")
    plugin, out = tmp / "mean_map.py", tmp / "out"
    runs = {}
    steps = [("first", 1, ""), ("first_metrics", 1, ""), ("edited", 1, "  # an edit"),
             ("helper_edited", 1, "  # an edit"), ("version2", 2, "  # an edit"),
             ("recompute", 2, "  # an edit"), ("metrics_after", 2, "  # an edit"), ("recompute_metric", 2, ""),
             ("recompute_map_values", 2, ""), ("unknown_id", 2, ""), ("dry", 2, ""), ("dry_recompute", 2, ""),
             ("recompute_same_version", 2, ""), ("after_recompute", 2, "")]
    for name, version, edit in steps:
        plugin.write_text(PLUGIN.format(version=version, edit=edit))
        (tmp / "mean_map_helper.py").write_text(HELPER.format(edit="  # an edit" if name == "helper_edited" else ""))
        if name in ("recompute", "recompute_same_version"):
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
        runs[f"csv_{name}"] = sorted(p.name for p in (out / "efficientnet_lite0" / "csv").glob("ins_*.csv"))
    runs["folder"] = out / "efficientnet_lite0"
    return runs


def test_unchanged_code_reuses_silently(edited_runs):
    first = edited_runs["first"]
    assert first.returncode == 0, first.stderr
    assert "mean_map: 1 computed, 0 already stored" in first.stdout
    assert "computed before a change to" not in first.stdout


def test_an_edited_file_reuses_its_results_and_says_so(edited_runs):
    edited = edited_runs["edited"]
    assert edited.returncode == 0, edited.stderr
    assert "mean_map: 0 computed, 1 already stored" in edited.stdout
    assert ("maps/mean_map: 1 stored result(s) reused, computed before a change to mean_map.py; its version has not "
            "changed." in edited.stdout)


def test_an_edited_helper_the_method_imports_is_named_too(edited_runs):
    helper = edited_runs["helper_edited"]
    assert helper.returncode == 0, helper.stderr
    assert "mean_map: 0 computed, 1 already stored" in helper.stdout
    assert ("maps/mean_map: 1 stored result(s) reused, computed before a change to mean_map.py, mean_map_helper;"
            in helper.stdout), helper.stdout


def test_another_version_is_refused_with_a_message(edited_runs):
    v2 = edited_runs["version2"]
    assert v2.returncode == 2, v2.stdout + v2.stderr
    assert "maps/mean_map" in v2.stderr and "computed by version 1 of its code; this is version 2" in v2.stderr
    assert "Traceback" not in v2.stderr
    assert "add --recompute mean_map to drop its stored results" in v2.stderr


def test_recompute_drops_the_maps_and_their_values_then_computes_them(edited_runs):

    assert edited_runs["first_metrics"].returncode == 0 and "insertion/mean_map: 1 computed" in \
        edited_runs["first_metrics"].stdout
    again = edited_runs["recompute"]
    assert again.returncode == 0, again.stderr
    assert "maps/mean_map: 1 stored map(s) dropped (--recompute)" in again.stdout
    assert "insertion/mean_map: 1 stored value(s) dropped with their maps (--recompute)" in again.stdout
    assert "mean_map: 1 computed, 0 already stored" in again.stdout
    assert "held no finished row" in again.stdout  # the group took version 2
    csv = ["ins_auc_efficientnet_lite0_mean_map.csv", "ins_details_efficientnet_lite0_mean_map.csv"]
    assert edited_runs["csv_first_metrics"] == csv  # the values of the dropped maps leave the tables with them:
    assert edited_runs["csv_recompute"] == [] and edited_runs["csv_metrics_after"] == csv  # until scored again
    after = edited_runs["metrics_after"]
    assert after.returncode == 0 and "insertion/mean_map: 1 computed, 0 already stored" in after.stdout


def test_maps_computed_again_are_bound_to_the_code_that_computed_them(edited_runs):
    """--recompute after an edit that kept the version: the group takes the new code, so the next run reuses its
    maps without a word (before, the group kept the old code and every later run named a change)."""
    import h5py

    again, after = edited_runs["recompute_same_version"], edited_runs["after_recompute"]
    assert again.returncode == 0 and "maps/mean_map: 1 stored map(s) dropped (--recompute)" in again.stdout
    assert "mean_map: 1 computed, 0 already stored" in again.stdout and "held no finished row" not in again.stdout
    assert after.returncode == 0 and "mean_map: 0 computed, 1 already stored" in after.stdout, after.stderr
    assert "computed before a change" not in after.stdout, after.stdout
    with h5py.File(edited_runs["folder"] / "maps.h5", "r") as f:
        code = json.loads(f["maps/mean_map"].attrs["code"])
        assert f["maps/mean_map"].attrs["version"] == "2" and code["version"] == 2
    plugin = edited_runs["folder"].parent.parent / "mean_map.py"  # as the last step left it
    assert code["sha256"] == hashlib.sha256(plugin.read_bytes()).hexdigest()


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
    files = {"p": "b" * 64, "helper": "c" * 64, "benchmark.core.hooks": "d" * 64}
    code = {"version": 1, "module": "p", "file": "m.py", "sha256": "b" * 64, "files": files}
    same = dict(code, files=dict(files))
    assert changed_code_files(same, code) == ()
    assert changed_code_files(None, code) == ()  # a group of an older harness: nothing to compare
    assert changed_code_files({"sha256": None}, code) == ()  # code defined in no file
    assert changed_code_files(dict(code, files=dict(files, helper="0" * 64)), code) == ("helper",)
    assert changed_code_files(dict(code, files=dict(files, p="0" * 64)), code) == ("m.py",)  # by its file name
    fewer = {k: v for k, v in files.items() if k != "helper"}  # a file the new code imports, the old one did not
    assert changed_code_files(dict(code, files=fewer), code) == ("helper",)
    older = {"version": 1, "file": "m.py", "sha256": "a" * 64}  # stored by a harness that hashed one file
    assert changed_code_files(older, code) == ("m.py",)
    assert changed_code_files(dict(older, sha256="b" * 64), code) == ()

    report = StageReport()
    report.reused_after_change("maps/a", 0, ("h",))  # nothing reused: nothing to say
    report.reused_after_change("maps/b", 3, ())  # nothing changed
    assert report.all_notices() == []
    report.reused_after_change("maps/a", 5, ("hooks",))
    report.reused_after_change("maps/c", 2, ("hooks",))
    report.reused_after_change("insertion/a", 7, ("one", "two", "three", "four", "five"))
    lines = report.all_notices()
    assert lines == [
        "maps/a, maps/c: 7 stored result(s) reused, computed before a change to hooks; their versions have not "
        "changed. If the change alters the results, raise the class's `version` or add --recompute with its id (or "
        "use another --out).",
        "insertion/a: 7 stored result(s) reused, computed before a change to one, two, three, four and 1 more; its "
        "version has not changed. If the change alters the results, raise the class's `version` or add --recompute "
        "with its id (or use another --out)."]
    assert lines == code_change_notices(report.code_changes)
    report.reused_after_change("maps/a", 4, ("hooks",))  # a second shard of the same group adds up
    assert report.code_changes["maps/a"] == (9, ("hooks",))


def test_the_code_of_a_method_covers_the_project_files_it_imports(tmp_path, monkeypatch):
    from methods import get_method_class

    files = get_method_class("gradcam").code()["files"]
    assert {"methods.cam_family", "methods.base", "benchmark.core.hooks", "benchmark.core.params"} <= set(files)
    assert not any(m.split(".")[0] in ("torch", "torchcam", "numpy", "typing", "contextlib") for m in files), files
    assert "methods.polycam" not in files  # not imported by it

    cfpkg = tmp_path / "cfpkg"  # a package of its own, with a relative import and a submodule imported by name
    cfpkg.mkdir()
    (cfpkg / "__init__.py").write_text("")
    (cfpkg / "main.py").write_text("import json\nfrom . import sub\nfrom .util import f\n\ndef g():\n"
                                   "    from cfpkg.lazy import h  # imported inside a function: counted too\n")
    (cfpkg / "sub.py").write_text("X = 1\n")
    (cfpkg / "util.py").write_text("from cfpkg import sub\n\ndef f():\n    return sub.X\n")
    (cfpkg / "lazy.py").write_text("import importlib\n\ndef h():\n    importlib.import_module('cfpkg.dyn')\n"
                                    "    importlib.import_module(f'cfpkg.{h.__name__}')  # computed: not followed\n")
    (cfpkg / "dyn.py").write_text("Y = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = code_files("cfpkg.main", cfpkg / "main.py")
    assert sorted(found) == ["cfpkg.dyn", "cfpkg.lazy", "cfpkg.main", "cfpkg.sub", "cfpkg.util"]
    before = found["cfpkg.sub"]
    (cfpkg / "sub.py").write_text("X = 2  # another value\n")
    after = code_files("cfpkg.main", cfpkg / "main.py")
    assert after["cfpkg.sub"] != before and {k: v for k, v in after.items() if k != "cfpkg.sub"} == \
        {k: v for k, v in found.items() if k != "cfpkg.sub"}

    lazypkg = tmp_path / "lazypkg"  # names loaded on first use (module __getattr__): which module is not written
    (lazypkg / "inner").mkdir(parents=True)
    (lazypkg / "__init__.py").write_text("import importlib\n\ndef __getattr__(name):\n"
                                         "    return getattr(importlib.import_module(f'lazypkg.{name}_impl'), name)\n")
    (lazypkg / "resize_impl.py").write_text("def resize(x):\n    return x\n")
    (lazypkg / "inner" / "__init__.py").write_text("")
    (cfpkg / "user.py").write_text("from lazypkg import resize\n")
    assert sorted(code_files("cfpkg.user", cfpkg / "user.py")) == ["cfpkg.user", "lazypkg", "lazypkg.inner",
                                                                   "lazypkg.resize_impl"]
    (cfpkg / "user2.py").write_text("from benchmark.data import preprocess\n")  # the project's own lazy package
    assert {"benchmark.data", "benchmark.data.preprocessing", "benchmark.data.sources"} <= \
        set(code_files("cfpkg.user2", cfpkg / "user2.py"))


def test_input_change_notice_rules():
    from runners.clean import input_change_notice

    now = {"files": {"benchmark.models.classifiers": "a" * 64, "benchmark.data.preprocessing": "b" * 64},
           "packages": {"torch": "2.13.0", "captum": "0.8.0"}}
    assert input_change_notice(None, now, 5) is None  # a folder of an older harness: nothing to compare
    assert input_change_notice(now, now, 5) is None
    old = {"files": dict(now["files"], **{"benchmark.data.preprocessing": "c" * 64}),
           "packages": {"torch": "2.11.0", "captum": "0.8.0"}}
    assert input_change_notice(old, now, 0) is None  # nothing stored yet
    assert input_change_notice(old, now, 5) == (
        "the results of this folder (5 image(s)) were first computed before a change to the model, image loading or "
        "packages that compute them (benchmark.data.preprocessing; torch 2.11.0 -> 2.13.0); they are reused. If the "
        "change alters them, use another --out folder.")


def test_results_of_other_packages_or_model_code_are_named_once_per_command(tmp_path):
    import h5py

    from runners.clean import input_code
    from runners.context import RunConfig, RunContext
    from runners.maps import run_maps
    from runners.scoring import run_metrics

    def ctx():
        return RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, methods=["gradcam"],
                                    metrics=["insertion"], out=str(tmp_path), profile="quick", progress=False))

    first = run_maps(ctx())
    assert first.notices == []
    stored = input_code()
    assert {"benchmark.models.classifiers", "benchmark.data.preprocessing"} <= set(stored["files"])
    older = dict(stored, packages=dict(stored["packages"], torch="1.0.0"))
    with h5py.File(tmp_path / "efficientnet_lite0" / "maps.h5", "r+") as f:  # as if computed with another torch
        f["clean"].attrs["code"] = json.dumps(older)
    again = ctx()
    maps, metrics = run_maps(again), run_metrics(again)
    line = f"torch 1.0.0 -> {stored['packages']['torch']}"
    assert [n for n in maps.all_notices() if line in n] and not [n for n in metrics.all_notices() if line in n]
    assert maps.computed == {"gradcam": 0} and metrics.computed["insertion/gradcam"] == 1  # reused, then scored


def test_a_sharded_run_names_clean_shards_of_other_packages_once(tmp_path):
    """Clean shards (and the merged maps.h5) made with another torch: the sharded `run` that reuses them says so in
    one line for both shards; a sharded `metrics` (no clean task) says it from maps.h5."""
    import h5py

    from benchmark.core.atomic import sha256_file
    from runners.clean import input_code

    def sharded(command, *extra):
        return subprocess.run([sys.executable, "-m", "benchmark", command, "--model", "efficientnet_lite0",
                               "--profile", "quick", "--limit", "2", "--no-progress", "--methods", "gradcam",
                               "--metrics", "insertion", "--out", str(tmp_path), "--executor", "local",
                               "--shards", "2", *extra], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))

    first = sharded("run")
    assert first.returncode == 0 and "other packages" not in first.stdout, first.stderr
    run_dir = tmp_path / "efficientnet_lite0"
    stored = input_code()
    older = json.dumps(dict(stored, packages=dict(stored["packages"], torch="1.0.0")))
    changed = sorted((run_dir / "shards" / "clean").glob("*.h5")) + [run_dir / "maps.h5"]
    assert len(changed) == 3
    for path in changed:  # as if computed with another torch (the shards' manifests name their new bytes)
        with h5py.File(path, "r+") as f:
            f["clean"].attrs["code"] = older
        manifest = path.with_suffix(".json")
        if manifest.exists():
            facts = json.loads(manifest.read_text())
            manifest.write_text(json.dumps(dict(facts, sha256=sha256_file(path), size=path.stat().st_size)))
    line = f"torch 1.0.0 -> {stored['packages']['torch']}"
    again = sharded("run")
    assert again.returncode == 0 and "corrupt" not in again.stdout + again.stderr, again.stderr
    said = [row for row in again.stdout.splitlines() if line in row]
    assert len(said) == 1 and "(2 image(s))" in said[0], again.stdout
    metrics = sharded("metrics")
    assert metrics.returncode == 0, metrics.stderr
    said = [row for row in metrics.stdout.splitlines() if line in row]
    assert len(said) == 1 and "(2 image(s))" in said[0], metrics.stdout


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    """The same folder, with the local executor in 2 shards: a first run (maps, insertion); one after an edit of
    the plugin; one after version 2; `run --recompute` in one process, then sharded again, and sharded `metrics`;
    the plugin made to give other maps (same version) and `maps --recompute`, then sharded `metrics` (its shards
    are finished), then `metrics` in one process; version 3 (maps x 1.5) with `--recompute` on one shard of a
    split (refused), then sharded, then sharded again."""
    import h5py

    tmp = tmp_path_factory.mktemp("sharded")
    plugin, out = tmp / "mean_map.py", tmp / "out"
    (tmp / "mean_map_helper.py").write_text(HELPER.format(edit=""))
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp}")
    shards = ["--executor", "local", "--shards", "2"]
    edit, again = "  # an edit", ["--recompute", "mean_map"]
    steps = [("first", 1, "", "run", shards), ("edited", 1, edit, "run", shards), ("version2", 2, edit, "run", shards),
             ("recompute", 2, edit, "run", again), ("sharded_again", 2, edit, "run", shards),
             ("metrics_shards", 2, edit, "metrics", shards), ("other_maps", 2, " * 2", "maps", again),
             ("sharded_metrics", 2, " * 2", "metrics", shards), ("metrics", 2, " * 2", "metrics", []),
             ("one_shard_recompute", 3, " * 3", "run", ["--shard", "0/2", *again]),
             ("sharded_recompute", 3, " * 3", "run", [*shards, *again]), ("after", 3, " * 3", "run", shards)]
    runs, maps = {}, {}
    for name, version, edit, command, extra in steps:
        plugin.write_text(PLUGIN.format(version=version, edit=edit))
        metrics = ["--metrics", "insertion"] if command != "maps" else []
        runs[name] = subprocess.run(
            [sys.executable, "-m", "benchmark", command, "--model", "efficientnet_lite0", "--profile", "quick",
             "--limit", "2", "--no-progress", "--plugin", str(plugin), "--methods", "mean_map", "--out", str(out),
             *metrics, *extra], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        with h5py.File(out / "efficientnet_lite0" / "maps.h5", "r") as f:  # the merged maps after each step
            maps[name] = (f["maps/mean_map/map"][()], f["maps/mean_map/status"][()], dict(f["maps/mean_map"].attrs))
    runs["maps"], runs["folder"] = maps, out / "efficientnet_lite0"
    return runs


def test_sharded_runs_name_an_edit_and_refuse_another_version_before_running(sharded_runs):
    first, edited, v2 = sharded_runs["first"], sharded_runs["edited"], sharded_runs["version2"]
    assert first.returncode == 0 and "mean_map: 2 computed" in first.stdout, first.stderr
    assert edited.returncode == 0 and "mean_map: 0 computed, 2 already stored" in edited.stdout, edited.stderr
    assert "maps/mean_map: 2 stored result(s) reused, computed before a change to mean_map.py;" in edited.stdout
    assert v2.returncode == 2 and "Traceback" not in v2.stderr, v2.stderr
    assert "computed by version 1 of its code; this is version 2" in v2.stderr
    assert "add --recompute mean_map to drop its stored results" in v2.stderr
    assert "task(s) in 2 shard(s)" not in v2.stdout + v2.stderr  # refused before any shard ran


def test_a_new_version_makes_its_shards_stale(sharded_runs):
    assert sharded_runs["recompute"].returncode == 0, sharded_runs["recompute"].stderr
    again = sharded_runs["sharded_again"]
    assert again.returncode == 0, again.stderr
    log = again.stdout + again.stderr
    assert "stale shard: mean_map-0of2.h5: made for another configuration" in log
    assert "stale shard: insertion__mean_map-0of2.h5" in log
    assert "maps mean_map shard 0/2: 1 computed" in log


def test_a_shard_value_of_a_map_computed_again_is_not_merged(sharded_runs):
    assert sharded_runs["metrics_shards"].returncode == 0, sharded_runs["metrics_shards"].stderr
    assert sharded_runs["other_maps"].returncode == 0, sharded_runs["other_maps"].stderr
    merged = sharded_runs["sharded_metrics"]
    assert merged.returncode == 0, merged.stderr
    log = merged.stdout + merged.stderr
    assert "2 task(s) in 2 shard(s): 2 finished before, 0 to run" in log
    assert ("insertion/mean_map: 1 value(s) of insertion__mean_map-0of2.h5 not merged: they scored a map that has "
            "been computed again since") in log
    after = sharded_runs["metrics"]
    assert after.returncode == 0 and "insertion/mean_map: 2 computed, 0 already stored" in after.stdout, after.stderr


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


def test_recompute_in_a_sharded_run_drops_and_computes_again(sharded_runs):
    one = sharded_runs["one_shard_recompute"]
    assert one.returncode == 2 and "Traceback" not in one.stderr, one.stderr
    assert "--recompute drops the folder's stored results, so it runs in a command that merges" in one.stderr
    run = sharded_runs["sharded_recompute"]
    assert run.returncode == 0, run.stderr
    log = run.stdout + run.stderr
    assert "maps/mean_map: 2 stored map(s) dropped (--recompute)" in log
    assert "insertion/mean_map: 2 stored value(s) dropped with their maps (--recompute)" in log
    for shard in ("mean_map-0of2.h5", "mean_map-1of2.h5", "insertion__mean_map-0of2.h5"):
        assert f"--recompute: {shard} moved aside to {shard}.recompute-" in log
    assert "mean_map: 2 computed, 0 already stored" in run.stdout
    assert "insertion/mean_map: 2 computed, 0 already stored" in run.stdout
    (old, old_status, old_attrs), (new, status, attrs) = sharded_runs["maps"]["metrics"], \
        sharded_runs["maps"]["sharded_recompute"]
    assert list(old_status) == list(status) == [1, 1, 0, 0, 0]  # --limit 2 of the 5 demo photos: done, to do
    assert old_attrs["version"] == "2" and attrs["version"] == "3"  # the merged group took the new code
    assert np.allclose(new[:2], 1.5 * old[:2], rtol=1e-6, atol=0)  # x 3 where they were x 2: both computed again
    after = sharded_runs["after"]
    assert after.returncode == 0 and "mean_map: 0 computed, 2 already stored" in after.stdout, after.stderr
    assert "computed before a change" not in after.stdout and "moved aside" not in after.stdout + after.stderr
    status = subprocess.run([sys.executable, "-m", "benchmark", "status", str(sharded_runs["folder"])], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "moved aside: mean_map-0of2.h5.recompute-" in status.stdout, status.stdout + status.stderr


VARIANT_PLUGIN = '''
from methods import Method, register_method


@register_method
class BothMaps(Method):
    id = "both_maps"
    family = "plugin"
    citation = "test plugin"
    variants = ("half_map",)

    def explain(self, model, x, targets):
        m = x.mean(1)
        return {{"both_maps": m, "half_map": m * {half}}}


@register_method
class HalfMap(Method):
    id = "half_map"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        return x.mean(1) * {half}
'''


def test_recompute_of_a_variant_in_a_sharded_run_computes_it_again(tmp_path):
    """`--recompute half_map` in a sharded run, where half_map is a variant of both_maps (as pcamp of pcampm) and
    has no task of its own: its maps are dropped and its producer's shards run again; both_maps keeps its maps."""
    import h5py

    plugin, out = tmp_path / "variant_maps.py", tmp_path / "out"

    def sharded(half, *extra):
        plugin.write_text(VARIANT_PLUGIN.format(half=half))
        return subprocess.run([sys.executable, "-m", "benchmark", "maps", "--model", "efficientnet_lite0",
                               "--profile", "quick", "--limit", "2", "--no-progress", "--plugin", str(plugin),
                               "--methods", "both_maps,half_map", "--out", str(out), "--executor", "local",
                               "--shards", "2", *extra], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}"))

    def stored():
        with h5py.File(out / "efficientnet_lite0" / "maps.h5", "r") as f:
            return {m: f[f"maps/{m}/map"][:2] for m in ("both_maps", "half_map")}

    first = sharded("0.5")
    assert first.returncode == 0, first.stderr
    before = stored()
    assert np.allclose(before["half_map"], 0.5 * before["both_maps"], rtol=1e-6, atol=0)
    again = sharded("0.25", "--recompute", "half_map")
    assert again.returncode == 0, again.stderr
    log = again.stdout + again.stderr
    assert "maps/half_map: 2 stored map(s) dropped (--recompute)" in log and "maps/both_maps" not in log
    assert "--recompute: both_maps-0of2.h5 moved aside" in log
    after = stored()
    assert np.array_equal(after["both_maps"], before["both_maps"])  # not asked: kept
    assert np.allclose(after["half_map"], 0.5 * before["half_map"], rtol=1e-6, atol=0)  # x 0.25: computed again
