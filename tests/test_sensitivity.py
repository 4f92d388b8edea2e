"""Max-sensitivity: equal to a direct captum call, the formula by hand, the seed rule, batch independence, the
pipeline's sens_<tag>_<method>.csv for a built-in method and a plugin."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from methods import make_method
from metrics import get_metric_class
from metrics.base import MetricError
from metrics.sensitivity import SeededPerturbation, captum_explanation_func, max_sensitivity
from runners.maps import run_maps
from runners.scoring import run_metrics

REPO = Path(__file__).resolve().parent.parent


def gradcam_explainer(model):
    method = make_method("gradcam", quick=True)
    return lambda x, t: method(model, x, t)


@pytest.fixture(scope="module")
def two_photos(lite0):
    from benchmark.data import DemoSource, preprocess

    src = DemoSource()
    x = torch.stack([preprocess(src.open(n)) for n in ("chelsea.png", "coffee.png")])
    x = lite0.normalize(x)
    with torch.no_grad():
        t = lite0.net(x).argmax(1)
    return x, t


def test_metric_registered_with_reference_file_names():
    cls = get_metric_class("sensitivity")
    assert (cls.csv_prefix, cls.has_curve, cls.higher_is_better, cls.needs_method) == ("sens", False, False, True)
    metric = cls()
    assert metric.params == {"n_perturb_samples": 10, "perturb_radius": 0.02}  # paper Appendix F: captum's defaults
    assert metric.protocol["norm_ord"] == "fro" and metric.category == "robustness"
    assert cls(quick=True).params["n_perturb_samples"] == 3
    from benchmark.core.cost import Cost

    assert metric.cost(None, Cost(forward=2.0, backward=1.0)) == Cost(forward=22.0, backward=11.0)


def test_equals_direct_captum_call(lite0, two_photos):
    from captum.metrics import sensitivity_max

    x, t = two_photos
    explainer = gradcam_explainer(lite0)
    metric = get_metric_class("sensitivity")(quick=True, batch_size=32, seed=5)
    ours = metric.compute(lite0, x, None, t, explainer=explainer)["value"]
    direct = sensitivity_max(captum_explanation_func(explainer), x, perturb_func=SeededPerturbation(x, 5),
                             perturb_radius=0.02, n_perturb_samples=3, norm_ord="fro", target=t)
    assert ours.shape == (2,)
    torch.testing.assert_close(ours.float(), direct.float(), rtol=1e-5, atol=1e-7)
    assert (ours > 0).all() and (ours < 1).all()  # Grad-CAM is stable (paper Table 5: ~0.02-0.06)


def test_batch_size_and_composition_do_not_change_values(lite0, two_photos):
    x, t = two_photos
    explainer = gradcam_explainer(lite0)
    together = max_sensitivity(explainer, x, t, seed=1, n_perturb=3, batch_size=64)  # both images in one call
    one_by_one = max_sensitivity(explainer, x, t, seed=1, n_perturb=3, batch_size=1)  # one image per call
    alone = max_sensitivity(explainer, x[1:], t[1:], seed=1, n_perturb=3, batch_size=64)
    torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-7)
    other_seed = max_sensitivity(explainer, x[1:], t[1:], seed=2, n_perturb=3, batch_size=64)
    assert other_seed.item() != pytest.approx(alone.item(), rel=1e-3)


def hand_noise(image, seed, k, radius):
    """The documented rule, written out with hashlib and a CPU generator."""
    key = hashlib.sha256(np.ascontiguousarray(image.numpy().astype(np.float32)).tobytes()).hexdigest()
    s = int.from_bytes(hashlib.sha256(f"{seed}:{key}:{k}".encode()).digest()[:8], "big") & (2 ** 63 - 1)
    u = torch.rand(tuple(image.shape), generator=torch.Generator().manual_seed(s))
    return (2 * u - 1) * radius


def test_hand_computed_formula_and_seed_rule():
    # E(x) = channel 0 of x: E(x + d) - E(x) = d[0], so SENS = max_k ||d_k[0]||_F / ||x[0]||_F.
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5) / 10 - 3
    explainer = lambda inp, target: inp[:, 0]  # noqa: E731
    got = max_sensitivity(explainer, x, torch.tensor([0, 1]), seed=7, n_perturb=4, radius=0.3, batch_size=3)
    for b in range(2):
        d = [hand_noise(x[b], 7, k, 0.3) for k in range(4)]
        assert all(float(dk.abs().max()) <= 0.3 for dk in d)
        expected = max(float(dk[0].norm()) for dk in d) / float(x[b, 0].norm())
        assert got[b].item() == pytest.approx(expected, rel=1e-5)
    # An explanation that ignores its input has sensitivity 0; a zero explanation: captum divides by 1.
    assert max_sensitivity(lambda inp, target: torch.ones(inp.shape[0], 4, 5), x, torch.tensor([0, 1]),
                           seed=0, n_perturb=2).tolist() == [0.0, 0.0]
    assert max_sensitivity(lambda inp, target: torch.zeros(inp.shape[0], 4, 5), x, torch.tensor([0, 1]),
                           seed=0, n_perturb=2).tolist() == [0.0, 0.0]


def test_target_stays_the_clean_top1():
    x = torch.zeros(3, 3, 2, 2)
    seen = []

    def explainer(inp, target):
        seen.append(target.tolist())
        return inp[:, 0]

    max_sensitivity(explainer, x + 1, torch.tensor([4, 5, 6]), seed=0, n_perturb=2, batch_size=100)
    assert seen == [[4, 5, 6], [4, 4, 5, 5, 6, 6]]  # E(x), then each image's 2 perturbations together


def test_needs_an_explainer():
    metric = get_metric_class("sensitivity")(quick=True)
    with pytest.raises(MetricError, match="explainer"):
        metric.compute(None, torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), torch.tensor([0]))


def test_pipeline_writes_sens_csv_for_builtin_and_plugin(tmp_path, lite0):
    from runners.context import RunConfig, RunContext

    cfg = RunConfig(model="efficientnet_lite0", data="demo", limit=1, out=str(tmp_path), profile="quick",
                    methods=["gradcam", "vanilla_gradient"], metrics=["sensitivity"], progress=False,
                    plugins=[str(REPO / "examples" / "vanilla_gradient.py")])
    ctx = RunContext(cfg)
    run_maps(ctx)
    report = run_metrics(ctx)
    assert report.ok and report.computed == {"sensitivity/gradcam": 1, "sensitivity/vanilla_gradient": 1}
    x = ctx.load_images([0])
    t = torch.as_tensor([lite0.net(x).argmax(1).item()])
    values = {}
    for mid in ("gradcam", "vanilla_gradient"):
        path = tmp_path / "efficientnet_lite0" / "csv" / f"sens_efficientnet_lite0_{mid}.csv"
        assert path.read_text().splitlines()[0] == ",0"
        values[mid] = pd.read_csv(path, index_col=0).loc["chelsea.png"].iloc[0]
    method = make_method("vanilla_gradient", quick=True)  # the plugin, recomputed here with the same seed
    direct = max_sensitivity(lambda a, b: method(ctx.model, a, b), x, t, seed=0, n_perturb=3)
    assert values["vanilla_gradient"] == pytest.approx(direct.item(), rel=1e-4)
    assert values["vanilla_gradient"] > values["gradcam"] > 0  # gradients are far less stable (paper Table 5)
    # Resumed: nothing left to compute.
    again = run_metrics(RunContext(cfg))
    assert again.computed == {"sensitivity/gradcam": 0, "sensitivity/vanilla_gradient": 0}
