"""CALM's evaluations as the authors' code runs them (the ``calm`` protocol) and the harness's own choices (the
``harness`` protocol), one test per choice on small fabricated inputs, against values by hand or a naive
re-implementation of the authors' code (github.com/naver-ai/calm); the CAM baseline, the heads' initialisation,
the missing score maps, InceptionV3 and the checkpoint warning."""

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from benchmark.data.sources import ImageSource
from benchmark.models.bundle import ModelBundle
from benchmark.models.calm import CalmMethodWarning, CalmNet, calm_loss, init_heads
from methods.base import Method
from methods.calm import normalize_map, score_maps
from runners.calm_protocol import CUE_CHOICES, RC_CHOICES, image_tensor, resolve
from runners.calm_synthetic import small_trunk
from tests.test_calm import authors_resnet50_state_dict, hand_case, make_fake_cub, small_bundle

# ------------------------------------------------------------------------------------------------ fixtures

class MemorySource(ImageSource):
    description = "images in memory"

    def __init__(self, images: dict):
        self.names, self.images = list(images), images

    def open(self, name):
        return self.images[name]


class ChannelSum(nn.Module):
    """Class c's logit = the mean of channel c of the normalised image: erasing (zeroing) the brightest pixels of a
    channel lowers its class."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class ChannelMap(Method):
    """The explained class's channel of the normalised image ([-1, 1]); ``norm`` as CALM's (clipping: the negative
    half becomes 0, a tie)."""

    id = "channel_map"
    paper_params = {"norm": "clipping"}

    def explain(self, model, x, targets):
        return normalize_map(x[torch.arange(len(x)), targets], self.params["norm"])


def toy_model():
    return ModelBundle(name="toy", net=ChannelSum(), mean=(0.5,) * 3, std=(0.5,) * 3, weights="random",
                       weights_sha256=None, layer_sets={"auto": []}, polycam_preset="auto", num_classes=3)


def toy_images(n=12, seed=0):
    """Small noise images whose channel i % 3 is brighter: by 10 grey levels for even i (labelled i % 3, a top-1 a
    little erasure removes), by 40 for odd i (labelled (i + 1) % 3: the label is not the top-1, which survives more
    erasure)."""
    rng = np.random.default_rng(seed)
    images, labels = {}, []
    for i in range(n):
        a = rng.integers(40, 200, (20, 24, 3))
        a[..., i % 3] += 10 if i % 2 == 0 else 40
        images[f"im{i}.png"] = Image.fromarray(a.clip(0, 255).astype(np.uint8))
        labels.append(i % 3 if i % 2 == 0 else (i + 1) % 3)
    return MemorySource(images), labels


def official_remove_classify(net, inputs, gts, raw_maps, seed, batch_size, ks=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """The authors' eval_remove_classify.py loop re-implemented naively: ground truth explained and counted, the
    raw maps ranked with topk(k=H*W), random pixels from numpy's global generator seeded once, batch by batch."""
    rs = np.random.RandomState(seed)
    top, rnd = {k: [] for k in ks}, {k: [] for k in ks}
    for s in range(0, len(inputs), batch_size):
        x, y, mu = inputs[s:s + batch_size], gts[s:s + batch_size], raw_maps[s:s + batch_size][:, None]
        b, _, h, w = mu.shape
        for method in ("topk", "random"):
            for k in ks:
                mask = torch.ones(b, h * w)
                if method == "topk":
                    mask.scatter_(1, mu.view(b, -1).topk(k=h * w, dim=1)[1][:, :int(k * h * w)], 0.0)
                else:
                    idx = torch.tensor(np.array([rs.choice(h * w, size=int(h * w * k), replace=False)
                                                 for _ in range(b)]))
                    mask.scatter_(1, idx, 0.0)
                mask = mask.view(b, 1, h, w)
                pred = net(x * mask + torch.zeros_like(x) * (1 - mask)).max(dim=1)[1].eq(y).tolist()
                (top if method == "topk" else rnd)[k] += pred
    return {k: sum(top[k]) / sum(rnd[k]) for k in ks}


def authors_transform(img):
    """The authors' test transform: torchvision Resize((224, 224)) on the PIL image, ToTensor."""
    from benchmark.models.tv_compat import import_torchvision

    T = import_torchvision().transforms
    return T.Compose([T.Resize((224, 224)), T.ToTensor()])(img)


