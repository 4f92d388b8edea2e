"""CALM: losses by hand, probabilities, construction, the authors' checkpoint layout, the registered methods,
training with resume, the synthetic localisation experiment, remove-and-classify and cue localization."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.models.calm import (
    CalmBundle,
    CalmNet,
    VggTrunk,
    calm_em_loss,
    calm_ml_loss,
    calm_scores,
    read_checkpoint,
)
from methods.calm import normalize_map, score_maps
from runners.calm_synthetic import make_synthetic, run_experiment, small_trunk
from tests.conftest import run_cli


def hand_case():
    """B=1, C=2, two locations: logits (0, 0) and (ln 3, 0); location map a = (1, 3).

    p(y|z1) = (1/2, 1/2), p(y|z2) = (3/4, 1/4), p(z) = (1/4, 3/4), p(y=0,z) = (1/8, 9/16), p(y=1,z) = (1/8, 3/16),
    p(y|x) = (11/16, 5/16)."""
    f = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]], dtype=torch.float64)  # [1, 2, 1, 2]
    a = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    return f, a


def test_scores_by_hand_and_sums():
    f, a = hand_case()
    s = calm_scores(f, a)
    assert torch.allclose(s["p_z"].flatten(), torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert torch.allclose(s["joint"][0, 0].flatten(), torch.tensor([1 / 8, 9 / 16], dtype=torch.float64))
    assert torch.allclose(s["joint"][0, 1].flatten(), torch.tensor([1 / 8, 3 / 16], dtype=torch.float64))
    assert torch.allclose(s["p_y"], torch.tensor([[11 / 16, 5 / 16]], dtype=torch.float64))


def test_ml_loss_by_hand():
    f, a = hand_case()
    assert calm_ml_loss(f, a, torch.tensor([0])).item() == pytest.approx(-math.log(11 / 16), rel=1e-12)
    assert calm_ml_loss(f, a, torch.tensor([1])).item() == pytest.approx(-math.log(5 / 16), rel=1e-12)
    f2, a2 = torch.cat([f, f]), torch.cat([a, a])  # batch mean
    assert calm_ml_loss(f2, a2, torch.tensor([0, 1])).item() == pytest.approx(
        -(math.log(11 / 16) + math.log(5 / 16)) / 2, rel=1e-12)


def test_em_loss_by_hand():
    f, a = hand_case()
    post = [(1 / 8) / (11 / 16 + 1e-10), (9 / 16) / (11 / 16 + 1e-10)]  # p(z|x, y=0) = (2/11, 9/11)
    expected = -(post[0] * (math.log(1 / 2) + math.log(1 / 4)) + post[1] * (math.log(3 / 4) + math.log(3 / 4)))
    assert calm_em_loss(f, a, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.848833, abs=1e-6)


def test_em_loss_floor_and_stop_gradient():
    f, a = hand_case()
    a = torch.tensor([[[[0.0, 4.0]]]], dtype=torch.float64)  # p(z) = (0, 1): log(0 + 1e-8) at z1, weight 0
    post = (3 / 4) / (3 / 4 + 1e-10)  # z1 has posterior 0: its log(1e-8) term counts for nothing
    assert calm_em_loss(f, a, torch.tensor([0])).item() == pytest.approx(-post * math.log(3 / 4), rel=1e-12)
    # the posterior is a constant: the gradient wrt f is sum_z post_z * d/df log p(y*|x,z)
    f, a = hand_case()
    f = f.clone().requires_grad_(True)
    calm_em_loss(f, a, torch.tensor([0])).backward()
    post = torch.tensor([2 / 11, 9 / 11], dtype=torch.float64)
    pyz0 = torch.tensor([0.5, 0.75], dtype=torch.float64)
    assert torch.allclose(f.grad[0, 0, 0], -post * (1 - pyz0), atol=1e-9)
    assert torch.allclose(f.grad[0, 1, 0], post * (1 - pyz0), atol=1e-9)


def test_em_and_ml_have_the_same_gradient():
    """Fisher's identity: with the posterior held constant at the current parameters, the gradient of the EM
    objective equals the gradient of the marginal log-likelihood. So CALM-EM and CALM-ML take the same step from the
    same weights (up to the 1e-10 in the posterior and the 1e-8 floor, inactive here), with respect to the class
    maps and to the location map alike; the two losses differ in value, not in direction."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    a = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) + 0.1  # p(z|x) > 1e-8 everywhere
    y = torch.tensor([0, 3, 4, 1])
    grads = {}
    for name, loss in (("em", calm_em_loss), ("ml", calm_ml_loss)):
        fl, al = f.clone().requires_grad_(True), a.clone().requires_grad_(True)
        loss(fl, al, y).backward()
        grads[name] = (fl.grad, al.grad)
    assert torch.allclose(grads["em"][0], grads["ml"][0], rtol=1e-8, atol=1e-12)
    assert torch.allclose(grads["em"][1], grads["ml"][1], rtol=1e-8, atol=1e-12)
    assert calm_em_loss(f, a, y).item() != pytest.approx(calm_ml_loss(f, a, y).item(), rel=1e-3)


