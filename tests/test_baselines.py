"""The paper's fourteen baselines: library parity, batching, the chosen library behaviours, RISE and Zoom-CAM by
hand, and every method against a random map on a real photo with the pretrained model."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models import ModelBundle
from methods import METHODS, Cost, make_method

BASELINES = ["cam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "iscam", "layercam", "zoomcam",
             "integratedgradient", "inputxgrad", "smoothgrad", "occlusion", "rise"]
SIZE = 32  # toy input resolution

# Cheap parameters for the toy network (the toy is 32 px: occlusion windows and RISE grids are scaled down).
TOY_PARAMS = {
    "smoothgradcampp": {"num_samples": 3},
    "sscam": {"num_samples": 2},
    "iscam": {"num_samples": 3},
    "integratedgradient": {"n_steps": 6},
    "smoothgrad": {"nt_samples": 5},
    "occlusion": {"window": [3, 8, 8], "stride": [3, 4, 4]},
    "rise": {"n_masks": 60, "s": 4, "p1": 0.5},
}


def toy_bundle(seed=0):
    """A small ReLU CNN with a GAP + Linear head: 5 stages at 32, 16, 8, 4, 4 px, 5 classes."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),             # 0, 1: 32 px
        nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.ReLU(),   # 2, 3: 16 px
        nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),   # 4, 5: 8 px
        nn.Conv2d(6, 6, 3, padding=1, stride=2), nn.ReLU(),   # 6, 7: 4 px
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),             # 8, 9: 4 px (last conv)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for m in net:
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.bias, 0.0, 0.2)  # keeps the ReLUs of a random net alive
    net = net.eval().requires_grad_(False)
    return ModelBundle(name="toy", net=net, mean=(0, 0, 0), std=(1, 1, 1), weights="random", weights_sha256=None,
                       layer_sets={"auto": ["1", "3", "5", "7", "9"]}, polycam_preset="auto", fc="12", num_classes=5)


