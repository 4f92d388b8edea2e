"""Models: loading (offline pretrained, random, state-dict files), clear errors, normalisation, layers."""

import numpy as np
import pytest
import torch

from benchmark.data import DemoSource, preprocess
from benchmark.models import ModelError, load_model
from benchmark.models.bundle import LITE_MEAN, LITE_STD
from benchmark.models.layers import RESNET50_LAYERS, VGG16_LAYERS, discover_layers, layer_resolutions
from benchmark.models.tv_compat import import_torchvision


def test_pretrained_efficientnet_lite0_recognises_the_demo_photos(lite0):
    assert lite0.mean == LITE_MEAN and lite0.std == LITE_STD  # TF-Lite training normalisation (x*255-127)/128
    src = DemoSource()
    x = lite0.normalize(torch.stack([preprocess(src.open(n)) for n in ["chelsea.png", "coffee.png"]]))
    with torch.no_grad():
        top = lite0.net(x).argmax(1).tolist()
    assert 281 <= top[0] <= 285  # a domestic cat class (tabby, tiger cat, Persian, Siamese, Egyptian)
    assert top[1] == 967  # espresso
    assert lite0.polycam_layers == ["stem", "blocks.2.depthwise", "blocks.4.depthwise", "blocks.10.depthwise", "head"]
    assert lite0.last_conv == "head" and lite0.fc == "fc"


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown model 'vgg61'"):
        load_model("vgg61")


def test_missing_imagenet_weights_name_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache; no network here
    with pytest.raises(ModelError) as err:
        load_model("resnet18", "imagenet")
    msg = str(err.value)
    assert "--weights FILE" in msg and "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg
    assert "efficientnet_lite0" in msg


def test_random_weights_are_seeded_and_marked():
    a, b = load_model("resnet18", "random", seed=3), load_model("resnet18", "random", seed=3)
    c = load_model("resnet18", "random", seed=4)
    wa, wb, wc = (m.net.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.tag == "resnet18-random"


def test_weights_file_is_loaded_safely(tmp_path):
    src = load_model("resnet18", "random", seed=1)
    path = tmp_path / "r18.pth"
    torch.save(src.net.state_dict(), path)
    loaded = load_model("resnet18", str(path))
    assert torch.equal(loaded.net.fc.weight, src.net.fc.weight) and loaded.tag == "resnet18"
    assert loaded.weights_sha256 and len(loaded.weights_sha256) == 64

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="no pickled code"):
        load_model("resnet18", str(tmp_path / "evil.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ModelError, match="does not fit resnet18"):
        load_model("resnet18", str(tmp_path / "wrong.pth"))


def test_layers_of_vgg16_and_resnet50():
    tv = import_torchvision()
    vgg = tv.models.get_model("vgg16").eval()
    assert discover_layers(vgg) == VGG16_LAYERS["paper"]
    res = {n: (h, w) for n, h, w in layer_resolutions(vgg)}
    assert [res[n] for n in VGG16_LAYERS["paper"]] == [(224, 224), (112, 112), (56, 56), (28, 28), (14, 14)]
    r50 = tv.models.get_model("resnet50").eval()
    assert discover_layers(r50) == RESNET50_LAYERS["paper_text"] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    res = {n: (h, w) for n, h, w in layer_resolutions(r50)}
    assert [res[n][0] for n in RESNET50_LAYERS["reference"]] == [112, 28, 14, 7, 7]


def test_normalize_is_per_channel():
    m = load_model("resnet18", "random")
    x = torch.ones(1, 3, 2, 2) * 0.5
    y = m.normalize(x)
    np.testing.assert_allclose(y[0, :, 0, 0].numpy(), [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224,
                                                        (0.5 - 0.406) / 0.225], rtol=1e-6)


def test_weights_identity_is_the_content():
    """Random weights are identified by their tensors (BatchNorm's 0-dim counters included): the same seed gives the
    same sha256, a changed weight another; a file is identified by its bytes."""
    from benchmark.models.weights import state_dict_sha256, weights_identity

    a = load_model("mobilenet_v3_small", "random", seed=0)
    b = load_model("mobilenet_v3_small", "random", seed=0)
    assert a.weights_sha256 == b.weights_sha256 == state_dict_sha256(a.net)
    with torch.no_grad():
        next(b.net.parameters()).add_(1e-3)
    assert state_dict_sha256(b.net) != a.weights_sha256
    import hashlib
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pt") as fh:
        fh.write(b"weights")
        fh.flush()
        assert weights_identity(a.net, fh.name) == hashlib.sha256(b"weights").hexdigest()
