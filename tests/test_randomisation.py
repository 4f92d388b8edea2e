"""Cascading randomisation: layer order, seeded resets, the similarity measures on hand-made maps, and the sanity
stage on EfficientNet-Lite0, which tells an edge detector (model-independent) from Grad-CAM."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metrics import randomisation as rnd


# ------------------------------------------------------------------------------------------- similarities
def test_identical_maps_give_one():
    m = np.random.default_rng(0).random((224, 224))
    sims = rnd.similarities(m, m.copy())
    assert sims["spearman"] == pytest.approx(1.0)
    assert sims["spearman_abs"] == pytest.approx(1.0)
    assert sims["ssim"] == pytest.approx(1.0)
    assert sims["hog"] == pytest.approx(1.0)


def test_reversed_ranking_and_absolute_values():
    m = np.arange(64 * 64, dtype=float).reshape(64, 64)
    assert rnd.spearman(m, -m) == pytest.approx(-1.0)
    assert rnd.spearman(m, m.max() - m) == pytest.approx(-1.0)
    assert rnd.spearman(m, np.exp(m / 1000)) == pytest.approx(1.0)  # a monotone transform keeps the ranking
    signed = np.linspace(-1, 1, 32 * 32).reshape(32, 32) + 0.0005  # no zero, no tie in |.|
    assert rnd.spearman_abs(signed, -signed) == pytest.approx(1.0)
    assert rnd.spearman(signed, -signed) == pytest.approx(-1.0)


def test_spearman_by_hand_and_constant_maps():
    # ranks of a: 1,2,3,4; of b: 2,1,4,3 -> d = (-1, 1, -1, 1), rho = 1 - 6 * 4 / (4 * 15) = 0.6
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[20.0, 10.0], [40.0, 30.0]])
    assert rnd.spearman(a, b) == pytest.approx(0.6)
    assert math.isnan(rnd.spearman(a, np.zeros((2, 2))))
    # SSIM is defined for a constant map and is then low; min-max normalisation: scale and offset do not matter.
    m = np.random.default_rng(1).random((64, 64))
    assert rnd.ssim(m, np.zeros((64, 64))) < 0.1
    assert rnd.ssim(m, 3 * m + 7) == pytest.approx(1.0)
    assert rnd.hog_similarity(m, 3 * m + 7) == pytest.approx(1.0)
    assert rnd.similarities(m, np.full((64, 64), np.nan)) == {k: pytest.approx(np.nan, nan_ok=True)
                                                              for k in rnd.SIMILARITIES}


def test_unrelated_maps_are_dissimilar():
    rng = np.random.default_rng(2)
    a, b = rng.random((224, 224)), rng.random((224, 224))
    sims = rnd.similarities(a, b)
    assert abs(sims["spearman"]) < 0.05 and abs(sims["hog"]) < 0.2 and sims["ssim"] < 0.1


# ------------------------------------------------------------------------------------------- layers
class Shuffled(nn.Module):
    """Registration order (fc, conv2, conv1) differs from the order of use (conv1, conv2, fc)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        x = self.conv2(F.relu(self.bn(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_order_is_reverse_order_of_use():
    assert rnd.randomisation_order(Shuffled().eval(), image_size=8) == ["fc", "conv2", "conv1"]


def test_cascade_is_seeded_cumulative_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = Shuffled().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    order = rnd.randomisation_order(net, image_size=8)
    rng_state = torch.get_rng_state()
    steps = [(s, name, {k: v.clone() for k, v in rand.state_dict().items()}) for s, name, rand in
             rnd.cascade(net, order, seed=3)]
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [(s, n) for s, n, _ in steps] == [(1, "fc"), (2, "conv2"), (3, "conv1")]
    for s, name, state in steps:
        for k in state:
            layer = k.split(".")[0]
            randomised = layer in order[:s]
            assert torch.equal(state[k], before[k]) != randomised, (s, k)
    # Each step's draw depends on the seed and the step only: rebuilt directly, and equal to a manual reset.
    again = rnd.randomised_model(net, order, 2, seed=3).state_dict()
    assert all(torch.equal(again[k], steps[1][2][k]) for k in again)
    manual = Shuffled()
    torch.manual_seed(3 + 1)
    manual.fc.reset_parameters()
    assert torch.equal(manual.fc.weight, steps[0][2]["fc.weight"])
    other = rnd.randomised_model(net, order, 1, seed=4).state_dict()
    assert not torch.equal(other["fc.weight"], steps[0][2]["fc.weight"])


# ------------------------------------------------------------------------------------------- the stage
EDGE_ID = "test_sobel_edges"


@pytest.fixture(scope="module")
def sanity_run(tmp_path_factory):
    """One sanity run on the cat photo with EfficientNet-Lite0 (pretrained), Grad-CAM and an edge detector."""
    from methods.base import METHODS, Cost, Method, register_method
    from runners.context import RunConfig, RunContext
    from runners.sanity import run_sanity

    @register_method
    class SobelEdges(Method):
        """Sobel gradient magnitude of the image's channel mean: ignores the model and the class."""

        id = EDGE_ID
        family = "plugin"

        def explain(self, model, x, targets):
            g = x.mean(dim=1, keepdim=True)
            kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device).view(1, 1, 3, 3)
            gx, gy = F.conv2d(g, kx, padding=1), F.conv2d(g, kx.transpose(2, 3), padding=1)
            return (gx ** 2 + gy ** 2).sqrt()[:, 0]

        def cost(self, model):
            return Cost()

    out = tmp_path_factory.mktemp("sanity")
    try:
        ctx = RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, out=str(out),
                                   profile="quick", progress=False))
        report = run_sanity(ctx, methods=["gradcam", EDGE_ID])
        yield ctx, report, pd.read_csv(report.csv)
    finally:
        METHODS.pop(EDGE_ID, None)