# ------------------------------------------------------------------------------------------------ the protocols

def test_protocols_name_their_choices():
    calm, harness = resolve(RC_CHOICES, "calm"), resolve(RC_CHOICES, "harness")
    assert calm == {"name": "calm", "target": "label", "maps": "raw", "ranking": "topk", "resize": "pil",
                    "random": "numpy"}
    assert harness == {"name": "harness", "target": "top1", "maps": "normalised", "ranking": "stable",
                       "resize": "torch", "random": "per-image"}
    assert resolve(RC_CHOICES, "calm", target="top1")["name"] == "custom"
    assert resolve(RC_CHOICES, "harness", target=None) == harness
    assert resolve(CUE_CHOICES, "calm") == {"name": "calm", "test_images": "calm", "resize": "pil",
                                            "normalise": "difference", "histograms": "accumulate"}
    assert resolve(CUE_CHOICES, "harness") == {"name": "harness", "test_images": "split", "resize": "torch-antialias",
                                               "normalise": "per-map", "histograms": "reset"}
    with pytest.raises(ValueError, match="--histograms must be one of"):
        resolve(CUE_CHOICES, "calm", histograms="sometimes")


# 1 (and 2 for remove-and-classify) ------------------------------------------------------------------------

def test_rc_calm_protocol_equals_the_authors_loop_and_the_target_changes_the_ratio():
    """Choice 1: the authors explain and count the ground-truth label. On the toy classifier the calm protocol's
    ratios equal the naive re-implementation of their loop exactly (raw maps, topk, PIL resize, numpy draws with
    batch size 4); explaining and counting the clean top-1 instead (the same loop with the top-1 as the label)
    changes them: at k = 0.3, 0 of the 6 labelled images survive the top-k erasure against 6 of 12 top-1s."""
    from runners.remove_classify import remove_classify

    model, method = toy_model(), ChannelMap()
    source, labels = toy_images()
    calm = remove_classify(model, method, source, source.names, labels, resolve(RC_CHOICES, "calm"), seed=3,
                           batch_size=4)
    x = model.normalize(torch.stack([authors_transform(source.open(n)) for n in source.names]))
    gts = torch.tensor(labels)
    expected = official_remove_classify(model.net, x, gts, x[torch.arange(len(x)), gts], seed=3, batch_size=4)
    assert calm["ratios"] == pytest.approx(expected, abs=0, rel=0)
    top1 = remove_classify(model, method, source, source.names, labels,
                           resolve(RC_CHOICES, "calm", target="top1"), seed=3, batch_size=4)
    assert (calm["targets"] != calm["clean_top1"]).sum() == 6  # the odd images
    pred = model.net(x).argmax(1)
    assert top1["ratios"] == pytest.approx(official_remove_classify(model.net, x, pred, x[torch.arange(len(x)), pred],
                                                                    seed=3, batch_size=4), abs=0, rel=0)
    assert (calm["ratios"][0.3], top1["ratios"][0.3]) == (0.0, 0.5)
    assert np.array_equal(top1["targets"], top1["clean_top1"])


class RowsNet(nn.Module):
    """Class 0's logit: the mean of channel 0 over rows 23-156 (region C); class 1's: 0.5."""

    def forward(self, x):
        c = x[:, 0, 23:157].mean(dim=(1, 2))
        return torch.stack([c, torch.full_like(c, 0.5)], dim=1)


class ThreeBands(Method):
    """The same map for every image: rows 0-22 (A) 1.0, rows 23-156 (C) -0.5, rows 157-223 (B) -0.1."""

    id = "three_bands"
    paper_params = {"norm": "clipping"}

    def explain(self, model, x, targets):
        m = torch.full((len(x), 224, 224), -0.5)
        m[:, :23], m[:, 157:] = 1.0, -0.1
        return normalize_map(m, self.params["norm"])