def test_cue_map_gradient_does_not_depend_on_the_cue_map():
    """With the reference's detached normaliser S = sg(sum_z a_z), both losses give, wherever p(z|x) is above the
    EM floor, dL/da_z = -p(y*|x,z) / (S p(y*|x)): every location is pushed up by its class probability, whatever
    its own a_z, and the step on the 1x1 cue head's weights is sum_z p(y*|x,z) g_z / (S p(y*|x)), a sum over all
    locations. Checked against autograd. (The synthetic check in docs/calm.md shows where the cue head's peak goes with
    longer training; that this identity is the cause is not shown.)"""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    a = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) + 0.05
    y = torch.tensor([2, 0])
    pyz = torch.softmax(f, dim=1)[torch.arange(2), y]  # [2, 3, 3]
    py = ((a / a.sum(dim=(2, 3), keepdim=True)) * torch.softmax(f, dim=1)).sum(dim=(2, 3))[torch.arange(2), y]
    expected = -pyz / (a.sum(dim=(1, 2, 3)) * py).view(2, 1, 1) / 2  # / 2: the batch mean
    for loss in (calm_em_loss, calm_ml_loss):
        al = a.clone().requires_grad_(True)
        loss(f, al, y).backward()
        assert torch.allclose(al.grad[:, 0], expected, rtol=1e-9, atol=1e-12), loss.__name__


def test_forward_is_log_p_and_probabilities_sum_to_one():
    torch.manual_seed(0)
    net = CalmNet(small_trunk(8), 16, 5, "em", "small").eval()
    assert torch.equal(net.attention[0].bias, torch.ones(1)) and not net.attention[0].weight.any()  # uniform
    with torch.no_grad():
        net.attention[0].weight.normal_(0, 0.3)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        s = net.scores(x)
        out = net(x)
    assert torch.allclose(s["p_y"].sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(s["p_z"].sum(dim=(1, 2, 3)), torch.ones(3), atol=1e-6)
    assert torch.allclose(torch.softmax(out, 1), s["p_y"], atol=1e-6)  # the harness's softmax = CALM's p(y|x)


def test_init_from_classifier_fc_gives_cam_and_uniform_cue():
    from benchmark.models.calm import build_calm

    net = build_calm("resnet18", "em", "random", seed=3, head_init="classifier").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        g = net.backbone(x)
        s = net.scores(x)
    assert s["f"].shape == (2, 1000, 2, 2)
    from benchmark.models import load_model

    base = load_model("resnet18", "random", seed=3, channels_last=False)
    cam = torch.einsum("bchw,kc->bkhw", g, base.net.fc.weight) + base.net.fc.bias.view(1, -1, 1, 1)
    assert torch.allclose(s["f"], cam, atol=1e-5)
    assert torch.allclose(s["p_z"], torch.full_like(s["p_z"], 0.25))


def test_feature_maps_of_resnet50_and_vgg16():
    from benchmark.models.calm import _resnet_trunk
    from benchmark.models.tv_compat import import_torchvision

    x = torch.zeros(1, 3, 64, 64)
    tv = import_torchvision()
    with torch.no_grad():
        for fm, side in (("large", 8), ("reference", 4), ("standard", 2)):
            assert _resnet_trunk(tv.models.resnet50(weights=None), fm).eval()(x).shape == (1, 2048, side, side)
        # the reference's VGG16 crashes at construction (attention on 512 * self.block.expansion); ours runs
        for fm, side in (("reference", 4), ("large", 8)):
            net = CalmNet(VggTrunk(fm), 1024, 7, "ml", "vgg16", fm).eval()
            assert net.attention[0].in_channels == 1024
            assert net.scores(x)["joint"].shape == (1, 7, side, side)


def authors_resnet50_state_dict(classes=4, seed=0):
    """A state dict with the authors' key names (network/resnet.py): backbone keys at the top level,
    conv_last (classes x 2048 1x1 with bias), attention.0 (1 x 2048 1x1), saved by DataParallel (module.)."""
    from benchmark.models.tv_compat import import_torchvision

    torch.manual_seed(seed)
    sd = {k: v for k, v in import_torchvision().models.resnet50(weights=None).state_dict().items()
          if not k.startswith("fc.")}
    sd["conv_last.weight"] = torch.randn(classes, 2048, 1, 1) * 0.01
    sd["conv_last.bias"] = torch.randn(classes)
    sd["attention.0.weight"] = torch.randn(1, 2048, 1, 1) * 0.01
    sd["attention.0.bias"] = torch.full((1,), 0.5)
    return {f"module.{k}": v for k, v in sd.items()}


def test_load_authors_checkpoint(tmp_path):
    from benchmark.models import ModelError, load_model

    sd = authors_resnet50_state_dict()
    path = tmp_path / "last_checkpoint.pth.tar"
    torch.save({"architecture": "resnet50", "epoch": 40, "state_dict": sd,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001}]}}, path)
    assert read_checkpoint(path)["layout"] == "authors"
    from benchmark.models.calm import CalmMethodWarning

    with pytest.warns(CalmMethodWarning, match="cannot be told"):  # the authors' files have the same keys for all
        bundle = load_model("calm_em_resnet50", str(path), channels_last=False)
    net = bundle.net
    assert net.loss == "em" and net.feature_map == "large" and net.num_classes == 4
    assert torch.equal(net.backbone.layer4[2].conv3.weight, sd["module.layer4.2.conv3.weight"])
    assert torch.equal(net.attention[0].bias, sd["module.attention.0.bias"])
    assert bundle.describe()["calm"]["layout"] == "authors"
    assert bundle.layer_sets["auto"][-1] == "backbone"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        g = net.backbone(x)
        assert g.shape[-1] == 8  # stride-1 layer3 and layer4
        f = torch.nn.functional.conv2d(g, sd["module.conv_last.weight"], sd["module.conv_last.bias"])
        a = torch.relu(torch.nn.functional.conv2d(g, sd["module.attention.0.weight"], sd["module.attention.0.bias"]))
        assert torch.allclose(net(x), calm_scores(f, a)["p_y"].log(), atol=1e-5)
    with pytest.raises(ModelError, match="calm_em_resnet50, calm_ml_resnet50 or calm_cam_resnet50"):
        load_model("calm_resnet50", str(path))  # the authors' files do not say which loss trained them
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ModelError, match="not a CALM checkpoint"):
        load_model("calm_em_resnet50", str(bad))