def test_edge_detector_passes_through_and_gradcam_drops(sanity_run):
    ctx, report, df = sanity_run
    assert report.ok
    n_layers = len(report.layers)
    assert n_layers == 50 and report.layers[0] == "fc" and report.layers[-1] == "stem.0"
    edges = df[df["method"] == EDGE_ID]
    assert len(edges) == 2 * n_layers
    assert (edges["spearman"] > 0.9).all() and (edges["ssim"] > 0.9).all()  # the check cannot see it: it fails
    grad = df[df["method"] == "gradcam"].set_index(["convention", "step"])
    last_half = grad[grad.index.get_level_values("step") > n_layers // 2]
    # Explaining the randomised model's own top-1: the map decorrelates from the trained one.
    rt1 = last_half.loc["randomised_top1"]
    assert rt1["spearman"].abs().max() < 0.5 and rt1["ssim"].max() < 0.8 and rt1["hog"].max() < 0.5
    # Explaining the original class: the map goes flat (no rank: NaN) or decorrelates; SSIM falls.
    ot1 = last_half.loc["original_top1"]
    assert (ot1["spearman"].isna() | (ot1["spearman"].abs() < 0.5)).all() and ot1["ssim"].max() < 0.5
    assert grad["ssim"].mean() < 0.6 < edges["ssim"].min()


def test_csv_columns_conventions_targets_and_outputs(sanity_run):
    ctx, report, df = sanity_run
    from benchmark.outputs.randomisation_grid import sanity_grids
    from runners.sanity import COLUMNS

    assert tuple(df.columns) == COLUMNS
    assert set(df["convention"]) == {"original_top1", "randomised_top1"}
    assert set(df["image"]) == {"chelsea.png"} and sorted(df["step"].unique()) == list(range(1, 51))
    assert list(df[(df["method"] == "gradcam") & (df["convention"] == "original_top1")]["layer"]) == report.layers
    targets = pd.read_csv(report.targets_csv)
    clean = int(ctx.model.net(ctx.load_images([0])).argmax(1))
    g = targets[targets["method"] == "gradcam"].set_index(["convention", "step"])["target"]
    assert (g.loc["original_top1"] == clean).all()
    assert g.loc[("randomised_top1", 0)] == clean
    assert (g.loc["randomised_top1"] != clean).any()  # the randomised model's top-1 moves: the conventions differ
    # The class recorded at step 1 is the top-1 of the network with its fc re-initialised with seed 0 + 1.
    net = rnd.randomised_model(ctx.model.net, report.layers, 1, seed=0)
    assert g.loc[("randomised_top1", 1)] == int(net(ctx.load_images([0])).argmax(1))
    assert report.images == report.touched == ["chelsea.png"]
    figures = sanity_grids(ctx.run_dir, ctx.tag, ctx.source, 224, False, report.images, set(report.touched))
    assert [p.name for p in figures] == ["randomisation_efficientnet_lite0_chelsea.png"]
    assert figures[0].stat().st_size > 10_000
    params = report.params_json.read_text()
    assert '"seed": 0' in params and "manual_seed(seed + s)" in params


def test_resume_computes_nothing_new(sanity_run):
    from runners.sanity import run_sanity

    ctx, report, df = sanity_run
    again = run_sanity(ctx, methods=["gradcam", EDGE_ID])
    assert again.touched == []
    assert again.computed == {"gradcam": 0, EDGE_ID: 0}
    assert again.already == {"gradcam": 2, EDGE_ID: 2}
    pd.testing.assert_frame_equal(pd.read_csv(again.csv), df)



def test_the_dry_run_counts_the_units_left_and_those_recompute_drops(sanity_run, monkeypatch):
    from runners.costs import Stored

    ctx = sanity_run[0]
    assert Stored(ctx).sanity_left(["gradcam"], 1) == 0  # stored: nothing left
    monkeypatch.setattr(ctx.cfg, "recompute", ["gradcam"])
    assert Stored(ctx).sanity_left(["gradcam"], 1) == 1 and Stored(ctx).sanity_left([EDGE_ID], 1) == 0


def test_a_unit_is_reused_only_by_its_version_and_named_after_its_code_changed(sanity_run, monkeypatch):
    import h5py

    from methods.base import METHODS
    from runners.sanity import run_sanity, unit_path
    from runners.store import StoreError

    ctx, report, df = sanity_run
    path = unit_path(ctx.run_dir / "randomisation", "chelsea.png", EDGE_ID, "original_top1")
    with np.load(path, allow_pickle=False) as z:
        unit = {k: z[k] for k in z.files}
    code = json.loads(str(unit["code"]))
    assert "metrics.randomisation" in code["files"] and code["version"] == 1  # the similarities' code is covered
    changed = dict(code, files=dict(code["files"], **{"metrics.randomisation": "0" * 64}))
    np.savez_compressed(path, **dict(unit, code=np.array(json.dumps(changed))))  # computed by other code
    with h5py.File(ctx.run_dir / "maps.h5", "r+") as f:  # and the folder's targets with another torch
        inputs = json.loads(f["clean"].attrs["code"])
        f["clean"].attrs["code"] = json.dumps(dict(inputs, packages=dict(inputs["packages"], torch="1.0.0")))
    again = run_sanity(ctx, methods=[EDGE_ID])
    assert again.computed == {EDGE_ID: 0} and again.already == {EDGE_ID: 2}
    assert len(again.notices) == 2 and "(torch 1.0.0 -> " in again.notices[0]
    assert again.notices[1].startswith(
        f"randomisation/{EDGE_ID}: 1 stored result(s) reused, computed before a change to metrics.randomisation;")
    assert "or add --recompute with its id" in again.notices[1]
    monkeypatch.setattr(METHODS[EDGE_ID], "version", 2)
    with pytest.raises(StoreError, match=rf"another protocol(.|\n)*add --recompute {EDGE_ID} to compute"):
        run_sanity(ctx, methods=[EDGE_ID])
    monkeypatch.setattr(ctx.cfg, "recompute", [EDGE_ID])  # --recompute: its units moved aside, computed again
    monkeypatch.setattr(ctx, "dropped", set())
    redone = run_sanity(ctx, methods=[EDGE_ID])
    assert redone.computed == {EDGE_ID: 2} and redone.already == {EDGE_ID: 0}
    assert f"randomisation/{EDGE_ID}: 2 stored unit(s) moved aside (--recompute)" in redone.notices
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["protocol"]))["version"] == 2
    assert len(list(path.parent.glob(f"{path.name}.recompute-*"))) == 1  # the old unit kept, never read again
    monkeypatch.setattr(ctx, "dropped", set())
    assert run_sanity(ctx, methods=["gradcam"]).computed == {"gradcam": 0}  # another method's units stay


