"""Poly-CAM (methods/polycam.py): hand-computed values, a naive per-channel re-implementation, batching
invariance, layer discovery, and the pretrained EfficientNet-Lite0 on the cat photo."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models import ModelBundle
from benchmark.models.layers import PRESETS, RESNET50_LAYERS, VGG16_LAYERS, discover_layers, layer_resolutions
from methods import METHODS, make_method
from methods.base import MethodError
from methods.polycam import lnorm, percentile_normalize, percentiles


def bundle(net, layers, name="toy"):
    return ModelBundle(name=name, net=net.eval().requires_grad_(False), mean=(0.0,) * 3, std=(1.0,) * 3,
                       weights="random", weights_sha256=None, layer_sets={"toy": list(layers)}, polycam_preset="toy")


def run(method_id, model, x, targets, batch_size=32, **params):
    m = make_method(method_id, batch_size=batch_size, **params)
    return m.compute_all(model, x, targets, size=x.shape[-1])


# --------------------------------------------------------------------------------------------- operators

def test_percentile_normaliser_channel_10_to_25():
    # Two-valued channel: q0.1 = 10 and q99.9 = 25 exactly, so u = (A - 10) / 25 spans 0..0.6 (not 0..1).
    a = torch.full((1, 1, 7, 7), 10.0)
    a[0, 0, :, 4:] = 25.0
    u = percentile_normalize(a)
    assert u.min().item() == 0.0
    assert u.max().item() == pytest.approx(0.6, abs=1e-7)
    assert torch.allclose(u[a == 25.0], torch.tensor(0.6))
    # A ramp 10..25: numpy's percentiles, divided by q99.9 (not by the range), clamped to [0, 1].
    ramp = torch.linspace(10, 25, 14 * 14).view(1, 1, 14, 14)
    r = ramp.double().numpy().ravel()
    lo, hi = np.percentile(r, 0.1), np.percentile(r, 99.9)
    expected = np.clip((r - lo) / hi, 0, 1).reshape(14, 14)
    np.testing.assert_allclose(percentile_normalize(ramp)[0, 0].numpy(), expected, atol=1e-6)
    assert percentile_normalize(ramp).max().item() == pytest.approx(0.6, abs=1e-3)
    # Constant channel -> all zeros exactly (its percentiles equal the constant).
    assert torch.equal(percentile_normalize(torch.full((1, 2, 5, 5), 3.0)), torch.zeros(1, 2, 5, 5))


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (7, 7), (28, 28), (5, 9)])
def test_percentiles_match_numpy_linear(hw):
    g = torch.Generator().manual_seed(sum(hw))
    a = torch.randn(3, 4, *hw, generator=g)
    a[0, 0] = a[0, 0].round()  # ties
    lo, hi = percentiles(a, 0.1)
    flat = a.double().numpy().reshape(12, -1)
    np.testing.assert_allclose(lo.numpy().ravel(), np.percentile(flat, 0.1, axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hi.numpy().ravel(), np.percentile(flat, 99.9, axis=1), rtol=1e-6, atol=1e-6)


def test_lnorm_equation_1_by_hand():
    # Block means D = [[1, 2], [3, 4]]; bilinear 2x upsampling of D (align_corners=False), written out by hand:
    up_d = torch.tensor([[1.0, 1.25, 1.75, 2.0],
                         [1.5, 1.75, 2.25, 2.5],
                         [2.5, 2.75, 3.25, 3.5],
                         [3.0, 3.25, 3.75, 4.0]])
    m = torch.tensor([[0.0, 2.0, 2.0, 2.0], [2.0, 0.0, 2.0, 2.0], [3.0, 3.0, 1.0, 7.0], [3.0, 3.0, 7.0, 1.0]])
    out = lnorm(m[None], (2, 2))[0]
    torch.testing.assert_close(out, m / up_d)
    assert out[0, 1].item() == pytest.approx(2.0 / 1.25)
    assert out[2, 3].item() == pytest.approx(7.0 / 3.5)
    # Eq. 1 literally: average pooling of 2x2 blocks, then bilinear upsampling.
    paper = m / F.interpolate(F.avg_pool2d(m[None, None], 2), size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(out, paper)
    # Equal block means (all 2) -> a plain division by 2.
    eq = torch.tensor([[1.0, 3.0, 2.0, 2.0], [3.0, 1.0, 2.0, 2.0], [4.0, 0.0, 0.0, 4.0], [0.0, 4.0, 4.0, 0.0]])
    torch.testing.assert_close(lnorm(eq[None], (2, 2))[0], eq / 2.0)
    # A zero block: block means [[1, 0], [1, 1]], upsampled row 0 = (1, .75, .25, 0); the corner (0, 3) divides
    # 0 by the 1e-12 floor and stays 0.
    z = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    got = lnorm(z[None], (2, 2))[0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0], torch.tensor([1.0, 4.0 / 3.0, 0.0, 0.0]))
    torch.testing.assert_close(got[1, :2], torch.tensor([1.0, 1.0 / 0.8125]))


# --------------------------------------------------------------------------------------------- hand-computed toy

class HandLayerA(nn.Module):
    """4x4, 2 channels: ReLU of input channel 1, and the constant 3."""

    def forward(self, x):
        return torch.cat([torch.relu(x[:, 1:2]), torch.full_like(x[:, 1:2], 3.0)], dim=1)


class HandLayerB(nn.Module):
    """2x2, 1 channel: 2x2 average pool of input channel 2."""

    def forward(self, x):
        return F.avg_pool2d(x[:, 2:3], 2)


class HandNet(nn.Module):
    """Two classes with probabilities (s, 1 - s), s = (0.1 + 0.5 * mean(x[:, 0]))^2 (logits = their logs)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = HandLayerA(), HandLayerB()

    def forward(self, x):
        self.a(x)
        self.b(x)
        s = (0.1 + 0.5 * x[:, 0].mean(dim=(1, 2))) ** 2
        return torch.log(torch.stack([s, 1 - s], dim=1))