def test_rc_raw_versus_normalised_maps():
    """Choice 2 in remove-and-classify: the authors rank the raw maps. Grey images with channel 0 at 200/255
    (0.569 normalised) are class 0 (0.569 > 0.5). Raw, k = 0.3 (15052 pixels) erases A (5152) and 9900 pixels of
    B: C is untouched, the image stays class 0. The clipping norm makes B and C equal (0): 9900 pixels are taken
    among them and C loses some (its mean falls below 0.5 as soon as it loses 12 % of its 30016 pixels). At
    k = 0.1 both erase A only."""
    from runners.remove_classify import remove_classify

    model = ModelBundle(name="rows", net=RowsNet(), mean=(0.5,) * 3, std=(0.5,) * 3, weights="random",
                        weights_sha256=None, layer_sets={"auto": []}, polycam_preset="auto", num_classes=2)
    grey = np.full((16, 16, 3), 200, np.uint8)
    source = MemorySource({f"g{i}.png": Image.fromarray(grey) for i in range(3)})
    for ranking in ("topk", "stable"):
        calm = resolve(RC_CHOICES, "calm", ranking=ranking)
        raw = remove_classify(model, ThreeBands(), source, source.names, [0, 0, 0], calm)
        norm = remove_classify(model, ThreeBands(), source, source.names, [0, 0, 0], {**calm, "maps": "normalised"})
        assert raw["curves"][:, :2].tolist() == [[1, 1]] * 3, ranking
        assert norm["curves"][:, :2].tolist() == [[1, 0]] * 3, ranking


def test_rc_harness_protocol_equals_the_metrics_stage():
    """``remove-classify --protocol harness`` gives the metrics stage's ``remove_classify`` bits on the same maps."""
    from metrics.remove_and_classify import RemoveAndClassify
    from runners.remove_classify import remove_classify

    model, method = toy_model(), ChannelMap()
    source, labels = toy_images(6)
    res = remove_classify(model, method, source, source.names, None, resolve(RC_CHOICES, "harness"), seed=1,
                          batch_size=4)
    x = model.normalize(torch.stack([image_tensor(source.open(n), "torch") for n in source.names]))
    top1 = model.net(x).argmax(1)
    stage = RemoveAndClassify(seed=1, batch_size=4).compute(model, x, method(model, x, top1), top1)
    assert np.array_equal(res["curves"], stage["curve"].numpy())


# 2 (cue localization) ---------------------------------------------------------------------------------------

class FixedMaps(Method):
    """Two fixed 224x224 maps, one per class (left half, right half values), normalised with ``norm``."""

    id = "fixed_maps"
    paper_params = {"norm": "minmax", "values": [[3.0, 1.0], [1.0, 2.0]]}

    def explain(self, model, x, targets):
        out = torch.empty(len(x), 224, 224)
        for i, t in enumerate(targets.tolist()):
            left, right = self.params["values"][t]
            out[i, :, :112], out[i, :, 112:] = left, right
        return normalize_map(out, self.params["norm"])


def test_cue_normalisation_order_by_hand():
    """Choice 2: the authors normalise |R1 - R2| of the raw maps. minmax maps R1 = (3 | 1), R2 = (1 | 2) (left |
    right half): normalised first, (1 | 0) - (0 | 1) is 1 everywhere, a constant map, which the clipping norm
    makes 0: the cue score is 0 everywhere; normalised after, |R1 - R2| = (2 | 1) -> (1 | 0): off by 1.0 on the
    left half. Clipping maps already in [0, 1], (0.8 | 0.2) and (0.3 | 0.6), give (0.5 | 0.4) either way."""
    from runners.cue_localization import pair_scores

    x = torch.zeros(1, 3, 8, 8)
    calm, harness = resolve(CUE_CHOICES, "calm"), resolve(CUE_CHOICES, "harness")
    minmax = FixedMaps()
    after = pair_scores(None, minmax, x, 0, 1, calm)[0]
    before = pair_scores(None, minmax, x, 0, 1, harness)[0]
    assert (after[:, :112] == 1.0).all() and (after[:, 112:] == 0.0).all()
    assert (before == 0.0).all()
    clip = FixedMaps(norm="clipping", values=[[0.8, 0.2], [0.3, 0.6]])
    a, b = pair_scores(None, clip, x, 0, 1, calm)[0], pair_scores(None, clip, x, 0, 1, harness)[0]
    assert np.allclose(a[:, :112], 0.5, atol=1e-7) and np.allclose(a[:, 112:], 0.4, atol=1e-7)
    assert np.array_equal(a, b)