def test_unknown_convention_is_refused(sanity_run):
    from runners.sanity import SanityCheck

    with pytest.raises(ValueError, match="convention"):
        SanityCheck(sanity_run[0], ["gradcam"], 1, ["top5"])


def _edge_version_as_stored(monkeypatch, run_dir, convention="original_top1"):
    """Give the edge detector the version its units in ``run_dir`` were computed with: the module's folder is shared,
    and an earlier test may have computed them again at version 2."""
    from methods.base import METHODS
    from runners.sanity_units import unit_path

    path = unit_path(run_dir / "randomisation", "chelsea.png", EDGE_ID, convention)
    with np.load(path, allow_pickle=False) as z:
        monkeypatch.setattr(METHODS[EDGE_ID], "version", json.loads(str(z["protocol"])).get("version", 1))


def test_a_randomisation_csv_that_disagrees_with_its_units_is_left_out(sanity_run, tmp_path, capsys, monkeypatch):
    """The randomisation table and figure read randomisation_<tag>.csv; the units it was written from vouch for it:
    one similarity edited, or a row removed, leaves it out (named, `tables` exits 1) until the sanity stage writes
    it again from the units."""
    import shutil

    from benchmark.cli import main
    from benchmark.outputs.runs import load_run
    from runners.context import RunConfig, RunContext
    from runners.sanity import run_sanity

    ctx, report, df = sanity_run
    run_dir = tmp_path / ctx.run_dir.name
    shutil.copytree(ctx.run_dir, run_dir)
    _edge_version_as_stored(monkeypatch, run_dir)
    csv = run_dir / "csv" / report.csv.name
    good = csv.read_text()
    args = ["tables", "--model", "efficientnet_lite0", "--out", str(tmp_path)]
    assert load_run(run_dir).randomisation() is not None

    edited = df.copy()
    edited.loc[3, "ssim"] = float(np.nextafter(edited.loc[3, "ssim"], 2.0))  # one float64 step
    edited.to_csv(csv, index=False)
    assert main(args) == 1
    err = capsys.readouterr().err
    row = df.loc[3]
    assert (f"{csv.name} disagrees with its units in randomisation/: 1 of its {len(df)} row(s) differ from the units' "
            f"(e.g. {{'image': 'chelsea.png', 'method': '{row['method']}', 'convention': '{row['convention']}', "
            f"'step': {row['step']}}})") in err
    run = load_run(run_dir)
    assert run.randomisation() is None and len(run.check.disagree) == 1
    md = (run_dir / "tables" / "tables.md").read_text()
    assert md.startswith("## CSV files left out") and "randomisation CSV of efficientnet_lite0 left out" in md

    df.drop(index=[0]).to_csv(csv, index=False)
    assert main(args) == 1 and "it lacks 1 row(s) of the units" in capsys.readouterr().err

    again = RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, out=str(tmp_path),
                                 profile="quick", progress=False))
    assert run_sanity(again, methods=["gradcam", EDGE_ID]).computed == {"gradcam": 0, EDGE_ID: 0}
    assert csv.read_text() == good and main(args) == 0