def hand_input():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0] = 1.0  # so f(x * m) = (0.1 + 0.5 mean(m))^2
    x[0, 1] = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [4, 4, 4, 4], [4, 4, 4, 4]])  # layer a, channel 0
    x[0, 2, :2, :2] = 8.0  # layer b = [[8, 0], [0, 0]]
    return x


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_hand_computed_toy(batch_size):
    """Every number below is worked out by hand (see the comments).

    Layer a channel 0: A in {0 (x4), 2 (x4), 4 (x8)}: q0.1 = 0, q99.9 = 4, u = A / 4, mean(u) = 10/16 = 0.625.
    Layer a channel 1: constant 3 -> u = 0: masked input = zero image, complement input = x.
    Layer b: [[8,0],[0,0]]: q0.1 = 0, q99.9 = 7.976 -> u = [[1,0],[0,0]] (clamped); bilinear 2->4 upsampling gives
    r r^T with r = (1, .75, .25, 0), mean 1/4.
    Scores: f(x) = 0.6^2 = 0.36; f(0) = 0.01;
      a0: f(x u) = 0.4125^2 = 0.17015625, f(x (1-u)) = 0.2875^2 = 0.08265625
      b:  f(x u) = 0.225^2  = 0.050625,   f(x (1-u)) = 0.475^2  = 0.225625
    """
    model = bundle(HandNet(), ["a", "b"])
    x, t = hand_input(), torch.tensor([0])
    out = run("pcampm", model, x, t, batch_size=batch_size)
    ones = torch.ones(2, 2)

    def blocks(tl, tr, bottom):
        return torch.cat([torch.cat([tl * ones, tr * ones], 1), torch.cat([bottom * ones, bottom * ones], 1)], 0)

    r = torch.tensor([1.0, 0.75, 0.25, 0.0])
    rr = torch.outer(r, r)
    # weights (a0, a1, b):  w+ = (0.17015625, 0.01, 0.050625)
    #                       w- = (0.36 - 0.08265625, 0, 0.36 - 0.225625) = (0.27734375, 0, 0.134375)
    #                       w+- = (0.4475, 0.01, 0.185)
    # isolated-layer maps: CAM_a = w_a0 * A + 3 w_a1 (blocks TL / TR / bottom), CAM_b = 8 w_b r r^T
    expected_cam = {
        "p": (blocks(0.03, 0.3703125, 0.710625), 0.405 * rr),
        "m": (blocks(0.0, 0.5546875, 1.109375), 1.075 * rr),
        "pm": (blocks(0.03, 0.925, 1.82), 1.48 * rr),
    }
    for w, (cam_a, cam_b) in expected_cam.items():
        torch.testing.assert_close(out[f"cam{w}_l1"][0], cam_a, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[f"cam{w}_l2"][0], cam_b, atol=1e-6, rtol=1e-5)
        # step 1 = u(CAM_b) upsampled = r r^T, whatever the weight
        torch.testing.assert_close(out[f"pcam{w}_step1"][0], rr, atol=1e-6, rtol=0)
    # PCAM- fused by hand: LNorm(CAM_a) = CAM_a / up(block means), times up(CAM_b) = 1.075 r r^T, gives
    # 1.075 * [[0,0,1/3,0],[0,0,3/17,0],[1/3,0.24,2/27,0],[0,0,0,0]]; q0.1 = 0, q99.9 = 1.075/3 -> normalised:
    pcamm = torch.tensor([[0, 0, 1, 0], [0, 0, 9 / 17, 0], [1, 0.72, 2 / 9, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(out["pcamm"][0], pcamm, atol=1e-5, rtol=0)
    # PCAM- without LNorm: CAM_a * 1.075 r r^T = 1.075 a * [[0,0,.25,0],[0,0,.1875,0],[.5,.375,.125,0],0]
    # (a = 0.5546875); q99.9 = lerp(.375, .5, 0.985) = .498125 (x 1.075 a):
    nol = torch.tensor([[0, 0, 0.25, 0], [0, 0, 0.1875, 0], [0.5, 0.375, 0.125, 0], [0, 0, 0, 0]]) / 0.498125
    torch.testing.assert_close(out["pcamm_nolnorm"][0], nol.clamp(max=1.0), atol=1e-5, rtol=0)
    # PCAM+ and PCAM+-: the same recursion written out with numpy (bilinear 2->4 matrix R by hand).
    rmat = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    for w, (cam_a, cam_b) in expected_cam.items():
        ca, cb = cam_a.double().numpy(), cam_b.double().numpy()
        block_means = ca.reshape(2, 2, 2, 2).mean(axis=(1, 3))
        fused = ca / np.maximum(rmat @ block_means @ rmat.T, 1e-12) * cb
        v = np.sort(fused.ravel())
        lo, hi = v[0] + 0.015 * (v[1] - v[0]), v[14] + 0.985 * (v[15] - v[14])  # numpy 'linear', n = 16
        torch.testing.assert_close(out[f"pcam{w}"][0].double(), torch.from_numpy(np.clip((fused - lo) / hi, 0, 1)),
                                   atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------- naive reference

class ToyCNN(nn.Module):
    """16 -> 16 -> 8 -> 4 px CNN with a dead channel, a constant non-zero channel and signed activations."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU())
        self.c3 = nn.Conv2d(5, 6, 3, stride=2, padding=1)  # no ReLU: negative activations
        self.fc = nn.Linear(6, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
            self.fc.weight.mul_(4.0)
            self.c1[0].weight[1].zero_()
            self.c1[0].bias[1] = -1.0  # dead channel: all zeros
            self.c2[0].weight[2].zero_()
            self.c2[0].bias[2] = 0.7  # constant 0.7 channel
        self.eval()

    def forward(self, x):
        a = self.c3(self.c2(self.c1(x)))
        return self.fc(a.mean(dim=(2, 3)))


TOY_LAYERS = ["c1", "c2", "c3"]


def naive_polycam(net, x, c, layers, use_lnorm=True):
    """Straightforward per-image, per-channel Poly-CAM: one forward pass per mask, numpy percentiles,
    2x2 average pooling for LNorm's downsampling. Returns {weighting: (step maps, isolated maps, no-LNorm map)}."""
    modules = dict(net.named_modules())
    acts = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: acts.__setitem__(n, o.clone())) for n in layers]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    size = x.shape[-2:]

    def f(inp):
        with torch.no_grad():
            return torch.softmax(net(inp), 1)[0, c].item()

    def u(ch):
        lo, hi = np.percentile(ch, 0.1), np.percentile(ch, 99.9)
        return np.clip((ch - lo) / max(hi, 1e-12), 0, 1)

    def up(a, s):
        return F.interpolate(torch.as_tensor(a, dtype=torch.float32)[None, None], size=s, mode="bilinear",
                             align_corners=False)[0, 0]

    fx = f(x)
    cams = {w: [] for w in ("p", "m", "pm")}
    for n in layers:
        a = acts[n][0].double().numpy()
        ws = {w: [] for w in cams}
        for k in range(a.shape[0]):
            mask = u(a[k])
            sp = f(x * up(mask, size))
            sm = f(x * up(1 - mask, size))
            ws["p"].append(sp)
            ws["m"].append(max(fx - sm, 0.0))
            ws["pm"].append(max(sp + fx - sm, 0.0))
        for w in cams:
            cams[w].append(np.maximum(np.tensordot(np.array(ws[w]), a, axes=1), 0))

    def fused(cl, with_lnorm):
        steps, p = [], None
        for cam in reversed(cl):
            if p is not None:
                s = cam.shape[0] // p.shape[0]
                if with_lnorm:
                    means = F.avg_pool2d(torch.from_numpy(cam)[None, None], s)[0, 0].numpy()
                    cam = cam / np.maximum(up(means, cam.shape).double().numpy(), 1e-12)
                p = cam * up(p, cam.shape).double().numpy()
            else:
                p = cam
            p = np.maximum(p, 0)
            steps.append(up(u(p), size).numpy())
        return steps

    return {w: (fused(cams[w], True), [up(cm, size).numpy() for cm in cams[w]], fused(cams[w], False)[-1])
            for w in cams}


def toy_setup(n_images=3):
    net = ToyCNN()
    x = torch.randn(n_images, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = net(x).argmax(1)
    return bundle(net, TOY_LAYERS), x, t


def test_matches_naive_per_channel_reference():
    model, x, t = toy_setup()
    out = run("pcampm", model, x, t, batch_size=7)
    assert len(out) == 3 * (1 + 2 + 3 + 1)
    for i in range(x.shape[0]):
        ref = naive_polycam(model.net, x[i:i + 1], int(t[i]), TOY_LAYERS)
        for w, (steps, isolated, nolnorm) in ref.items():
            np.testing.assert_allclose(out[f"pcam{w}"][i].numpy(), steps[-1], atol=1e-4)
            for k in (1, 2):
                np.testing.assert_allclose(out[f"pcam{w}_step{k}"][i].numpy(), steps[k - 1], atol=1e-4)
            for k in (1, 2, 3):
                np.testing.assert_allclose(out[f"cam{w}_l{k}"][i].numpy(), isolated[k - 1], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(out[f"pcam{w}_nolnorm"][i].numpy(), nolnorm, atol=1e-4)
        assert out["pcampm"][i].max() > 0.5  # not a degenerate all-zero map


def test_single_weighting_classes_give_the_same_maps():
    model, x, t = toy_setup()
    both = run("pcampm", model, x, t, batch_size=6)
    for mid in ("pcamp", "pcamm"):
        alone = run(mid, model, x, t, batch_size=4)
        w = mid[4:]
        assert set(alone) == {mid, f"{mid}_step1", f"{mid}_step2", f"{mid}_nolnorm", f"cam{w}_l1", f"cam{w}_l2",
                              f"cam{w}_l3"}
        for k, v in alone.items():
            torch.testing.assert_close(v, both[k], atol=1e-5, rtol=1e-5)


def test_batch_size_and_image_grouping_do_not_change_the_maps():
    model, x, t = toy_setup(n_images=4)
    ref = run("pcampm", model, x, t, batch_size=1)
    for bs in (3, 16, 1000):
        got = run("pcampm", model, x, t, batch_size=bs)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-5)
    alone = [run("pcampm", model, x[i:i + 1], t[i:i + 1], batch_size=5) for i in range(4)]
    for k in ref:
        torch.testing.assert_close(torch.cat([a[k] for a in alone]), ref[k], atol=1e-5, rtol=1e-5)


def test_ids_params_cost_and_hooks():
    model, x, t = toy_setup(n_images=1)
    pm, p, m = (make_method(i) for i in ("pcampm", "pcamp", "pcamm"))
    assert p.params == m.params == pm.params == {"layers": None, "ablations": True, "outlier_percent": 0.1}
    assert make_method("pcamp", quick=True).params == make_method("pcampm", quick=True).params
    assert make_method("pcampm", quick=True).variants == ("pcamp", "pcamm")
    assert make_method("pcamp", quick=True).variants == ()
    for meth in (pm, p, m):
        meth.check_applicable(model)  # 3 layers -> steps 1..2, l1..l3
        assert all(re.match(r"^[a-z][a-z0-9_]*$", i) for i in meth.output_ids)
    assert set(pm.output_ids) == set(p.output_ids) | set(m.output_ids) | {
        "pcampm", "pcampm_step1", "pcampm_step2", "campm_l1", "campm_l2", "campm_l3", "pcampm_nolnorm"}
    assert {"pcampm", "pcamp", "pcamm"} <= set(METHODS)
    # cost: channels 4 + 5 + 6 = 15 -> 2 x 15 + 1 clean for PCAM+-, 15 + 1 for one weighting
    assert pm.cost(model).forward == 31 and p.cost(model).forward == 16 and m.cost(model).forward == 16
    # layers: a preset name, a list, or an error naming the presets
    model.layer_sets["two"] = ["c2", "c3"]
    out = run("pcamp", model, x, t, layers="two")
    assert set(out) == {"pcamp", "pcamp_step1", "camp_l1", "camp_l2", "pcamp_nolnorm"}
    out2 = run("pcamp", model, x, t, layers=["c2", "c3"])
    torch.testing.assert_close(out2["pcamp"], out["pcamp"])
    with pytest.raises(MethodError, match="presets"):
        make_method("pcamp", layers="nope").check_applicable(model)
    # hooks are gone afterwards, also when the forward pass fails
    assert all(not mod._forward_hooks for mod in model.net.modules())

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            self.c1(x)
            raise RuntimeError("boom")

    broken = bundle(Boom(), ["c1"])
    with pytest.raises(RuntimeError, match="boom"):
        run("pcampm", broken, x, t)
    assert not broken.net.c1._forward_hooks


def test_constant_channels_skip_passes_but_keep_their_contribution():
    """c2's channel 2 is the constant 0.7: its masked pass would see the zero image, its complement pass x."""
    model, x, t = toy_setup(n_images=2)
    calls = []
    handle = model.net.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].shape[0]))
    try:
        out = run("pcampm", model, x, t, batch_size=1000)
    finally:
        handle.remove()
    # 2 images x (15 channels - 1 dead - 1 constant) x 2 kinds = 52 masked inputs in one pass, + clean + zero image
    assert sorted(calls) == [1, 2, 52]
    with torch.no_grad():
        f0 = torch.softmax(model.net(torch.zeros(1, 3, 16, 16)), 1)[0, t]
    a2 = model.net.c2(model.net.c1(x))
    assert torch.allclose(a2[:, 2], torch.tensor(0.7))
    # The naive reference runs every pass (the zero image for the constant channel): same CAM of c2, so the constant
    # channel still adds w+ * 0.7 = f_c(0) * 0.7 (w- = 0).
    for i in range(2):
        ref = naive_polycam(model.net, x[i:i + 1], int(t[i]), TOY_LAYERS)
        for w in ("p", "m", "pm"):
            np.testing.assert_allclose(out[f"cam{w}_l2"][i].numpy(), ref[w][1][1], rtol=1e-4, atol=1e-5)
        assert f0[i] > 1e-3


