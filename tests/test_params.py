"""Method and metric parameters: overrides are checked against the type of the value they replace, before anything
runs or is stored; a group whose parameters failed on every image takes new ones."""

import math

import pytest

from benchmark.core.params import check_value, resolve_params
from conftest import REPO, run_cli
from methods import MethodError, make_method
from metrics.base import MetricError, make_metric

FAULTY = str(REPO / "tests/plugins/faulty_methods.py")
LITE = ["--model", "efficientnet_lite0", "--profile", "quick", "--no-progress"]


class Bad(Exception):
    pass


@pytest.mark.parametrize("default, value, want", [
    (8, 16, 16), (2.0, 3, 3.0), (2.0, 0.5, 0.5), (True, False, False), ("torchcam", "eq19", "eq19"),
    ([3, 64, 64], [3, 32, 32], [3, 32, 32]), ([3, 64, 64], (1, 2), [1, 2]), ([], ["a", 1], ["a", 1]),
    (None, {"any": "thing"}, {"any": "thing"}),
])
def test_accepted_values(default, value, want):
    got = check_value("m", "p", default, value, Bad)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("default, value, says", [
    (8, 8.0, "takes an integer (default 8), not 8.0 (float)"),
    (8, True, "takes an integer (default 8), not True (bool)"),
    (8, "abc", "takes an integer (default 8), not 'abc' (str)"),
    (2.0, "2", "takes a finite number (default 2.0), not '2' (str)"),
    (2.0, math.inf, "takes a finite number (default 2.0), not inf (float)"),
    (2.0, False, "takes a finite number"),
    (True, 1, "takes true or false, not 1 (int)"),
    ("preset", 3, "takes a string (default 'preset'), not 3 (int)"),
    ([3, 64, 64], 64, "takes a list (default [3, 64, 64]), not 64 (int)"),
])
def test_refused_values_name_the_parameter_and_what_it_takes(default, value, says):
    with pytest.raises(Bad) as err:
        check_value("m", "p", default, value, Bad)
    assert str(err.value).startswith("m: parameter 'p") and says in str(err.value)


def test_list_items_are_checked_one_by_one():
    with pytest.raises(Bad, match=r"parameter 'window\[1\]' takes an integer"):
        check_value("occlusion", "window", [3, 64, 64], [3, 6.5, 64], Bad)


def test_quick_values_then_overrides():
    paper, quick = {"n": 50, "x": 1.0}, {"n": 8}
    assert resolve_params("m", paper, quick, False, {}, Bad) == {"n": 50, "x": 1.0}
    assert resolve_params("m", paper, quick, True, {"x": 2}, Bad) == {"n": 8, "x": 2.0}
    with pytest.raises(Bad, match=r"m: unknown parameter\(s\) \['y'\]; known: \['n', 'x'\]"):
        resolve_params("m", paper, quick, True, {"y": 1}, Bad)
    assert paper == {"n": 50, "x": 1.0}  # the class's dict is never changed


def test_methods_and_metrics_check_their_parameters():
    assert make_method("rise", quick=True, n_masks=8).params["n_masks"] == 8
    assert make_method("sscam", std=2).params["std"] == 2.0  # 2 and 2.0 are the same parameters
    with pytest.raises(MethodError, match="rise: parameter 'n_masks' takes an integer"):
        make_method("rise", n_masks="abc")
    with pytest.raises(MetricError, match="insertion: parameter 'steps' takes an integer"):
        make_metric("insertion", steps=1.5)


