"""The engine's wiring: one factory builds methods and metrics with the run's profile, --set overrides, seed and
inputs per pass; plugins register methods or metrics; the per-chunk calls fail one image alone."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from methods.base import MethodError
from runners.context import RunConfig, RunContext
from runners.factory import build_method, build_metric
from runners.overrides import parse_overrides

BASE = dict(model="efficientnet_lite0", data="demo", limit=1, profile="quick", progress=False, device="cpu",
            batch_size=4)


def test_factory_applies_profile_seed_batch_size_and_overrides(tmp_path):
    ctx = RunContext(RunConfig(**BASE, out=str(tmp_path), seed=7,
                               overrides=parse_overrides(["rise.n_masks=40", "insertion.steps=32"])))
    rise = build_method(ctx, "rise")
    assert rise.params == {"n_masks": 40, "s": 8, "p1": 0.1} and rise.seed == 7 and rise.batch_size == 4
    assert build_method(ctx, "occlusion").params["stride"] == [3, 32, 32]  # quick parameters
    ins = build_metric(ctx, "insertion")
    assert ins.params == {"steps": 32, "blur_kernel": 11, "blur_sigma": 5.0} and ins.batch_size == 4
    assert build_metric(ctx, "deletion").params["steps"] == 16  # the override names insertion only


def test_overrides_of_unknown_ids_or_parameters_are_refused(tmp_path):
    with pytest.raises(MethodError, match="neither a method nor a metric"):
        RunContext(RunConfig(**BASE, out=str(tmp_path), overrides={"nosuch": {"x": 1}}))
    ctx = RunContext(RunConfig(**BASE, out=str(tmp_path), overrides={"rise": {"masks": 3}}))
    with pytest.raises(MethodError, match="unknown parameter"):
        build_method(ctx, "rise")


def test_a_metric_plugin_runs_through_the_cli(tmp_path):
    from conftest import run_cli

    plugin = REPO / "tests/plugins/center_metric.py"
    res = run_cli("run", "--model", "efficientnet_lite0", "--profile", "quick", "--limit", "1", "--methods",
                  "gradcam", "--metrics", "centre_mass,insertion", "--plugin", plugin, "--out", tmp_path,
                  "--set", "centre_mass.margin=0.125", "--no-progress")
    assert res.returncode == 0, res.stderr
    csv = tmp_path / "efficientnet_lite0/csv/centre_efficientnet_lite0_gradcam.csv"
    value = pd.read_csv(csv, index_col=0)["0"]
    assert list(value.index) == ["chelsea.png"] and 0 < value.iloc[0] < 1
    import json

    prov = json.loads((tmp_path / "efficientnet_lite0/provenance.json").read_text())
    assert prov["metrics"]["centre_mass"] == {"margin": 0.125} and prov["metrics"]["insertion"]["steps"] == 16


def test_explain_chunk_fails_one_image_alone(lite0, cat):
    from methods.base import Method
    from runners.maps import explain_chunk

    class FailsOnSecond(Method):
        id = "fails_on_second"

        def explain(self, model, x, targets):
            if (targets == 2).any():
                raise RuntimeError("no map for class 2")
            return x.mean(dim=1)

    x = torch.cat([cat, cat, cat])
    parts = list(explain_chunk(FailsOnSecond(), lite0, x, torch.tensor([1, 2, 3]), ["a", "b", "c"], 224,
                               torch.no_grad))
    done = [r for p in parts for r in p.rows]
    failed = {r: why for p in parts for e in p.errors.values() for r, why in e.items()}
    assert done == ["a", "c"] and failed == {"b": "RuntimeError: no map for class 2"}
    assert all(np.isfinite(p.maps["fails_on_second"].numpy()).all() for p in parts if p.maps)


def test_methods_and_metrics_are_validated_alike():
    from methods.base import Method, register_method
    from metrics.base import Metric, MetricError, register_metric

    class BadId(Method):
        id = "Bad-Id"

    with pytest.raises(MethodError, match="lower-case ASCII"):
        register_method(BadId)

    class BadMetricId(Metric):
        id = "Bad-Id"
        category, higher_is_better, description, csv_prefix = "faithfulness", True, "x", "x"

    with pytest.raises(MetricError, match="lower-case ASCII"):
        register_metric(BadMetricId)

    class NoCategory(Metric):
        id = "no_category"
        higher_is_better, description, csv_prefix = True, "x", "x"

    with pytest.raises(MetricError, match="category"):
        register_metric(NoCategory)

    class TakenId(Metric):
        id = "insertion"
        category, higher_is_better, description, csv_prefix = "faithfulness", True, "x", "x"

    with pytest.raises(MetricError, match="already registered"):
        register_metric(TakenId)