# 3 ----------------------------------------------------------------------------------------------------------

def test_pil_resize_is_the_authors_resize():
    """Choice 3: under the calm protocol an image is resized as the authors' test transform (torchvision's Resize
    on the PIL image, then ToTensor): equal to the bit. The harness's antialiased torch resize of the float tensor
    differs (by up to 0.0038 here: PIL rounds its result to 8 bits, its filter weights differ slightly)."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8))
    ours = image_tensor(img, "pil")
    assert torch.equal(ours, authors_transform(img))
    assert (ours - image_tensor(img, "torch-antialias")).abs().max() > 0.002
    small = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))  # enlarged, as most CUB thumbnails
    assert torch.equal(image_tensor(small, "pil"), authors_transform(small))


# 4 ----------------------------------------------------------------------------------------------------------

def official_pxap(true_hist, false_hist):
    """The authors' MaskEvaluator.compute, naively."""
    tp = true_hist[::-1].cumsum()
    fn = true_hist.sum() - tp
    fp = false_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 100 * (precision[1:] * np.diff(recall))[nonzero[1:]].sum()


def test_cue_histograms_accumulated_versus_reset_on_the_fake_cub(tmp_path):
    """Choice 4: the authors accumulate the histograms over every pair (and group) without reset. On the fake CUB
    (pairs (0, 1), (0, 2), (1, 2) in groups 1, 2, 3): the first pair is the same either way; the second pair's
    accumulated PxAP is that of both pairs' pixels, its reset PxAP that of its own, both as the naive evaluator
    computes them."""
    from methods import make_method
    from metrics.cue_localization import threshold_list
    from runners.cue_localization import cue_localization, pair_scores

    make_fake_cub(tmp_path)
    model = small_bundle()
    method = make_method("calm_em")
    calm = resolve(CUE_CHOICES, "calm", test_images="split")
    acc = cue_localization(model, method, tmp_path, protocol=calm, batch_size=4)
    reset = cue_localization(model, method, tmp_path, protocol={**calm, "histograms": "reset", "name": "custom"},
                             batch_size=4)
    from benchmark.data.cub import CUB

    cub = CUB(tmp_path, "split")
    edges = np.append(threshold_list(), [1.0, 2.0, 3.0])
    hists = []
    for c1, c2 in ((0, 1), (0, 2)):
        diff = cub.differing_parts(c1, c2)
        t, f = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
        for im in cub.test_images((c1, c2)):
            gt = cub.cue_mask(im, diff)
            x = model.normalize(image_tensor(cub.open(im), "pil")[None])
            s = pair_scores(model, method, x, c1, c2, calm)[0]
            t += np.histogram(s[gt == 1], bins=edges)[0]
            f += np.histogram(s[gt == 0], bins=edges)[0]
        hists.append((t, f))
    first = official_pxap(*hists[0])
    assert acc["pairs"][1][0][2] == pytest.approx(first, abs=1e-9) == reset["pairs"][1][0][2]
    assert acc["pairs"][2][0][2] == pytest.approx(official_pxap(hists[0][0] + hists[1][0], hists[0][1] + hists[1][1]),
                                                  abs=1e-9)
    assert reset["pairs"][2][0][2] == pytest.approx(official_pxap(*hists[1]), abs=1e-9)
    assert acc["pairs"][2][0][2] != pytest.approx(reset["pairs"][2][0][2], abs=1e-3)
    assert acc["fix"].startswith("histograms accumulated") and reset["fix"].startswith("histograms reset")


# 5 ----------------------------------------------------------------------------------------------------------