# --------------------------------------------------------------------------------------------- layer discovery

def test_layer_discovery_vgg16_and_resnet50_presets():
    from benchmark.models.tv_compat import import_torchvision

    tv = import_torchvision()
    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        vgg = tv.models.get_model("vgg16", weights=None).eval()
    assert discover_layers(vgg, device="meta") == VGG16_LAYERS["paper"] == PRESETS["vgg16"][0]["paper"]
    res = {n: (h, w) for n, h, w in layer_resolutions(vgg, device="meta")}
    assert [res[n] for n in VGG16_LAYERS["paper"]] == [(224, 224), (112, 112), (56, 56), (28, 28), (14, 14)]
    model = ModelBundle(name="vgg16", net=vgg, mean=(0.0,) * 3, std=(1.0,) * 3, weights="random",
                        weights_sha256=None, layer_sets=VGG16_LAYERS, polycam_preset="paper",
                        device=torch.device("meta"))
    assert make_method("pcampm").cost(model).forward == 2 * (64 + 128 + 256 + 512 + 512) + 1 == 2945
    assert make_method("pcamp").cost(model).forward == 1473

    r50 = tv.models.get_model("resnet50", weights=None).eval()
    assert PRESETS["resnet50"][1] == "reference"
    assert discover_layers(r50) == RESNET50_LAYERS["paper_text"] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    res = {n: (h, w) for n, h, w in layer_resolutions(r50)}
    assert [res[n][0] for n in RESNET50_LAYERS["paper_text"]] == [112, 56, 28, 14, 7]
    assert [res[n][0] for n in RESNET50_LAYERS["reference"]] == [112, 28, 14, 7, 7]

    # The reference code's search (the layer before each change of spatial shape; hooks on every module, the
    # first skipped) picks the blocks' shared ReLUs, whose hook keeps the last call = the block output.
    shapes, hooks = [], []
    for name, mod in r50.named_modules():
        hooks.append(mod.register_forward_hook(lambda _m, _i, o, n=name: shapes.append((n, o.shape))))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        r50(x)
    for h in hooks:
        h.remove()
    picks, (last_name, last_shape) = [], shapes[0]
    for name, shape in shapes[1:]:
        if shape[2:] != last_shape[2:]:
            if len(shape) != len(last_shape):
                break
            picks.append(last_name)
            if tuple(shape[-2:]) == (1, 1):
                break
        last_name, last_shape = name, shape
    assert picks == ["relu", "layer2.0.relu", "layer3.0.relu", "layer4.0.relu", "layer4"]
    got = {}
    mods = dict(r50.named_modules())
    hooks = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o.clone()))
             for n in set(picks) | set(RESNET50_LAYERS["reference"])]
    with torch.no_grad():
        r50(x)
    for h in hooks:
        h.remove()
    for ref_name, preset_name in zip(picks, RESNET50_LAYERS["reference"]):
        assert torch.equal(got[ref_name], got[preset_name]), (ref_name, preset_name)


