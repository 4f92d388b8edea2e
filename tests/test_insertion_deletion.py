"""Insertion/deletion: exact values on a hand-built model, a naive re-implementation, batch-size independence."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from metrics.insertion_deletion import Deletion, Insertion, blur_baseline, perturbation_curves, pixel_ranks


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def linear_model():
    """logit_0 = sum of all input values, logit_1 = 0, so p_0 = sigmoid(sum)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0] = 1.0
        net[1].bias.zero_()
    return net.eval()


def test_exact_curves_on_a_2x2_image():
    # Pixel contributions (sum over channels): (0,0)=1, (0,1)=-1, (1,0)=2, (1,1)=0.5
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, -1.0], [1.0, 0.5]])
    x[0, 1, 1, 0] = 1.0
    saliency = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])  # order: (0,0), (1,0), (1,1), (0,1)
    zero = torch.zeros_like(x)
    target = torch.tensor([0])
    ins = perturbation_curves(linear_model(), x, zero, saliency, target, steps=4, mode="insertion", batch_size=3)
    dele = perturbation_curves(linear_model(), x, zero, saliency, target, steps=4, mode="deletion", batch_size=3)
    exp_ins = [sigmoid(1), sigmoid(3), sigmoid(3.5), sigmoid(2.5)]  # no 0-pixel point: first sample has 1 pixel
    exp_del = [sigmoid(1.5), sigmoid(-0.5), sigmoid(-1), sigmoid(0)]
    torch.testing.assert_close(ins[0].double(), torch.tensor(exp_ins, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(dele[0].double(), torch.tensor(exp_del, dtype=torch.float64), atol=1e-6, rtol=0)
    # AUC is the mean of the samples (rectangle rule), here on 2 steps of 2 pixels:
    ins2 = perturbation_curves(linear_model(), x, zero, saliency, target, steps=2, mode="insertion", batch_size=8)
    assert ins2.mean().item() == pytest.approx((sigmoid(3) + sigmoid(2.5)) / 2, abs=1e-6)


def test_ties_keep_raster_order():
    assert torch.equal(pixel_ranks(torch.zeros(1, 3, 3)), torch.arange(9)[None])
    r = pixel_ranks(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    assert r.tolist() == [[2, 0, 1, 3]]


def hand_blur(x, k=11, sigma=5.0):
    """Gaussian blur written out: normalised 1-D kernel exp(-t^2 / (2 sigma^2)), reflect padding, separable."""
    t = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).float()
    c = x.shape[1]
    pad = torch.nn.functional.pad(x, (k // 2,) * 4, mode="reflect")
    out = torch.nn.functional.conv2d(pad, g.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(out, g.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)


def tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 5)).eval()


def naive_curve(net, x, base, saliency, target, steps, mode):
    """One image, one step at a time: the protocol written as plainly as possible."""
    h, w = saliency.shape
    order = np.argsort(-saliency.flatten().numpy(), kind="stable")
    per = h * w // steps
    out = []
    for s in range(steps):
        mask = np.zeros(h * w, bool)
        mask[order[: per * (s + 1)]] = True
        m = torch.from_numpy(mask.reshape(h, w))
        inp = torch.where(m, x, base) if mode == "insertion" else torch.where(m, base, x)
        with torch.no_grad():
            out.append(torch.softmax(net(inp[None]), 1)[0, target].item())
    return np.array(out)


def test_blur_baseline_is_torchvision_gaussian_blur():
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(blur_baseline(x), hand_blur(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_batched_curves_equal_the_naive_protocol(mode):
    net = tiny_cnn()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 224, 224, generator=g)
    sal = torch.rand(2, 224, 224, generator=g)
    sal[1, :50] = 0.5  # ties
    targets = torch.tensor([1, 4])
    base = blur_baseline(x)
    got = perturbation_curves(net, x, base, sal, targets, steps=224, mode=mode, batch_size=100)
    for b in range(2):
        ref = naive_curve(net, x[b], base[b], sal[b], targets[b].item(), 224, mode)
        np.testing.assert_allclose(got[b].numpy(), ref, atol=1e-5)


def test_result_does_not_depend_on_batch_size():
    net = tiny_cnn()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, 224, 224, generator=g)
    sal = torch.rand(3, 224, 224, generator=g)
    t = torch.tensor([0, 2, 3])
    base = blur_baseline(x)
    runs = [perturbation_curves(net, x, base, sal, t, 32, "deletion", bs) for bs in (1, 7, 32, 96)]
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], atol=1e-6, rtol=0)


def test_metric_objects_follow_the_profile_and_split_per_image(lite0, cat):
    from conftest import random_map

    ins, dele = Insertion(quick=True, batch_size=16), Deletion(quick=True, batch_size=16)
    assert ins.higher_is_better and not dele.higher_is_better
    assert ins.category == dele.category == "faithfulness"
    assert Insertion().params == {"steps": 224, "blur_kernel": 11, "blur_sigma": 5.0}  # the paper's protocol
    assert ins.params["steps"] == ins.curve_length == 16 and Insertion(steps=32).curve_length == 32
    x = torch.cat([cat, cat])
    maps = torch.from_numpy(np.stack([random_map(0), random_map(1)]))
    t = torch.tensor([285, 285])
    together = ins.compute(lite0, x, maps, t)
    alone = ins.compute(lite0, x[1:], maps[1:], t[1:])
    assert together["curve"].shape == (2, 16)
    torch.testing.assert_close(together["value"], together["curve"].mean(1))
    torch.testing.assert_close(together["curve"][1:], alone["curve"], atol=1e-5, rtol=0)