def test_official_head_initialisation_by_hand():
    """Choice 5: the reference initialises both heads as every convolution of its model: Xavier-uniform,
    bound sqrt(6 / (fan_in + fan_out)), for ResNet50 (and InceptionV3), He-normal with fan-out, std sqrt(2 / fan_out),
    for VGG16; biases 0. Drawn from a generator seeded with the seed, class head first. ``classifier`` keeps the
    harness's start: the classifier's fc and a uniform cue head."""
    for arch in ("resnet50", "vgg16"):
        net = CalmNet(small_trunk(4), 8, 5, "em", arch)
        init_heads(net, seed=7)
        g = torch.Generator().manual_seed(7)
        if arch == "vgg16":
            w1 = torch.empty(5, 8, 1, 1).normal_(0, math.sqrt(2 / 5), generator=g)
            w2 = torch.empty(1, 8, 1, 1).normal_(0, math.sqrt(2 / 1), generator=g)
        else:
            w1 = torch.empty(5, 8, 1, 1).uniform_(-math.sqrt(6 / 13), math.sqrt(6 / 13), generator=g)
            w2 = torch.empty(1, 8, 1, 1).uniform_(-math.sqrt(6 / 9), math.sqrt(6 / 9), generator=g)
        assert torch.allclose(net.conv_last.weight, w1, atol=1e-7, rtol=0), arch
        assert torch.allclose(net.attention[0].weight, w2, atol=1e-7, rtol=0), arch
        assert not net.conv_last.bias.any() and not net.attention[0].bias.any()
        assert net.head_init == "official"
    fc = nn.Linear(8, 5)
    init_heads(net, fc, seed=7, mode="classifier")
    assert torch.equal(net.conv_last.weight[:, :, 0, 0], fc.weight) and torch.equal(net.attention[0].bias,
                                                                                    torch.ones(1))
    assert not net.attention[0].weight.any() and net.head_init == "classifier"


# 6 ----------------------------------------------------------------------------------------------------------

def test_topk_ranking_among_ties():
    """Choice 6: the authors rank with torch.topk(k=H*W) (get_topk_to_zero_mask); among equal values its order is
    the kernel's, not raster order. A map with 16 cells at 1 and the rest at 0 (p(z|x) = 0 after ReLU): k = 0.5
    erases the 16 and 112 of the zeros; which zeros differs between topk and the stable sort."""
    from metrics.remove_and_classify import topk_masks

    maps = torch.zeros(1, 16, 16)
    maps[0, 4:8, 4:8] = 1.0
    official = torch.ones(1, 256)
    official.scatter_(1, maps.view(1, -1).topk(k=256, dim=1)[1][:, :128], 0.0)  # their mask: 0 = erased
    ours = topk_masks(maps, ks=(0.5,), ranking="topk")[0, 0]
    assert torch.equal(ours.flatten(), official[0] == 0)
    stable = topk_masks(maps, ks=(0.5,), ranking="stable")[0, 0]
    assert stable[4:8, 4:8].all() and ours[4:8, 4:8].all()
    raster_zeros = torch.nonzero((maps[0] == 0).flatten()).flatten()[:112]
    assert torch.equal(torch.nonzero(stable.flatten() & (maps[0] == 0).flatten()).flatten(), raster_zeros)
    assert not torch.equal(ours, stable)


# 7 ----------------------------------------------------------------------------------------------------------

def test_cub_test_images_from_the_authors_list(tmp_path):
    """Choice 7: the authors' list of 5794 test images (shipped) decides the test images, in its order; CUB's
    train_test_split.txt is the harness's option. On a fake CUB whose split marks other images as test, the two
    differ."""
    from benchmark.data.cub import CALM_TEST_LIST, CUB

    lines = CALM_TEST_LIST.read_text().splitlines()
    assert len(lines) == 5794 and lines[0] == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    make_fake_cub(tmp_path)
    cub = CUB(tmp_path, "split")
    assert [im.path for im in cub.test_images((0, 1, 2))] == [im.path for im in cub.images]
    listed = [cub.images[4].path, cub.images[1].path]  # a list of two: the order is the list's
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    assert [im.path for im in CUB(tmp_path, tmp_path / "list.txt").test_images((0, 1, 2))] == listed
    with pytest.raises(Exception, match="not in"):
        CUB(tmp_path, "calm")  # the fake CUB has none of the authors' images


# 8 and the CAM baseline -------------------------------------------------------------------------------------