def test_a_damaged_unit_is_named_moved_aside_and_computed_again(sanity_run, tmp_path, capsys, monkeypatch):
    """A unit whose bytes changed fails its zip CRC: `status` names it (exit 1), the sanity stage moves it aside and
    computes it again (the edge detector's rows then equal the old ones exactly: it ignores the model), and no
    traceback is shown."""
    import shutil

    from benchmark.cli import main
    from runners.context import RunConfig, RunContext
    from runners.costs import Stored
    from runners.sanity import run_sanity
    from runners.sanity_units import unit_path

    ctx, report, df = sanity_run
    run_dir = tmp_path / ctx.run_dir.name
    shutil.copytree(ctx.run_dir, run_dir)
    _edge_version_as_stored(monkeypatch, run_dir, "randomised_top1")
    unit = unit_path(run_dir / "randomisation", "chelsea.png", EDGE_ID, "original_top1")
    data = bytearray(unit.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 16])
    unit.write_bytes(bytes(data))
    assert main(["status", str(run_dir)]) == 1
    assert f"DISAGREES: sanity-check unit {unit} does not read (" in capsys.readouterr().out

    ctx_again = RunContext(RunConfig(model="efficientnet_lite0", data="demo", limit=1, out=str(tmp_path),
                                     profile="quick", progress=False))
    left = Stored(ctx_again)  # the dry run counts the damaged unit as left to compute
    assert left.sanity_left([EDGE_ID], 1) == 1 and left.sanity_left(["gradcam"], 1) == 0
    again = run_sanity(ctx_again, methods=["gradcam", EDGE_ID])
    assert again.computed == {"gradcam": 0, EDGE_ID: 1} and again.already == {"gradcam": 2, EDGE_ID: 1}
    (line,) = [n for n in again.notices if "moved aside" in n]
    assert line.startswith(f"sanity-check unit {unit} does not read") and line.endswith("computed again now")
    (aside,) = unit.parent.glob(unit.name + ".corrupt-*")
    pd.testing.assert_frame_equal(pd.read_csv(again.csv), df)
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    n_aside = len([p for p in unit.parent.iterdir() if ".npz." in p.name])  # an earlier test's --recompute too
    assert f"randomisation/: 4 sanity-check unit(s), {n_aside} moved aside" in out
    assert f"moved aside: {aside.name}" in out