def test_layer_discovery_efficientnet_lite0(lite0):
    # the last stage at each resolution; a linear (signed) MBConv output is replaced by its depthwise ReLU6 output
    layers = ["stem", "blocks.2.depthwise", "blocks.4.depthwise", "blocks.10.depthwise", "head"]
    assert discover_layers(lite0.net) == layers == lite0.polycam_layers
    info = {n: (h, w, nonneg) for n, h, w, nonneg in layer_resolutions(lite0.net, with_sign=True)}
    assert [info[n][:2] for n in layers] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert all(info[n][2] for n in layers)
    assert [info[n][2] for n in ("blocks.2", "blocks.4", "blocks.10")] == [False] * 3  # the linear block outputs
    assert "blocks.2.project.0.static_padding" not in info  # an Identity pass-through is no layer
    m = make_method("pcampm", quick=True)
    assert m.cost(lite0).forward == 2 * (32 + 144 + 240 + 672 + 1280) + 1


# --------------------------------------------------------------------------------------------- pretrained

LITE0_FAST_LAYERS = ["stem", "blocks.2.depthwise", "blocks.4.depthwise", "blocks.10.depthwise"]


def total_variation(m):
    return ((m[1:] - m[:-1]).abs().sum() + (m[:, 1:] - m[:, :-1]).abs().sum()).item()