def test_authors_checkpoint_method_is_stated_with_a_warning(tmp_path):
    """Choice 8: CAM, CALM-EM and CALM-ML checkpoints of the authors have the same keys. Loaded as the model name
    states, with a warning that says the keys cannot tell; without a stated method, refused."""
    from benchmark.models import ModelError, load_model

    sd = authors_resnet50_state_dict()
    path = tmp_path / "last_checkpoint.pth.tar"
    torch.save({"architecture": "resnet50", "state_dict": sd}, path)
    with pytest.warns(CalmMethodWarning, match="cannot be told from the checkpoint's keys.*loaded as CAM"):
        cam = load_model("calm_cam_resnet50", str(path), channels_last=False)
    assert cam.net.loss == "cam" and "keys cannot tell" in cam.describe()["calm"]["method_source"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f, _ = cam.net.heads(x)
        assert torch.allclose(cam.net(x), torch.log_softmax(f.mean(dim=(2, 3)), 1), atol=1e-6)
    with pytest.warns(CalmMethodWarning, match="loaded as CALM-EM"):
        assert load_model("calm_em_resnet50", str(path), channels_last=False).net.loss == "em"
    with pytest.raises(ModelError, match="calm_cam_resnet50"):
        load_model("calm_resnet50", str(path))


def test_cam_baseline_loss_forward_and_map_by_hand():
    """The reference's CAM baseline on the same trunk: p(y|x) = softmax(mean_z f), loss -log p(y*|x), map f_y. On
    the hand case (f = (0, ln 3) and (0, 0)): mean f = (ln 3 / 2, 0), p(y=0|x) = sqrt 3 / (sqrt 3 + 1)."""
    f, a = hand_case()
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)
    assert calm_loss("cam", f, a, torch.tensor([0])).item() == pytest.approx(-math.log(p0), rel=1e-12)
    assert calm_loss("cam", f, a * 0 + 5, torch.tensor([0])) == calm_loss("cam", f, a, torch.tensor([0]))  # no cue
    from methods import NotApplicable, make_method

    b = small_bundle("cam")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        s = b.net.scores(x)
    t = torch.tensor([1, 2])
    m = make_method("calm_cam").explain(b, x, t)
    ft = s["f"][torch.arange(2), t]
    lo = ft.amin(dim=(1, 2), keepdim=True)
    assert torch.allclose(m, (ft - lo) / (ft - lo).amax(dim=(1, 2), keepdim=True), atol=1e-6)
    with pytest.raises(NotApplicable, match="CAM"):
        make_method("calm_em").check_applicable(b)


def test_train_cam_baseline_then_load(tmp_path):
    from runners.calm_synthetic import make_synthetic
    from runners.calm_train import TrainConfig, train_calm

    data = make_synthetic(16, 3, classes=2, size=32)
    ds = torch.utils.data.TensorDataset(data["x"], data["y"])
    torch.manual_seed(0)
    model = CalmNet(small_trunk(4), 8, 2, "em", "small")
    attention = model.attention[0].weight.detach().clone()
    res = train_calm(TrainConfig(out=str(tmp_path), loss="cam", epochs=2, batch_size=8, lr=0.01, schedule="constant",
                                 progress=False), model, ds, (0.5,) * 3, (0.5,) * 3, log=lambda *_: None)
    assert res["epochs_done"] == 2 and res["history"][-1]["loss"] < res["history"][0]["loss"]
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["meta"]["loss"] == "cam"
    assert torch.equal(ck["state_dict"]["attention.0.weight"], attention)  # unused by CAM: never trained


# the missing maps -------------------------------------------------------------------------------------------

