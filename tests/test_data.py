"""Images: list files, decoding of every colour mode, checks of bad files, and the paper's preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import data
from benchmark.data import DataError, DemoSource, FolderSource, check_images, preprocess, read_image_list


def test_preprocess_exact_on_hand_made_image():
    # 448x448 image of constant 2x2 blocks: a bilinear 2x downsample without antialiasing samples exactly
    # between the 4 pixels of each block (align_corners=False), so the output is the block colour, /255.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    img = Image.fromarray(blocks.repeat(2, axis=0).repeat(2, axis=1))
    out = preprocess(img, 224, antialias=False)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = torch.from_numpy(blocks).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # Antialiasing is a real, recorded setting: it blurs across blocks, so the result differs.
    assert (preprocess(img, 224, antialias=True) - expected).abs().max() > 0.05


def test_preprocess_is_anisotropic_resize_without_crop():
    # A 100x300 image whose left third is black and the rest white: no centre crop keeps the black third.
    arr = np.full((100, 300, 3), 255, np.uint8)
    arr[:, :100] = 0
    out = preprocess(Image.fromarray(arr), 224)
    assert out.shape == (3, 224, 224)
    assert out[:, :, :70].max() == 0 and out[:, :, 80:].min() == 1.0


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_every_colour_mode_becomes_rgb(tmp_path, mode):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    base = Image.fromarray(rgb)
    if mode == "L":
        img = Image.fromarray(np.full((8, 8), 77, np.uint8))
    elif mode == "I;16":
        img = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    else:
        img = base.convert(mode)
    path = tmp_path / "x.png" if mode not in ("CMYK",) else tmp_path / "x.jpg"
    img.save(path)
    src = FolderSource(tmp_path, [path.name])
    out = src.open(path.name)
    assert out.mode == "RGB" and out.size == (8, 8)
    arr = np.asarray(out)
    if mode == "L":
        assert (arr == 77).all()
    elif mode == "LA":  # luminance of (200, 0, 0) = 0.299 * 200, alpha dropped
        assert (arr == 60).all()
    elif mode == "I;16":
        assert (arr == 255).all()
    else:
        assert abs(int(arr[..., 0].mean()) - 200) <= 3 and arr[..., 1:].max() <= 3


def test_image_list_rules(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("# comment\na.JPEG\n\n b.JPEG \n")
    assert read_image_list(p) == ["a.JPEG", "b.JPEG"]
    p.write_text("a.JPEG\na.JPEG\n")
    with pytest.raises(DataError, match="twice"):
        read_image_list(p)
    with pytest.raises(DataError, match="does not exist"):
        read_image_list(tmp_path / "missing.txt")


def test_check_images_lists_every_bad_file(photo_folder):
    folder, _lst, names = photo_folder
    good = (folder / names[0]).read_bytes()
    (folder / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (folder / "notanimage.JPEG").write_bytes(b"hello, I am text")
    listed = names + ["truncated.JPEG", "notanimage.JPEG", "missing.JPEG"]
    bad = check_images(FolderSource(folder, listed), progress=False)
    reasons = {b.name: b.reason for b in bad}
    assert set(reasons) == {"truncated.JPEG", "notanimage.JPEG", "missing.JPEG"}
    assert reasons["missing.JPEG"] == "missing file"
    assert reasons["truncated.JPEG"].startswith("unreadable")
    msg = data.format_bad_images(bad)
    assert all(n in msg for n in reasons) and "--skip-bad-images" in msg


def test_folder_source_finds_files_in_class_subfolders(photo_folder):
    folder, _lst, names = photo_folder
    sub = folder / "n01440764"
    sub.mkdir()
    (folder / names[0]).rename(sub / names[0])
    src = FolderSource(folder, names)
    assert src.open(names[0]).size == (150, 100)


def test_demo_source_is_the_scikit_image_photos():
    src = DemoSource()
    assert src.names == ["chelsea.png", "coffee.png", "astronaut.png", "rocket.png", "stereo_motorcycle.png"]
    assert src.open("stereo_motorcycle.png").mode == "RGB"
    with pytest.raises(DataError, match="not demo images"):
        DemoSource(["dog.png"])


def test_jpeg_decode_matches_pil_directly(photo_folder):
    folder, _lst, names = photo_folder
    with Image.open(folder / names[1]) as im:
        direct = np.asarray(im.convert("RGB"))
    got = np.asarray(FolderSource(folder, names).open(names[1]))
    assert np.array_equal(direct, got)