def detail_ratio(m):
    """TV of a 224 px map over the TV of its 7x7 block average upsampled back (about 1 for an upsampled 7x7 map)."""
    seven = F.interpolate(F.adaptive_avg_pool2d(m[None, None], 7), size=m.shape, mode="bilinear",
                          align_corners=False)[0, 0]
    return total_variation(m) / total_variation(seven)


@pytest.fixture(scope="module")
def lite0_cat_scores(lite0, cat):
    """PCAM+- on the real EfficientNet-Lite0 and the cat photo, its insertion / deletion AUCs (16 steps, blurred
    baseline) and those of random maps: per-pixel uniform noise (index 1) and six smooth random maps (uniform
    noise on a 7x7, 14x14 or 28x28 grid upsampled bilinearly, two seeds each: indices 2..7).

    The full preset (2368 channels with ``head``: 4737 passes) takes minutes on a 2-core CPU, too slow for the
    suite: this runs its four layers at 112, 56, 28 and 14 px (1088 channels, 2177 passes);
    scripts/probe_lite0_layers.py and the CLI run use the full preset.
    """
    from metrics.insertion_deletion import blur_baseline, perturbation_curves

    with torch.no_grad():
        t = lite0.net(cat).argmax(1)
    out = run("pcampm", lite0, cat, t, batch_size=64, ablations=False, layers=LITE0_FAST_LAYERS)
    g = torch.Generator().manual_seed(0)
    rand = [torch.rand(1, 224, 224, generator=g)]
    rand += [F.interpolate(torch.rand(1, 1, r, r, generator=g), size=224, mode="bilinear")[:, 0]
             for r in (7, 7, 14, 14, 28, 28)]
    maps = torch.cat([out["pcampm"], *rand])
    n = maps.shape[0]
    xs, ts, base = cat.expand(n, -1, -1, -1), t.expand(n), blur_baseline(cat).expand(n, -1, -1, -1)
    ins = perturbation_curves(lite0.net, xs, base, maps, ts, 16, "insertion", 64).mean(1)
    dele = perturbation_curves(lite0.net, xs, base, maps, ts, 16, "deletion", 64).mean(1)
    return {"map": out["pcampm"][0], "target": t, "ins": ins.tolist(), "del": dele.tolist()}


