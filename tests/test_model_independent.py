"""The model-independent baselines (the floor of the tables): exact values of the centre prior and of the Sobel
edge map on hand-made images, the random map's seed rule, its independence from the batch and its dependence on
the seed; none needs a model pass, none is a constant map, none is a default sanity-check method."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.core.profiles import PROFILES
from methods import METHODS, Cost, make_method
from methods.baselines import image_key

FLOOR = ("random_map", "centre_prior", "edge_map")
MODEL = SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.5))  # all the formulas read


def normalise(x01):
    return (x01 - torch.tensor(MODEL.mean).view(1, 3, 1, 1)) / torch.tensor(MODEL.std).view(1, 3, 1, 1)


def images(n, size=16, seed=0):
    return normalise(torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed)))


def test_registered_as_baselines_without_model_passes():
    assert set(FLOOR) <= set(METHODS)
    for mid in FLOOR:
        m = make_method(mid)
        assert m.family == "baseline" and not m.needs_grad and m.citation
        assert m.cost(None) == Cost() and m.describe()["rule"]
    for profile in PROFILES.values():  # the sanity check never picks them by default
        assert not set(profile.sanity_methods) & set(FLOOR)


def test_centre_prior_is_the_gaussian_formula():
    x = images(2, size=8)
    got = make_method("centre_prior", sigma=0.5)(MODEL, x, torch.zeros(2, dtype=torch.long), size=8)
    i = np.arange(8) - 3.5
    d2 = i[:, None] ** 2 + i[None, :] ** 2
    want = np.exp(-d2 / (2 * 4.0 ** 2))  # s = 0.5 * 8
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-6)
    assert torch.equal(got[0], got[1])  # the same map for every image
    quick = make_method("centre_prior", quick=True)
    assert quick.params == {"sigma": 0.25}
    full = quick(MODEL, images(1, size=224), torch.zeros(1, dtype=torch.long))[0].double().numpy()
    assert full[111, 111] == full[112, 112] == full.max() and full.min() < 0.02  # corners exp(-3.96) ~ 0.019
    assert full[0, 0] == pytest.approx(np.exp(-2 * 111.5 ** 2 / (2 * 56.0 ** 2)), rel=1e-6)


def test_edge_map_is_the_sobel_magnitude_of_the_channel_mean():
    """A vertical step (0 left of column 3, 1 from it) in all three channels: |Gx| = 1 + 2 + 1 = 4 on the two
    columns beside the step, 0 elsewhere (borders replicated, so the frame is no edge); a diagonal ramp in one
    channel: the channel mean is v/3, Gx = Gy = 8/3 * slope inside."""
    step = torch.zeros(1, 3, 6, 6)
    step[..., 3:] = 1.0
    got = make_method("edge_map")(MODEL, normalise(step), torch.zeros(1, dtype=torch.long), size=6)[0]
    want = torch.zeros(6, 6)
    want[:, 2:4] = 4.0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    ramp = torch.zeros(1, 3, 6, 6)
    ramp[0, 1] = (torch.arange(6)[:, None] + torch.arange(6)[None, :]).float() * 0.1  # slope 0.1 along both axes
    got = make_method("edge_map")(MODEL, normalise(ramp), torch.zeros(1, dtype=torch.long), size=6)[0]
    inner = np.sqrt(2) * 8 * 0.1 / 3  # Gx = (1 + 2 + 1) * 2 * slope / 3, the same for Gy
    np.testing.assert_allclose(got[1:-1, 1:-1].numpy(), inner, rtol=1e-5)


def test_random_map_follows_its_seed_rule_and_not_the_batch():
    x = images(3)
    t = torch.zeros(3, dtype=torch.long)
    m = make_method("random_map", seed=7)
    batch = m(MODEL, x, t, size=16)
    alone = m(MODEL, x[2:3], t[:1], size=16)
    reordered = m(MODEL, x.flip(0), t, size=16)
    assert torch.equal(batch[2], alone[0]) and torch.equal(batch[2], reordered[0])  # batch does not matter
    key = hashlib.sha256(np.ascontiguousarray(x[2].numpy()).tobytes()).hexdigest()
    s = int.from_bytes(hashlib.sha256(f"7:{key}:random_map".encode()).digest()[:8], "big") & (2 ** 63 - 1)
    assert torch.equal(batch[2], torch.rand((16, 16), generator=torch.Generator().manual_seed(s)))
    assert not torch.equal(batch[0], batch[1])  # another image, another map
    assert not torch.equal(make_method("random_map", seed=8)(MODEL, x, t, size=16)[2], batch[2])  # another seed
    assert 0 <= float(batch.min()) and float(batch.max()) < 1


def test_same_image_key_as_max_sensitivity():
    from metrics.sensitivity import image_key as sens_key

    x = images(1)[0]
    assert image_key(x) == sens_key(x)


def test_no_floor_map_is_rejected_as_constant():
    from runners.maps import bad_maps

    x = images(2, size=32)
    t = torch.zeros(2, dtype=torch.long)
    for mid in FLOOR:
        maps = make_method(mid)(MODEL, x, t, size=32).numpy()
        assert maps.shape == (2, 32, 32) and bad_maps(maps) == {}, mid