def test_a_bad_set_value_is_refused_before_any_store_is_written(tmp_path):
    res = run_cli("maps", *LITE, "--methods", "rise", "--set", "rise.n_masks=abc", "--limit", "1", "--out", tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "rise: parameter 'n_masks' takes an integer (default 500), not 'abc' (str)" in res.stderr
    assert not (tmp_path / "efficientnet_lite0").exists()  # refused before the run folder was made


def test_parameters_that_failed_on_every_image_can_be_replaced(tmp_path):
    """A plugin method fails on each image while its parameter ``fail`` is true; the same folder then takes
    ``fail=false``: the group held no finished map, so it starts again and says so (its metric group too)."""
    plugin = ["--plugin", FAULTY]
    args = ["maps", *LITE, *plugin, "--methods", "fails_when_asked", "--limit", "2", "--out", tmp_path]
    scoring = ["metrics", *LITE, *plugin, "--metrics", "insertion", "--limit", "2", "--out", tmp_path]
    bad = run_cli(*args)
    assert bad.returncode == 1 and "fails_when_asked: 0 computed, 0 already stored, 2 failed" in bad.stdout
    assert "MethodError: asked to fail" in bad.stderr
    unscored = run_cli(*scoring)  # an insertion group for the failed maps: no value in it either
    assert "insertion/fails_when_asked: 0 computed, 0 already stored, 2 failed" in unscored.stdout
    good = run_cli(*args, "--set", "fails_when_asked.fail=false")
    assert good.returncode == 0, good.stderr
    assert "fails_when_asked: 2 computed, 0 already stored, 0 failed" in good.stdout
    assert ('maps/fails_when_asked held no finished row (params stored: {"fail": true}); started again with params '
            '{"fail": false}') in good.stdout
    scored = run_cli(*scoring)  # the insertion group was made for the old maps: it starts again too
    assert scored.returncode == 0, scored.stderr
    assert "insertion/fails_when_asked: 2 computed, 0 already stored, 0 failed" in scored.stdout
    assert "insertion/fails_when_asked held no finished row (map_params stored: " in scored.stdout
    again = run_cli(*args)  # now it holds maps: another value is refused
    assert again.returncode == 2 and "different params" in again.stderr


def test_values_out_of_range_are_refused_when_built():
    """Each class's check_params: one message naming the parameter and its range, before any image."""
    cases = [("rise", {"n_masks": 0}, "rise: parameter 'n_masks' must be >= 1, not 0"),
             ("rise", {"p1": 1.5}, "rise: parameter 'p1' must be in (0, 1], not 1.5"),
             ("zoomcam", {"layers": "deep"}, "zoomcam: parameter 'layers' must be 'preset' or 'polycam', not 'deep'"),
             ("gradcampp", {"alpha": "eq20"}, "gradcampp: parameter 'alpha' must be 'torchcam' or 'eq19'"),
             ("occlusion", {"window": [3, 0, 64]}, "occlusion: parameter 'window' must be 3 integers >= 1"),
             ("integratedgradient", {"method": "simpson"}, "parameter 'method' must be one of ['gausslegendre'"),
             ("sscam", {"num_samples": 0}, "sscam: parameter 'num_samples' must be >= 1, not 0"),
             ("pcampm", {"outlier_percent": 50}, "pcampm: parameter 'outlier_percent' must be in [0, 50)"),
             ("calm_em", {"norm": "softmax"}, "calm_em: parameter 'norm' must be one of")]
    for mid, kw, says in cases:
        with pytest.raises(MethodError) as err:
            make_method(mid, **kw)
        assert says in str(err.value), (mid, str(err.value))
    for mid, kw, says in [("insertion", {"blur_kernel": 10}, "parameter 'blur_kernel' must be an odd integer >= 1"),
                          ("deletion", {"steps": 0}, "deletion: parameter 'steps' must be >= 1, not 0"),
                          ("sensitivity", {"perturb_radius": 0.0}, "parameter 'perturb_radius' must be > 0"),
                          ("remove_classify", {"k": [0.5, 1.0]}, "parameter 'k' must be a list of fractions")]:
        with pytest.raises(MetricError) as err:
            make_metric(mid, **kw)
        assert says in str(err.value), (mid, str(err.value))
    make_method("rise", n_masks=1, s=2, p1=1.0)  # the edges of the ranges are accepted
    make_metric("insertion", blur_kernel=1, steps=1)


def test_a_plugin_that_is_not_python_is_a_clear_error(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("not python\n")
    res = run_cli("methods", "--plugin", other)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"plugin {other} is not a Python file" in res.stderr