def test_superclass_and_vanilla_saliency_maps_as_the_reference():
    """The reference's get_cam: vanilla-saliency = sum_c minmax(f_c); <m>-superclass = sum over the superclass of
    the maps (minmax(f_c) for vanilla); -mean divides by its size. Groups {0, 1} and {2, 3} of a 4-class model,
    checked against the reference's loops re-implemented naively."""
    b = small_bundle(classes=4)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        s = b.net.scores(x)
    groups = [[0, 1], [2, 3]]
    y = torch.tensor([1, 2])

    def mm(m):
        m = m - m.min()
        return m / m.max()

    gt = s["joint"] / (s["p_y"][:, :, None, None] + 1e-10)
    for i, label in enumerate(y.tolist()):
        sub = groups[label // 2]
        with torch.no_grad():
            got = {k: score_maps(b.net, x, y, k, groups)[i, 0] for k in
                   ("vanilla-saliency", "vanilla-superclass", "jointll-superclass", "jointll-superclass-mean",
                    "gtcond-superclass", "gtcond-superclass-mean")}
        assert torch.allclose(got["vanilla-saliency"], sum(mm(s["f"][i, c]) for c in range(4)), atol=1e-6)
        assert torch.allclose(got["vanilla-superclass"], sum(mm(s["f"][i, c]) for c in sub), atol=1e-6)
        assert torch.allclose(got["jointll-superclass"], sum(s["joint"][i, c] for c in sub), atol=1e-7)
        assert torch.allclose(got["jointll-superclass-mean"], sum(s["joint"][i, c] / 2 for c in sub), atol=1e-7)
        assert torch.allclose(got["gtcond-superclass"], sum(gt[i, c] for c in sub), atol=1e-6)
        assert torch.allclose(got["gtcond-superclass-mean"], sum(gt[i, c] / 2 for c in sub), atol=1e-6)
    as_dict = {"1": [0, 1], "2": [2, 3]}  # the reference's superclass[label] form
    assert torch.equal(score_maps(b.net, x, y, "jointll-superclass", as_dict),
                       score_maps(b.net, x, y, "jointll-superclass", groups))
    from methods import MethodError, make_method

    m = make_method("calm_em", score_map="jointll-superclass", superclass=groups, norm="none").explain(b, x, y)
    assert torch.allclose(m, score_maps(b.net, x, y, "jointll-superclass", groups)[:, 0])
    with pytest.raises(MethodError, match="superclass"):
        make_method("calm_em", score_map="jointll-superclass").explain(b, x, y)


# InceptionV3 ------------------------------------------------------------------------------------------------

def test_inception_v3_backbone_uses_mixed_6e_and_loads_the_authors_layout(tmp_path):
    """The reference's InceptionV3 crashes at construction and feeds Mixed_6d's output to A3_1b; ours runs, reads
    Mixed_6e (changing its weights changes the output), keeps the reference's key names (an authors'-layout file
    loads, with or without batch norms) and gives 8x8 (large) or 4x4 (reference) maps at 64 px (28 and 14 at 224)."""
    from benchmark.models.calm import InceptionTrunk, calm_from_checkpoint, to_authors_layout

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for fm, side in (("large", 8), ("reference", 4)):
            assert InceptionTrunk(fm).eval()(x).shape == (1, 1024, side, side)
        trunk = InceptionTrunk("large").eval()
        before = trunk(x)
        trunk.Mixed_6e.branch_pool.conv.weight.mul_(2.0)
        assert not torch.allclose(trunk(x), before)
    for use_bn in (False, True):
        net = CalmNet(InceptionTrunk("large", use_bn), 1024, 3, "em", "inception_v3", "large")
        path = tmp_path / f"bn{use_bn}.pth.tar"
        torch.save({"architecture": "inception_v3", "state_dict": to_authors_layout(net.state_dict())}, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalmMethodWarning)
            loaded, info = calm_from_checkpoint(path, "em")
        assert info["backbone"] == "inception_v3" and loaded.backbone.use_bn == use_bn
        assert torch.equal(loaded.backbone.A3_1b[0].weight, net.backbone.A3_1b[0].weight)
        assert "A3_1b.0.weight" in to_authors_layout(net.state_dict())


# end to end -------------------------------------------------------------------------------------------------

def test_remove_classify_command_and_table(tmp_path, photo_folder):
    """remove-classify under the calm protocol on three photos (labels in a file), and under the harness protocol,
    then the tables: one row per protocol, and the JSON records every choice. A second run into the same folder
    with other settings is refused."""
    import json

    import pandas as pd

    from conftest import run_cli

    folder, lst, names = photo_folder
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{n} {k}\n" for k, n in enumerate(names)))
    out = tmp_path / "rc"
    common = ["--model", "mobilenet_v3_small", "--weights", "random", "--data", folder, "--image-list", lst,
              "--labels", labels, "--methods", "gradcam", "--batch-size", "2", "--out", out, "--no-progress"]
    r = run_cli("remove-classify", *common, "--protocol", "calm")
    assert r.returncode == 0, r.stderr[-2000:]
    from runners.remove_classify import run_remove_classify

    run_remove_classify("mobilenet_v3_small", "random", str(folder), str(lst), ["gradcam"],
                        resolve(RC_CHOICES, "harness"), out=str(out), batch_size=2, progress=False, echo=print)
    run = out / "mobilenet_v3_small-random"
    full = json.loads((run / "remove_classify_calm.json").read_text())
    assert full["protocol"]["name"] == "calm" and full["protocol"]["target"]["value"] == "label"
    assert full["protocol"]["ranking"] == {"value": "topk", "authors": "topk", "harness": "stable",
                                           "meaning": full["protocol"]["ranking"]["meaning"]}
    assert full["labels"]["file"] == str(labels) and full["methods"]["gradcam"]["n"] == 3
    assert pd.read_csv(run / "csv" / "rc_calm_details_mobilenet_v3_small-random_gradcam.csv",
                       index_col=0).shape == (3, 10)
    from benchmark.outputs.tables import build_results_tables

    built = build_results_tables(out)
    table = built["tables"]["remove_classify"]
    assert sorted(table.data["protocol"]) == ["calm", "harness"] and set(table.data["method"]) == {"gradcam"}
    assert table.header[:4] == ["model", "method", "protocol", "n"]
    assert built["disagree"] == [] and not any("rc_" in line for line in built["unchecked"])

    # the files are vouched for by the sha256 remove_classify_<protocol>.json records: an edit is left out, named
    details = run / "csv" / "rc_calm_details_mobilenet_v3_small-random_gradcam.csv"
    good = details.read_text()
    lines = good.splitlines()
    lines[1] = lines[1][:-1] + ("0" if lines[1][-1] == "1" else "1")  # one correctness bit flipped
    details.write_text("\n".join(lines) + "\n")
    built = build_results_tables(out)
    assert list(built["tables"]["remove_classify"].data["protocol"]) == ["harness"]
    (line,) = built["disagree"]
    assert line.startswith("mobilenet_v3_small-random: rc_calm_details_mobilenet_v3_small-random_gradcam.csv is not "
                           "the file `remove-classify` wrote (its sha256 is not the one remove_classify_calm.json "
                           "records)")
    r = run_cli("tables", "--out", out)
    assert r.returncode == 1 and "rc_calm_details" in r.stderr
    status = run_cli("status", out)
    assert status.returncode == 1 and "DISAGREES: rc_calm_details_mobilenet_v3_small-random_gradcam.csv" in \
        status.stdout
    details.write_text(good)
    assert run_cli("tables", "--out", out).returncode == 0
    del full["methods"]["gradcam"]["csv_sha256"]  # a record of an older harness: shown, named as not checked
    (run / "remove_classify_calm.json").write_text(json.dumps(full))
    built = build_results_tables(out)
    assert sorted(built["tables"]["remove_classify"].data["protocol"]) == ["calm", "harness"]
    assert built["disagree"] == [] and any("rc_calm_details_mobilenet_v3_small-random_gradcam.csv: "
                                           "remove_classify_calm.json records no sha256 of it" in line
                                           for line in built["unchecked"])
    bad = run_cli("remove-classify", *common[:-1], "--protocol", "calm", "--seed", "5")
    assert bad.returncode == 2 and "other settings" in bad.stderr


def test_remove_classify_records_each_method_as_it_finishes(tmp_path, photo_folder):
    """A remove-classify run that fails on its second method keeps the first one's record (with the sha256 the
    tables check its files against): its files are tabled, checked, not listed as unvouched."""
    import json

    from benchmark.outputs.tables import build_results_tables
    from methods.base import MethodError
    from runners.remove_classify import run_remove_classify

    folder, lst, _ = photo_folder
    out = tmp_path / "rc"
    with pytest.raises(MethodError):
        run_remove_classify("mobilenet_v3_small", "random", str(folder), str(lst), ["gradcam", "no_such_method"],
                            resolve(RC_CHOICES, "harness"), out=str(out), batch_size=2, progress=False,
                            echo=lambda *a: None)
    record = json.loads((out / "mobilenet_v3_small-random" / "remove_classify_harness.json").read_text())
    assert list(record["methods"]) == ["gradcam"] and len(record["methods"]["gradcam"]["csv_sha256"]) == 2
    built = build_results_tables(out)
    assert list(built["tables"]["remove_classify"].data["method"]) == ["gradcam"]
    assert built["disagree"] == [] and built["unchecked"] == []