@pytest.fixture(autouse=True)
def one_thread_for_toys(request):
    """One intra-op thread for the toy-network tests: on a CPU shared with other processes, OpenMP's spin-waiting
    made these small-tensor tests ten times slower with two threads (77 s instead of 5 s). The pretrained-model
    tests (marked slow) keep the default."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    return toy_bundle()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, SIZE, SIZE, generator=g), torch.tensor([0, 3, 1])


def toy_method(mid, batch_size=64, seed=0, **extra):
    m = make_method(mid, seed=seed, batch_size=batch_size, **{**TOY_PARAMS.get(mid, {}), **extra})
    return m


def explain(method, model, x, t):
    """The method's raw maps (before the harness's upsampling), under the grad mode the harness uses."""
    with torch.enable_grad() if method.needs_grad else torch.no_grad():
        return method.explain(model, x, t).detach()


def close(a, b, atol=1e-5, rtol=1e-4):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol)


def act_grad(model, x, t, layer):
    store = {}
    h = model.module(layer).register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    with torch.enable_grad():
        logits = model.net(x.clone().requires_grad_(True))
        (g,) = torch.autograd.grad(logits.gather(1, t.view(-1, 1)).sum(), store["a"])
    h.remove()
    return store["a"].detach(), g


def mm(cam):
    lo = cam.amin(dim=(-2, -1), keepdim=True)
    return (cam - lo) / (cam.amax(dim=(-2, -1), keepdim=True) - lo + 1e-8)


# ------------------------------------------------------------------------------------------ registry

def test_all_fourteen_registered_with_metadata(toy):
    assert set(BASELINES) <= set(METHODS)
    for mid in BASELINES:
        m = make_method(mid)
        assert m.family in ("cam", "gradient", "perturbation"), mid
        assert m.citation and isinstance(m.needs_grad, bool)
        c = m.cost(toy)
        assert isinstance(c, Cost) and c.forward + c.backward >= 1, mid
        d = m.describe()
        assert d["params"] == m.params and d["seed"] == 0


def test_paper_and_quick_parameters():
    p = {mid: make_method(mid).params for mid in BASELINES}
    assert p["sscam"] == {"num_samples": 35, "std": 2.0}
    assert p["iscam"] == {"num_samples": 10}
    assert p["smoothgrad"] == {"nt_samples": 50, "stdev": 1.0, "abs": True, "reduction": "sum"}
    assert p["integratedgradient"]["n_steps"] == 50 and p["integratedgradient"]["baseline"] == 0.0
    assert p["occlusion"]["window"] == [3, 64, 64] and p["occlusion"]["stride"] == [3, 8, 8]
    assert p["rise"] == {"n_masks": 6000, "s": 8, "p1": 0.1}
    assert p["layercam"] == {"scaled_layers": 3, "gamma": 2.0}
    assert p["gradcampp"] == {"alpha": "torchcam"}
    q = {mid: make_method(mid, quick=True).params for mid in BASELINES}
    assert q["rise"]["n_masks"] == 500 and q["integratedgradient"]["n_steps"] == 8
    assert q["smoothgrad"]["nt_samples"] == 8 and q["occlusion"]["stride"] == [3, 32, 32]


def test_costs_per_image(toy):
    assert make_method("scorecam").cost(toy) == Cost(forward=2 + 8)
    assert make_method("sscam").cost(toy) == Cost(forward=2 + 8 * 35)
    assert make_method("iscam").cost(toy) == Cost(forward=2 + 8 * 10)
    assert make_method("occlusion").cost(toy) == Cost(forward=441 + 1)  # ((224 - 64) / 8 + 1)^2 windows
    assert make_method("occlusion", quick=True).cost(toy) == Cost(forward=36 + 1)
    small = dataclasses.replace(toy, input_size=128)  # priced at the run's image size: ((128 - 64) / 8 + 1)^2
    assert make_method("occlusion").cost(small) == Cost(forward=81 + 1)
    assert make_method("integratedgradient").cost(toy) == Cost(backward=50)
    assert make_method("smoothgrad").cost(toy) == Cost(backward=50)
    assert make_method("smoothgradcampp").cost(toy) == Cost(forward=1, backward=4)
    assert make_method("rise").cost(toy) == Cost(forward=6000)
    for mid in ("gradcam", "gradcampp", "layercam", "zoomcam", "inputxgrad"):
        assert make_method(mid).cost(toy) == Cost(backward=1)
    assert make_method("cam").cost(toy) == Cost(forward=1)


@pytest.mark.parametrize("mid", BASELINES)
def test_maps_have_one_shape_and_type(toy, images, mid):
    x, t = images
    out = toy_method(mid).compute_all(toy, x, t, size=SIZE)
    maps = out[mid]
    assert maps.dtype == torch.float32 and maps.shape == (3, SIZE, SIZE)
    assert torch.isfinite(maps).all() and maps.flatten(1).std(1).gt(0).all(), mid


# ------------------------------------------------------------------------------------------ library parity

def _torchcam(cls_name, model, layer, x, t, grad, seed=None, **kw):
    import torchcam.methods as tcm

    if seed is not None:
        torch.manual_seed(seed)
    with torch.enable_grad() if grad else torch.no_grad():
        with getattr(tcm, cls_name)(model.net, target_layer=layer, **kw) as ex:
            scores = model.net(x.clone().requires_grad_(True) if grad else x)
            return ex(class_idx=t.tolist(), scores=scores)


@pytest.mark.parametrize("mid, cls_name, grad, kw", [
    ("cam", "CAM", False, {"fc_layer": "12"}),
    ("gradcam", "GradCAM", True, {}),
    ("gradcampp", "GradCAMpp", True, {}),
    ("scorecam", "ScoreCAM", False, {"batch_size": 5}),
])
def test_torchcam_parity(toy, images, mid, cls_name, grad, kw):
    x, t = images
    direct = _torchcam(cls_name, toy, "9", x, t, grad, **kw)[0]
    close(explain(toy_method(mid, batch_size=5), toy, x, t), direct)


def test_smoothgradcampp_parity(toy, images):
    x, t = images
    direct = _torchcam("SmoothGradCAMpp", toy, "9", x, t, True, seed=7, num_samples=3, std=0.3)[0]
    close(explain(toy_method("smoothgradcampp", seed=7), toy, x, t), direct)


@pytest.mark.parametrize("mid, cls_name, kw", [("sscam", "SSCAM", {"num_samples": 2, "std": 2.0}),
                                               ("iscam", "ISCAM", {"num_samples": 3})])
def test_score_variants_parity_one_image_per_call(toy, images, mid, cls_name, kw):
    x, t = images
    direct = torch.cat([_torchcam(cls_name, toy, "9", x[i:i + 1], t[i:i + 1], False, seed=3, batch_size=7, **kw)[0]
                        for i in range(3)])
    close(explain(toy_method(mid, batch_size=7, seed=3), toy, x, t), direct)


def test_layercam_parity_and_fusion(toy, images):
    """torchcam's per-layer maps, fused as the reference did: tanh(2 L / max L) on the 3 shallowest, max."""
    x, t = images
    cams = _torchcam("LayerCAM", toy, ["1", "3", "5", "7", "9"], x, t, True)
    expect = None
    for i, cam in enumerate(cams):
        if i < 3:
            cam = torch.tanh(2 * cam / cam.amax(dim=(1, 2), keepdim=True))
        cam = F.interpolate(cam[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
        expect = cam if expect is None else torch.maximum(expect, cam)
    ours = explain(toy_method("layercam"), toy, x, t)
    close(ours, expect)
    # torchcam's own fuse_cams scales every layer: a different map (the behaviour we do not use)
    import torchcam.methods as tcm

    assert not torch.allclose(ours, tcm.LayerCAM.fuse_cams(cams, (SIZE, SIZE)), atol=1e-3)


def _captum(name, model, x, t, **kw):
    import captum.attr as ca

    if name == "SmoothGrad":
        torch.manual_seed(kw.pop("seed"))
        return ca.NoiseTunnel(ca.Saliency(model.net)).attribute(x, target=t, **kw)
    return getattr(ca, name)(model.net).attribute(x.clone().requires_grad_(True), target=t, **kw)


@pytest.mark.parametrize("mid, name, kw, bs", [
    ("integratedgradient", "IntegratedGradients", {"baselines": 0.0, "n_steps": 6}, 4),
    ("inputxgrad", "InputXGradient", {}, 4),
    ("smoothgrad", "SmoothGrad", {"nt_type": "smoothgrad", "nt_samples": 5, "stdevs": 1.0, "seed": 5,
                                  "nt_samples_batch_size": 1, "abs": True}, 3),
    ("occlusion", "Occlusion", {"sliding_window_shapes": (3, 8, 8), "strides": (3, 4, 4), "baselines": 0.0}, 4),
])
def test_captum_parity(toy, images, mid, name, kw, bs):
    """The wrapper's map = the library's attribution summed over channels (its batch knobs change nothing)."""
    x, t = images
    with torch.enable_grad():
        direct = _captum(name, toy, x, t, **kw).sum(dim=1)
    close(explain(toy_method(mid, batch_size=bs, seed=5), toy, x, t), direct)


def test_captum_reduction_is_one_setting(toy, images):
    x, t = images
    with torch.enable_grad():
        attr = _captum("InputXGradient", toy, x, t)
    close(explain(toy_method("inputxgrad", reduction="sum_abs"), toy, x, t), attr.abs().sum(1))
    close(explain(toy_method("inputxgrad", reduction="max_abs"), toy, x, t), attr.abs().amax(1))
    with pytest.raises(Exception, match="reduction"):
        explain(toy_method("inputxgrad", reduction="l2"), toy, x, t)


# ------------------------------------------------------------------------------------------ batching

NOISELESS = {"smoothgrad": {"stdev": 0.0}, "smoothgradcampp": {"std": 1e-7}}


@pytest.mark.parametrize("mid", BASELINES)
def test_batch_equals_one_by_one(toy, images, mid):
    """A batch of images gives each image the map it gets alone, whatever the batch size. The two noisy methods
    drawing noise for the whole batch (smoothgrad, smoothgradcampp) are compared with the noise turned off; SS-CAM
    seeds each image, so it is compared with its noise on."""
    x, t = images
    extra = NOISELESS.get(mid, {})
    batched = explain(toy_method(mid, batch_size=64, **extra), toy, x, t)
    single = torch.cat([explain(toy_method(mid, batch_size=2, **extra), toy, x[i:i + 1], t[i:i + 1]) for i in range(3)])
    close(batched, single, atol=1e-4)


@pytest.mark.parametrize("mid", ["smoothgrad", "smoothgradcampp", "sscam"])
def test_noisy_methods_are_reproducible_from_the_seed(toy, images, mid):
    x, t = images
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = explain(toy_method(mid, seed=4), toy, x, t)
    assert torch.equal(state, torch.get_rng_state()), "the caller's RNG state must be left alone"
    b = explain(toy_method(mid, seed=4), toy, x, t)
    c = explain(toy_method(mid, seed=5), toy, x, t)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# ------------------------------------------------------------------------------------------ library behaviours

def test_gradcampp_torchcam_alpha_has_no_denominator(toy, images):
    """torchcam's in-place division hits a copy: w_k = sum_ij g^2 ReLU(g). 'eq19' = pytorch-grad-cam's alpha."""
    x, t = images
    a, g = act_grad(toy, x, t, "9")
    w = (g.pow(2) * g.relu()).sum(dim=(2, 3), keepdim=True)
    close(explain(toy_method("gradcampp"), toy, x, t), mm((w * a).sum(1).relu()))
    alpha = torch.where(g != 0, g.pow(2) / (2 * g.pow(2) + a.sum(dim=(2, 3), keepdim=True) * g.pow(3) + 1e-8),
                        torch.zeros_like(g))
    w19 = (alpha * g.relu()).sum(dim=(2, 3), keepdim=True)
    eq19 = explain(toy_method("gradcampp", alpha="eq19"), toy, x, t)
    close(eq19, mm((w19 * a).sum(1).relu()))
    assert not torch.allclose(eq19, explain(toy_method("gradcampp"), toy, x, t), atol=1e-3)


def test_smoothgradcampp_torchcam_formula(toy, images):
    """alpha from the noisy samples' mean g^2 and g^3 with the clean activation in the denominator, times
    ReLU of the LAST sample's gradient, applied to the LAST noisy activation (torchcam's behaviour)."""
    x, t = images
    torch.manual_seed(7)
    noises = [torch.distributions.Normal(0, 0.3).sample(x.shape) for _ in range(3)]
    a0, _ = act_grad(toy, x, t, "9")
    samples = [act_grad(toy, x + e, t, "9") for e in noises]
    g2 = torch.stack([g.pow(2) for _, g in samples]).mean(0)
    g3 = torch.stack([g.pow(3) for _, g in samples]).mean(0)
    alpha = g2 / (2 * g2 + (g3 * a0).sum(dim=(2, 3), keepdim=True) + 1e-8)
    a_last, g_last = samples[-1]
    w = (alpha * g_last.relu()).sum(dim=(2, 3), keepdim=True)
    close(explain(toy_method("smoothgradcampp", seed=7), toy, x, t), mm((w * a_last).sum(1).relu()))


def _score_cam_by_hand(model, x, t, coeffs, align_corners=False):
    """Score-CAM family weights by hand: softmax_k(mean_i logit_c(c_i x M_k) - logit_c(x))."""
    out = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            a, _ = act_grad(model, x[b:b + 1], t[b:b + 1], "9")
            a = a[0]
            norm = mm(a)  # per channel min-max over space
            masks = F.interpolate(norm[:, None], size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
            clean = model.net(x[b:b + 1])[0, t[b]]
            diff = torch.stack([model.net(c * masks * x[b])[:, t[b]] - clean for c in coeffs]).mean(0)
            w = torch.softmax(diff, 0)
            out.append(mm((w[:, None, None] * a).sum(0).relu()))
    return torch.stack(out)


def test_scorecam_align_corners_false_and_logit_softmax(toy, images):
    x, t = images
    ours = explain(toy_method("scorecam"), toy, x, t)
    close(ours, _score_cam_by_hand(toy, x, t, [1.0]))
    assert not torch.allclose(ours, _score_cam_by_hand(toy, x, t, [1.0], align_corners=True), atol=1e-4)


def test_iscam_torchcam_cumulative_coefficients(toy, images):
    """N = 3: torchcam scales the masked input by 1/3, 1/3 + 2/3 = 1, 1 + 3/3 = 2 (the authors: 1/3, 2/3, 1)."""
    x, t = images
    ours = explain(toy_method("iscam"), toy, x, t)
    close(ours, _score_cam_by_hand(toy, x, t, [1 / 3, 1.0, 2.0]))
    assert not torch.allclose(ours, _score_cam_by_hand(toy, x, t, [1 / 3, 2 / 3, 1.0]), atol=1e-4)


class Quadratic(nn.Module):
    """y_c = a_c * sum(x^2): dy/dx = 2 a_c x, so at x = 0 SmoothGrad = 2 |a_c| E|e| = 2 |a_c| sigma sqrt(2/pi)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("a", torch.tensor([0.5, -2.0]))

    def forward(self, x):
        return x.pow(2).flatten(1).sum(1, keepdim=True) * self.a


def test_smoothgrad_noise_is_absolute_in_normalised_space():
    model = ModelBundle(name="quad", net=Quadratic(), mean=(0, 0, 0), std=(1, 1, 1), weights="random",
                        weights_sha256=None, layer_sets={"auto": []}, polycam_preset="auto", num_classes=2)
    x, t = torch.zeros(2, 3, 16, 16), torch.tensor([0, 1])
    m = make_method("smoothgrad", nt_samples=200)  # stdev 1.0 (paper)
    maps = explain(m, model, x, t)
    expected = 3 * 2 * torch.tensor([0.5, 2.0]) * 1.0 * math.sqrt(2 / math.pi)  # summed over the 3 channels
    torch.testing.assert_close(maps.mean(dim=(1, 2)), expected, rtol=0.02, atol=0)


# ------------------------------------------------------------------------------------------ RISE

def test_rise_equals_direct_sum_over_masks(toy, images):
    from methods.rise import rise_masks

    x, t = images
    m = toy_method("rise", seed=11)
    masks = rise_masks(60, 4, 0.5, 11, (SIZE, SIZE), "cpu")(torch.arange(60))  # [N, H, W]
    expect = []
    with torch.no_grad():
        for b in range(3):
            p = torch.stack([torch.softmax(toy.net(masks[i] * x[b:b + 1]), 1)[0, t[b]] for i in range(60)])
            expect.append((p @ masks.view(60, -1)).view(SIZE, SIZE) / (60 * 0.5))
    close(explain(m, toy, x, t), torch.stack(expect))


def test_rise_batch_size_does_not_change_the_result(toy, images):
    x, t = images
    ref = explain(toy_method("rise", batch_size=64), toy, x, t)
    for bs in (1, 7):
        close(explain(toy_method("rise", batch_size=bs), toy, x, t), ref)


def test_rise_masks_reproducible_and_as_petsiuk():
    """Same seed, same masks (fresh generator each time); each mask is the reference construction: skimage
    bilinear 'reflect' upsampling of the binary grid to (s + 1) * cell, cropped at the drawn shift."""
    from skimage.transform import resize

    from methods.rise import RiseMasks

    a = RiseMasks(50, 8, 0.1, seed=3, size=(224, 224), device=torch.device("cpu"))
    b = RiseMasks(50, 8, 0.1, seed=3, size=(224, 224), device=torch.device("cpu"))
    c = RiseMasks(50, 8, 0.1, seed=4, size=(224, 224), device=torch.device("cpu"))
    idx = torch.arange(50)
    ma = a(idx)
    assert torch.equal(ma, b(idx)) and not torch.equal(ma, c(idx))
    assert torch.equal(a(idx[10:20]), ma[10:20])  # a chunk is the same masks
    assert abs(float(a.grid.mean()) - 0.1) < 0.05
    for i in (0, 7, 33):
        up = resize(a.grid[i].numpy(), (252, 252), order=1, mode="reflect", anti_aliasing=False)
        oy, ox = int(a.rows[i, 0]), int(a.cols[i, 0])
        assert 0 <= oy < 28 and 0 <= ox < 28
        np.testing.assert_allclose(ma[i].numpy(), up[oy:oy + 224, ox:ox + 224], atol=1e-5)


def test_rise_seed_recorded_and_masks_shared():
    m = toy_method("rise", seed=9)
    assert m.describe()["seed"] == 9
    assert m.masks((SIZE, SIZE), "cpu") is toy_method("rise", seed=9).masks((SIZE, SIZE), "cpu")


# ------------------------------------------------------------------------------------------ Zoom-CAM

def test_zoomcam_two_layer_net_by_hand():
    """A: 1x1 conv 3->2 + ReLU at 4x4; avg-pool to 2x2; B: 1x1 conv 2->2 + ReLU; GAP; Linear 2->2.
    dY/dB_m = W[c,m] / 4; dY/dA_k(i,j) = sum_m W[c,m]/4 * [B_m(p) > 0] * V[m,k] / 4 with p = (i//2, j//2)."""
    U = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0]])   # conv A weights [2, 3]
    V = torch.tensor([[1.0, -0.5], [-1.0, 2.0]])             # conv B weights [2, 2]
    W = torch.tensor([[1.0, 0.5], [-0.5, 1.0]])              # linear [2 classes, 2]
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(2, 2, 1, bias=False),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=False))
    net[0].weight.data = U.view(2, 3, 1, 1)
    net[3].weight.data = V.view(2, 2, 1, 1)
    net[7].weight.data = W
    net = net.eval().requires_grad_(False)
    model = ModelBundle(name="twolayer", net=net, mean=(0, 0, 0), std=(1, 1, 1), weights="random",
                        weights_sha256=None, layer_sets={"auto": ["1", "4"]}, polycam_preset="auto", num_classes=2)
    x = torch.tensor(np.random.default_rng(0).normal(size=(1, 3, 4, 4)), dtype=torch.float32)
    c = 0

    xn = x[0].numpy().astype(np.float64)
    A = np.maximum(np.einsum("kc,chw->khw", U.numpy(), xn), 0)                 # [2, 4, 4]
    P = A.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))                              # [2, 2, 2] average pool
    B = np.maximum(np.einsum("mk,khw->mhw", V.numpy(), P), 0)                   # [2, 2, 2]
    gB = np.broadcast_to(W[c].numpy()[:, None, None] / 4, B.shape)
    gP = np.einsum("mhw,mk->khw", gB * (np.einsum("mk,khw->mhw", V.numpy(), P) > 0), V.numpy())
    gA = np.repeat(np.repeat(gP, 2, axis=1), 2, axis=2) / 4

    def norm(z):
        z = np.maximum(z, 0)
        return (z - z.min()) / (z.max() - z.min() + 1e-8)

    zA, zB = norm((A * gA).sum(0)), norm((B * gB).sum(0))
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])               # bilinear 2 -> 4, align_corners=False
    expect = np.maximum(up @ zB @ up.T, zA)

    calls = []
    h = net.register_forward_pre_hook(lambda *_: calls.append(1))
    ours = explain(make_method("zoomcam"), model, x, torch.tensor([c]))
    h.remove()
    assert len(calls) == 1  # one forward (and one backward) for all layers
    np.testing.assert_allclose(ours[0].numpy(), expect, atol=1e-5)