def small_bundle(loss="em", classes=3, seed=0):
    torch.manual_seed(seed)
    net = CalmNet(small_trunk(8), 16, classes, loss, "small").eval()
    with torch.no_grad():
        net.attention[0].weight.normal_(0, 0.3)
    return CalmBundle(name=f"calm_{loss}_small", net=net, mean=(0.5,) * 3, std=(0.5,) * 3, weights="random",
                      weights_sha256=None, layer_sets={"auto": ["backbone.3", "backbone"]}, polycam_preset="auto",
                      num_classes=classes, calm={"loss": loss})


def test_methods_score_maps_and_applicability(lite0):
    from methods import NotApplicable, make_method

    b = small_bundle("em")
    x = torch.randn(2, 3, 48, 48)
    t = torch.tensor([0, 2])
    with torch.no_grad():
        s = b.net.scores(x)
    m = make_method("calm_em").explain(b, x, t)
    assert torch.allclose(m, s["joint"][torch.arange(2), t])  # jointll is in [0, 1]: clipping leaves it as is
    gt = score_maps(b.net, x, t, "gtcond")[:, 0]
    assert torch.allclose(gt.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    assert torch.allclose(score_maps(b.net, x, t, "saliency")[:, 0], s["p_z"][:, 0])
    assert torch.allclose(score_maps(b.net, x, t, "vanilla")[:, 0], s["f"][torch.arange(2), t])
    assert make_method("calm_em", score_map="saliency").compute_all(b, x, t)["calm_em"].shape == (2, 224, 224)
    with pytest.raises(NotApplicable, match="calm_em"):
        make_method("calm_ml").check_applicable(b)
    with pytest.raises(NotApplicable, match="train-calm"):
        make_method("calm_em").check_applicable(lite0)
    # other methods run on the CALM model too, on its log p(y|x)
    assert make_method("gradcam").compute_all(b, x, t)["gradcam"].shape == (2, 224, 224)
    assert normalize_map(torch.full((1, 3, 3), 0.5), "clipping").sum() == 0  # constant map -> zeros
    assert torch.equal(normalize_map(torch.tensor([[[2.0, -1.0, 0.5]]]), "clipping"), torch.tensor([[[1.0, 0, 0.5]]]))


# ------------------------------------------------------------------------------ synthetic localisation

EPOCHS = 6


@pytest.fixture(scope="module")
def synthetic():
    return run_experiment(seed=0, epochs=EPOCHS)


def test_synthetic_calm_learns_and_locates_the_pattern(synthetic):
    """All three models trained with the reference schedule (SGD Nesterov, momentum 0.9, weight decay 1e-4, lr 0.01
    and 10x for the heads). Chance levels: the glyph's box is 64 of 2304 pixels (2.8 %), its pixels about 1.7 %.

    Observed (seed 0, 6 epochs): accuracy / pointing game / energy in box / pixel AP: CALM-EM 1.000 / 0.969 / 0.300
    / 0.405, CALM-ML 1.000 / 0.965 / 0.302 / 0.406, CAM 0.996 / 0.953 / 0.381 / 0.411.
    Over seeds 0-5 (``python scripts/calm_synthetic.py --seeds 0,1,2,3,4,5``): pointing game CALM-EM 0.947 vs
    CAM 0.927 (CALM ahead in 4 of 6 seeds), energy in box 0.302 vs 0.361 (CAM ahead in 6 of 6), pixel AP 0.407 vs
    0.408 (CALM ahead in 2 of 6); at 12 epochs CAM is ahead on the pointing game too. "CALM locates the pattern
    better than CAM" is therefore NOT reproduced by this task (its distractor is shared by every class) in a way
    that holds across seeds, and this test does not assert it (the pairs task below, whose shared glyph is evidence
    for two sibling classes, does): it asserts what holds with a margin, and that EM and ML train alike (they take
    the same gradient step: test_em_and_ml_have_the_same_gradient). Longer training makes it worse (seeds 0-2,
    24 epochs): CALM-EM's pointing game falls to 0.621 (its arg-max on a neighbouring feature cell: 0.999 within
    4 px of the box) while CAM's is 0.973; CALM points where its cue head p(z|x) points (docs/calm.md, synthetic
    check)."""
    r = synthetic
    for kind in ("em", "ml", "cam"):
        assert r[kind]["accuracy"] >= 0.9, (kind, r[kind]["accuracy"])
        assert r[kind]["pointing_game"] >= 0.8, (kind, r[kind]["pointing_game"])
        assert r[kind]["pointing_game_tol4"] >= 0.95, (kind, r[kind]["pointing_game_tol4"])
        assert r[kind]["energy_in_box"] >= 0.2, (kind, r[kind]["energy_in_box"])
        assert r[kind]["pixel_ap"] >= 0.3, (kind, r[kind]["pixel_ap"])
    for key in ("accuracy", "pointing_game", "pixel_ap"):
        assert abs(r["em"][key] - r["ml"][key]) <= 0.03, (key, r["em"][key], r["ml"][key])


def test_pairs_task_siblings_share_the_body_and_differ_by_the_glyph():
    """Every image holds its family's body (classes 0, 1: family 0; 2, 3: family 1) painted in one colour, and its
    class's glyph, not overlapping; the mask is the glyph's pixels inside its box."""
    from runners.calm_synthetic import BODY, GLYPHS, _body, _glyph

    d = make_synthetic(40, 7, classes=4, task="pairs")
    assert set(d["y"].tolist()) == {0, 1, 2, 3}
    glyphs = [_glyph(GLYPHS[k]) for k in list(GLYPHS)[:4]]
    for i in range(40):
        y = int(d["y"][i])
        r0, c0, r1, c1 = d["box"][i].tolist()
        b0, bc0, b1, bc1 = d["shared_box"][i].tolist()
        assert (r1 - r0, c1 - c0, b1 - b0, bc1 - bc0) == (8, 8, BODY, BODY)
        assert r1 <= b0 or b1 <= r0 or c1 <= bc0 or bc1 <= c0  # disjoint
        assert torch.equal(d["mask"][i, r0:r1, c0:c1], glyphs[y]) and d["mask"][i].sum() == glyphs[y].sum()
        body = d["x"][i, :, b0:b1, bc0:bc1]
        colour = d["x"][i, :, r0:r1, c0:c1][:, glyphs[y].bool()]  # [3, glyph pixels]: one colour
        assert torch.equal(colour, colour[:, :1].expand_as(colour))
        for family in (0, 1):
            on = body[:, _body(family).bool()]
            assert torch.equal(on, colour[:, :1].expand_as(on)) == (family == y // 2), (i, family)
    with pytest.raises(ValueError, match="4 classes"):
        make_synthetic(4, 0, classes=3, task="pairs")
    with pytest.raises(ValueError, match="task must be one of"):
        make_synthetic(4, 0, task="siblings")


@pytest.fixture(scope="module")
def pairs():
    return run_experiment(seed=0, epochs=EPOCHS, task="pairs", calm_init="cam")


def test_pairs_calm_locates_the_class_cue_better_than_cam(pairs):
    """CALM's Figure 1 in miniature: sibling classes share a 16x16 body; only an 8x8 glyph tells them apart. CAM is
    trained 6 epochs; CALM-EM and CALM-ML start from it (its trunk, its fc as the class head, a uniform cue head: the
    reference's recipe) and are fine-tuned 6 epochs.

    CAM's map of the true class W_y . g + b_y also takes the body's evidence for the family; CALM's p(y, z|x) =
    p(y|x, z) p(z|x) gives the body about 1/2 (p(y|x, z) cannot tell the siblings there: 0.486 at the body's centre
    cell) and the glyph about 1 (0.996). Observed (seed 0): accuracy / pointing game / pixel AP / energy in box /
    peak on the body: CALM-EM 0.988 / 0.980 / 0.465 / 0.292 / 0.000, CALM-ML 0.988 / 0.980 / 0.466 / 0.285 / 0.000,
    CAM 1.000 / 0.852 / 0.366 / 0.242 / 0.125.
    Over seeds 0-5 (docs/calm.md, synthetic check) CALM is ahead on all three localisation scores in 6 of 6 seeds
    (smallest leads: pointing game 0.129, pixel AP 0.098, energy 0.044), and CAM's peak is on the body in 13-52 % of the
    images; CALM's accuracy is 0.73-0.99 there (CAM: 1.000)."""
    r = pairs
    for kind in ("em", "ml"):
        assert r[kind]["accuracy"] >= 0.85, (kind, r[kind]["accuracy"])
        assert r[kind]["pointing_game"] >= r["cam"]["pointing_game"] + 0.08, (kind, r[kind], r["cam"])
        assert r[kind]["pixel_ap"] >= r["cam"]["pixel_ap"] + 0.06, (kind, r[kind], r["cam"])
        assert r[kind]["energy_in_box"] > r["cam"]["energy_in_box"], (kind, r[kind], r["cam"])
        assert r[kind]["pointing_game_on_shared"] <= 0.02, (kind, r[kind]["pointing_game_on_shared"])
        assert r[kind]["p_class_at_glyph"] >= 0.9, (kind, r[kind]["p_class_at_glyph"])  # p(y*|x, z) at the glyph
        assert 0.35 <= r[kind]["p_class_at_shared"] <= 0.65, (kind, r[kind]["p_class_at_shared"])  # at the body
    assert r["cam"]["accuracy"] >= 0.95, r["cam"]["accuracy"]
    assert r["cam"]["pointing_game_on_shared"] >= 0.08, r["cam"]["pointing_game_on_shared"]
    calm = r["em"]["model"]
    assert not any(p is q for p, q in zip(calm.backbone.parameters(), r["cam"]["model"].backbone.parameters()))


def test_cue_head_scores_by_hand():
    """CALM heads on a 2x2 grid of an 8x8 image (stride 4), class 0; the glyph's box rows 4-8, cols 0-4
    (cell (1, 0)), the shared box rows 0-4, cols 4-8 (cell (0, 1)). p(y0|z) = (1/2, 3/4; 1/2, 1/2), p(z) = (1/6,
    1/2; 1/6, 1/6), joint (1/12, 3/8; 1/12, 1/12): the peak is cell (0, 1) with p(y0|z) = 3/4, alone within 10 % of
    the maximum; p(y0|z) is 1/2 at the glyph's cell and 3/4 at the shared one; the cue head's max over mean is
    3 / 1.5 = 2, and its peak is outside the glyph's box."""
    from runners.calm_synthetic import cue_head_scores

    f = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    f[0, 0, 0, 1] = math.log(3.0)
    a = torch.tensor([[[[1.0, 3.0], [1.0, 1.0]]]], dtype=torch.float64)
    data = {"x": torch.zeros(1, 3, 8, 8), "y": torch.tensor([0]), "box": torch.tensor([[4, 0, 8, 4]]),
            "shared_box": torch.tensor([[0, 4, 4, 8]])}
    got = cue_head_scores(calm_scores(f, a), data)
    assert got["p_class_at_peak"] == pytest.approx(0.75, abs=1e-12)
    assert got["p_class_at_glyph"] == pytest.approx(0.5, abs=1e-12)
    assert got["p_class_at_shared"] == pytest.approx(0.75, abs=1e-12)  # cell (0, 1)
    assert got["joint_cells_near_peak"] == 1.0
    assert got["cue_peak_over_mean"] == pytest.approx(2.0, abs=1e-12)
    assert got["cue_pointing_game"] == 0.0


def test_remove_and_classify_pattern_map_beats_random_map():
    """A CALM-EM model trained 3 epochs on the synthetic task. Observed: erasing the top 10 % of a map that marks
    the glyph's box keeps 13 of 64 images correct, 10 % random pixels 42: ratio 0.31; a random map: 1.05. From
    k = 0.3 on, random erasure alone already brings the model to chance (21 of 64), so the ratios are about 1."""
    from metrics.remove_and_classify import RemoveAndClassify, ratios_from_curves
    from runners.calm_synthetic import train_model

    torch.manual_seed(0)
    model = CalmNet(small_trunk(32), 64, 3, "em", "small")
    train_model(model, make_synthetic(1536, 0), "em", 3, 0, optimizer="adam")
    b = small_bundle()
    b.net = model
    data = make_synthetic(64, 11)
    x = data["x"]
    with torch.no_grad():
        targets = model(x).argmax(1)
    metric = RemoveAndClassify(batch_size=64, seed=0)
    # the pattern map: 1 on the glyph's box grown by 2 pixels (144 pixels; k = 0.1 erases 230), then low noise
    box = torch.zeros_like(data["mask"])
    for i, (r0, c0, r1, c1) in enumerate(data["box"].tolist()):
        box[i, max(r0 - 2, 0):r1 + 2, max(c0 - 2, 0):c1 + 2] = 1.0
    pattern = metric.compute(b, x, box + 0.01 * torch.rand(box.shape, generator=torch.Generator().manual_seed(0)),
                             targets)
    noise = metric.compute(b, x, torch.rand(data["mask"].shape, generator=torch.Generator().manual_seed(1)), targets)
    rp, rn = ratios_from_curves(pattern["curve"]), ratios_from_curves(noise["curve"])
    assert rp[0.1] < 0.6 < 0.9 < rn[0.1]  # erasing 10 % of the pixels where the pattern is vs anywhere
    assert pattern["value"].mean() < noise["value"].mean()
    assert pattern["curve"].shape == (64, 10)
    again = metric.compute(b, x[5:9], torch.rand(4, 48, 48), targets[5:9])  # random erasures: per-image seeds
    assert torch.equal(again["curve"][:, 5:], noise["curve"][5:9, 5:])


def test_erasure_masks_by_hand():
    from metrics.remove_and_classify import random_masks, topk_masks

    maps = torch.tensor([[[0.1, 0.9], [0.9, 0.5]]]).repeat(1, 5, 5)  # 10x10, ties in raster order
    m = topk_masks(maps, ks=(0.1, 0.5))
    assert m.shape == (1, 2, 10, 10) and m[0, 0].sum() == 10 and m[0, 1].sum() == 50
    first = torch.nonzero(m[0, 0].flatten()).flatten().tolist()
    assert first == [1, 3, 5, 7, 9, 10, 12, 14, 16, 18]  # the 0.9 pixels, raster order
    x = torch.randn(2, 3, 10, 10)
    r = random_masks(x, seed=4, ks=(0.3,))
    assert r[:, 0].flatten(1).sum(1).tolist() == [30, 30]
    assert torch.equal(random_masks(x[1:], seed=4, ks=(0.3,)), r[1:])
    assert not torch.equal(random_masks(x, seed=5, ks=(0.3,)), r)


# ------------------------------------------------------------------------------ training and resume

def test_train_calm_resume_mid_epoch_equals_uninterrupted(tmp_path):
    from runners.calm_train import TrainConfig, train_calm

    data = make_synthetic(24, 3, classes=2, size=32)
    ds = torch.utils.data.TensorDataset(data["x"], data["y"])

    def model():
        torch.manual_seed(0)
        return CalmNet(small_trunk(4), 8, 2, "em", "small")

    cfg = dict(loss="em", epochs=2, batch_size=8, lr=0.01, schedule="constant", seed=1, progress=False)
    train_calm(TrainConfig(out=str(tmp_path / "a"), **cfg), model(), ds, (0.5,) * 3, (0.5,) * 3)
    cut = train_calm(TrainConfig(out=str(tmp_path / "b"), max_steps=4, **cfg), model(), ds, (0.5,) * 3,
                     (0.5,) * 3)
    assert cut["epochs_done"] == 1  # 3 steps per epoch: stopped at step 1 of epoch 2
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ck["meta"]["epochs_done"] == 1 and ck["meta"]["step"] == 1 and ck["meta"]["seed"] == 1
    resumed = train_calm(TrainConfig(out=str(tmp_path / "b"), **cfg), model(), ds, (0.5,) * 3, (0.5,) * 3)
    assert resumed["epochs_done"] == 2
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    with pytest.raises(ValueError, match="other settings"):
        train_calm(TrainConfig(out=str(tmp_path / "b"), **{**cfg, "lr": 0.1}), model(), ds, (0.5,) * 3,
                   (0.5,) * 3)


def test_reference_schedule_and_parameter_groups():
    from benchmark.models.calm import _resnet_trunk
    from benchmark.models.tv_compat import import_torchvision
    from runners.calm_train import lr_factor, param_groups

    assert [lr_factor(e, "reference") for e in (0, 28, 29, 39)] == [1.0, 1.0, 0.1, 0.1]
    net = CalmNet(_resnet_trunk(import_torchvision().models.resnet50(weights=None), "large"), 2048, 10, "em",
                  "resnet50")
    groups = {g["name"]: g for g in param_groups(net, 0.01, 10.0, False)}
    ids = {id(p) for p in groups["backbone"]["params"]}
    named = dict(net.named_parameters())
    assert id(named["backbone.layer3.0.conv2.weight"]) in ids and id(named["backbone.layer4.0.conv1.weight"]) in ids
    assert id(named["backbone.layer4.0.conv2.weight"]) not in ids and id(named["conv_last.weight"]) not in ids
    assert groups["heads"]["lr"] == pytest.approx(0.1)
    frozen = param_groups(net, 0.01, 10.0, True)
    assert [g["name"] for g in frozen] == ["heads"]


def test_train_calm_cli_then_benchmark_on_the_calm_model(tmp_path):
    from PIL import Image

    data = make_synthetic(12, 5, classes=2, size=32)
    for i, (x, y) in enumerate(zip(data["x"], data["y"])):
        d = tmp_path / "train" / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        img = ((x * 0.5 + 0.5).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(d / f"{i}.png")
    out = tmp_path / "ckpt"
    args = ["train-calm", "--model", "efficientnet_lite0", "--base-weights", "imagenet", "--loss", "ml", "--data",
            tmp_path / "train", "--out", out, "--epochs", "1", "--batch-size", "4", "--image-size", "32",
            "--schedule", "constant", "--no-progress"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["meta"]["epochs_done"] == 1 and ck["meta"]["loss"] == "ml" and ck["meta"]["classes"] == ["class0",
                                                                                                         "class1"]
    more = list(args)
    more[more.index("--epochs") + 1] = "2"
    r = run_cli(*more)  # resumes: one more epoch
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout and torch.load(out / "last.pt", weights_only=True)["meta"]["epochs_done"] == 2
    common = ["--model", "calm_efficientnet_lite0", "--weights", out / "last.pt", "--methods", "calm_ml,gradcam",
              "--data", "demo", "--limit", "1", "--profile", "quick", "--out", tmp_path / "res", "--no-progress"]
    r = run_cli("maps", *common)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run_cli("metrics", *common, "--metrics", "remove_classify")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import h5py

    assert (tmp_path / "res" / "calm_efficientnet_lite0" / "csv").is_dir()
    with h5py.File(tmp_path / "res" / "calm_efficientnet_lite0" / "maps.h5", "r") as f:
        assert "calm" in f.attrs["provenance"] and "scored_with" in f.attrs["provenance"]


# ------------------------------------------------------------------------------ cue localization

def make_fake_cub(root: Path) -> None:
    """A 3-class CUB-200-2011 folder in the real file formats: attributes.txt, class attribute percentages,
    images.txt, labels, split, parts, part clicks, segmentations. Images are 112x112 (part clicks x2 at 224)."""
    from PIL import Image

    (root / "attributes").mkdir(parents=True)
    (root / "parts").mkdir()
    names = ["has_bill_shape::curved", "has_wing_color::blue", "has_tail_shape::forked", "has_back_color::red"]
    (root / "attributes" / "attributes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    # class 0 vs 1: bill (head) -> 1 part; 0 vs 2: wing + tail -> 2 parts; 1 vs 2: bill, wing, tail -> 3 parts
    rows = ["80.0 10.0 10.0 50.0", "10.0 10.0 10.0 60.0", "90.0 70.0 55.5 70.0"]
    (root / "attributes" / "class_attribute_labels_continuous.txt").write_text("\n".join(rows) + "\n")
    parts = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]
    (root / "parts" / "parts.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(parts)))
    images, labels, split, locs = [], [], [], []
    for i in range(6):
        c = i % 3
        folder = f"{c + 1:03d}.Bird_{c}"
        rel = f"{folder}/Bird_{c}_{i:04d}_{i}.jpg"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "segmentations" / folder).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(root / "images" / rel)
        seg = np.zeros((112, 112), np.uint8)
        seg[10:100, 10:100] = 255
        Image.fromarray(seg).save(root / "segmentations" / (rel[:-4] + ".png"))
        images.append(f"{i + 1} {rel}")
        labels.append(f"{i + 1} {c + 1}")
        split.append(f"{i + 1} 0")
        # visible: beak (head) at (30, 20), left wing at (80, 60), tail at (90, 95) (x, y); the rest invisible
        for pid in range(1, 16):
            xy, vis = {2: ((30, 20), 1), 9: ((80, 60), 1), 14: ((90, 95), 1)}.get(pid, ((0, 0), 0))
            locs.append(f"{i + 1} {pid} {float(xy[0])} {float(xy[1])} {vis}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("parts/part_locs.txt", locs)):
        (root / name).write_text("\n".join(lines) + "\n")


def test_cub_annotations_and_cue_mask_by_hand(tmp_path):
    from benchmark.data.cub import CUB

    make_fake_cub(tmp_path)
    cub = CUB(tmp_path, test_list="split")  # the fake images are not in the authors' list
    assert cub.differing_parts(0, 1) == [1]
    assert cub.differing_parts(0, 2) == [5, 7]
    assert cub.differing_parts(1, 2) == [1, 5, 7]
    assert cub.pairs_by_group() == {1: [(0, 1)], 2: [(0, 2)], 3: [(1, 2)]}
    im = cub.images[0]
    coords, ids = cub.part_points(im, (112, 112))
    assert coords.tolist() == [[60, 40], [180, 190], [160, 120]] and ids == [1, 5, 7]
    m = cub.cue_mask(im, [1])  # pixels nearer the head (60, 40) than the tail and wing, inside the segmentation
    ys, xs = np.mgrid[0:224, 0:224]
    d = [(xs - x) ** 2 + (ys - y) ** 2 for x, y in coords]
    seg = np.zeros((224, 224), bool)
    seg[20:200, 20:200] = True
    expected = (d[0] < np.minimum(d[1], d[2])) & seg
    assert (m.astype(bool) ^ expected).sum() <= 2 * 224  # ties on the bisectors and the bicubic edge only
    assert m[40, 60] == 1 and m[190, 180] == 0 and m[5, 5] == 0


def test_pxap_by_hand_and_the_reset_fix():
    from metrics.cue_localization import PxAPHistogram

    h = PxAPHistogram()
    h.accumulate(np.array([0.9, 0.2, 0.5]), np.array([1, 1, 0]))
    assert h.compute() == pytest.approx(100 * (1 * 0.5 + 0.5 * 0 + 2 / 3 * 0.5), abs=1e-9)
    perfect, second = np.array([0.9, 0.1]), np.array([0.5, 0.9])  # [true pixel, false pixel]
    gt = np.array([1, 0])
    fresh = PxAPHistogram()
    fresh.accumulate(second, gt)  # 0.9: P 0, R 0; 0.5: P 1/2, R 1
    shared = PxAPHistogram()
    shared.accumulate(perfect, gt)
    shared.accumulate(second, gt)  # the reference: the second pair's score includes the first pair
    assert fresh.compute() == pytest.approx(50.0)
    assert shared.compute() == pytest.approx(100 * (0.5 * 0.5 + 2 / 3 * 0.5))  # 0.9: P 1/2 R 1/2; 0.5: P 2/3 R 1


def test_cue_localization_end_to_end(tmp_path):
    from methods import make_method
    from metrics.cue_localization import FIX
    from runners.calm_protocol import CUE_CHOICES, resolve
    from runners.cue_localization import cue_localization

    make_fake_cub(tmp_path)  # its images are not the authors' test list: the harness's split
    b = small_bundle("em", classes=3)
    harness = resolve(CUE_CHOICES, "harness")
    res = cue_localization(b, make_method("calm_em"), tmp_path, batch_size=4, protocol=harness)
    assert set(res["pxap"]) == {1, 2, 3} and all(0 <= v <= 100 for v in res["pxap"].values())
    assert res["fix"] == FIX and [p[:2] for p in res["pairs"][2]] == [(0, 2)] and res["pairs"][2][0][3] == 4
    ref = cue_localization(b, make_method("calm_em"), tmp_path, batch_size=4,
                           protocol=resolve(CUE_CHOICES, "harness", histograms="accumulate"))
    assert ref["pxap"][1] == pytest.approx(res["pxap"][1])  # the first pair is the same either way
    gc = cue_localization(b, make_method("gradcam"), tmp_path, groups=(1,), protocol=harness)  # any method
    assert 0 <= gc["pxap"][1] <= 100


def test_cue_localization_command(tmp_path):
    """The CLI on the fake CUB folder, any torchvision model (random weights), two methods: CSV + JSON."""
    import json

    import pandas as pd

    from conftest import run_cli

    make_fake_cub(tmp_path / "cub")
    out = tmp_path / "out"
    r = run_cli("cue-localization", "--cub", tmp_path / "cub", "--model", "mobilenet_v3_small", "--weights",
                "random", "--methods", "gradcam,inputxgrad", "--groups", "1,2", "--batch-size", "4", "--out", out,
                "--protocol", "harness", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(out / "cue_localization_mobilenet_v3_small-random_harness.csv")
    assert df[["method", "group"]].values.tolist() == [["gradcam", 1], ["gradcam", 2], ["inputxgrad", 1],
                                                       ["inputxgrad", 2]]
    assert df["pairs"].tolist() == [1, 1, 1, 1] and df["images"].tolist() == [4, 4, 4, 4]
    assert df["pxap"].between(0, 100).all() and set(df["protocol"]) == {"harness"}
    assert set(df["histograms"]) == {"reset"} and set(df["resize"]) == {"torch-antialias"}
    full = json.loads((out / "cue_localization_mobilenet_v3_small-random_harness.json").read_text())
    assert full["fix"].startswith("histograms reset") and full["seed"] == 0
    assert full["protocol"]["test_images"]["value"] == "split"
    bad = run_cli("cue-localization", "--cub", tmp_path / "cub", "--model", "mobilenet_v3_small", "--weights",
                  "random", "--groups", "4", "--out", out)
    assert bad.returncode == 2 and "--groups" in bad.stderr