@pytest.mark.slow
def test_pretrained_lite0_cat_insertion_beats_noise(lite0_cat_scores):
    s = lite0_cat_scores
    assert s["map"].shape == (224, 224) and torch.isfinite(s["map"]).all()
    assert s["ins"][0] > s["ins"][1] + 0.05, s  # per-pixel noise: 0.60; PCAM+- 0.78 (full preset 0.81)
    assert s["ins"][0] > sum(s["ins"][2:]) / 6, s  # smooth random maps: mean about 0.78


@pytest.mark.slow
def test_pretrained_lite0_cat_deletion_beats_smooth_random_maps(lite0_cat_scores):
    s = lite0_cat_scores
    # PCAM+- 0.62 here (full preset 0.625); smooth random maps 0.67..0.82, so the margin is kept on each one
    assert all(s["del"][0] < d - 0.03 for d in s["del"][2:]), s


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "Per-pixel noise is the strongest deletion 'saliency' on this photo under the blurred baseline: scattered "
    "replacement erases the fur texture the class relies on (deletion AUC 0.558 at 16 steps, 0.571 at 224). No "
    "CAM beats it: Grad-CAM 0.648 / 0.656, PCAM+- with the full post-activation preset 0.625 (16 steps), with "
    "these four layers 0.616 / 0.626; with the linear block outputs blocks.2/4/10 PCAM+- was 0.762. Measured "
    "with scripts/probe_lite0_layers.py."))
def test_pretrained_lite0_cat_deletion_beats_noise(lite0_cat_scores):
    assert lite0_cat_scores["del"][0] < lite0_cat_scores["del"][1], lite0_cat_scores


@pytest.mark.slow
def test_pretrained_lite0_cat_map_is_finer_than_gradcam(lite0, cat, lite0_cat_scores):
    pcam = lite0_cat_scores["map"]
    grad = make_method("gradcam")(lite0, cat, lite0_cat_scores["target"])[0]
    # Grad-CAM is a 7x7 grid upsampled: its TV is that of its own 7x7 average; Poly-CAM's 112 px detail is not.
    d_pcam, d_grad = detail_ratio(pcam), detail_ratio(grad)
    assert d_grad < 1.5, d_grad
    assert d_pcam > 3 * d_grad, (d_pcam, d_grad)
    # and on the same [0, 1] scale its total variation is over twice Grad-CAM's
    tv_pcam, tv_grad = (total_variation((m - m.min()) / (m.max() - m.min())) for m in (pcam, grad))
    assert math.isfinite(tv_pcam) and tv_pcam > 2 * tv_grad, (tv_pcam, tv_grad)