def test_zoomcam_layers():
    from methods.zoomcam import ZOOMCAM_LAYERS

    assert len(ZOOMCAM_LAYERS["vgg16"]) == 13 and ZOOMCAM_LAYERS["vgg16"][-1] == "features.29"
    assert ZOOMCAM_LAYERS["resnet50"] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert make_method("zoomcam").layers(toy_bundle()) == ["1", "3", "5", "7", "9"]


# ------------------------------------------------------------------------------------------ pretrained model

# The pipeline's setting: EfficientNet-Lite0 at 224 px, quick parameters, the cat photo, 16 insertion steps.
# The Score-CAM family needs 1282 (scorecam, sscam) and 2562 (iscam) forward passes of the network per image on
# its 1280-channel head: the slowest tests of the suite (about a minute each on two CPU cores), run every time.


@pytest.fixture(scope="module")
def pretrained(lite0, cat):
    from metrics.insertion_deletion import blur_baseline, perturbation_curves

    with torch.no_grad():
        t = lite0.net(cat).argmax(1)
    base = blur_baseline(cat)

    def auc(m):
        return float(perturbation_curves(lite0.net, cat, base, m, t, steps=16, mode="insertion", batch_size=32).mean())

    noise = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(0))
    return t, auc, auc(noise)


@pytest.mark.slow
@pytest.mark.parametrize("mid", BASELINES)
def test_pretrained_cat_insertion_beats_noise(lite0, cat, pretrained, mid):
    """Quick parameters through ``Method.__call__`` (as the pipeline calls it): a [1,224,224] float32 map whose
    insertion AUC on the cat photo beats a random map's."""
    t, auc, noise_auc = pretrained
    assert 281 <= int(t) <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    m = make_method(mid, quick=True, seed=0, batch_size=32)  # the pipeline's CPU default
    maps = m(lite0, cat, t)
    assert maps.shape == (1, 224, 224) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert auc(maps) > noise_auc, mid
