import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# one measurement cache (pass sizes) for the whole suite, its subprocesses included, apart from the user's
os.environ["BENCHMARK_CACHE"] = tempfile.mkdtemp(prefix="benchmark-cache-")


@pytest.fixture(scope="session")
def lite0():
    """The real ImageNet-pretrained EfficientNet-Lite0 shipped in a PyPI wheel (offline)."""
    from benchmark.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def cat(lite0):
    """The scikit-image cat photo, preprocessed and normalised for EfficientNet-Lite0: [1,3,224,224]."""
    from benchmark.data import DemoSource, preprocess

    return lite0.normalize(preprocess(DemoSource().open("chelsea.png"))[None])


@pytest.fixture()
def photo_folder(tmp_path):
    """A small ILSVRC-style folder of real photos (from scikit-image) saved as JPEG, with a list file."""
    import skimage.data
    from PIL import Image

    folder = tmp_path / "val"
    folder.mkdir()
    names = []
    for k, (src, size) in enumerate([("chelsea", (150, 100)), ("coffee", (120, 80)), ("rocket", (90, 140))]):
        name = f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        Image.fromarray(getattr(skimage.data, src)()).resize(size).save(folder / name, quality=92)
        names.append(name)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(names) + "\n")
    return folder, lst, names


SAFETY_NET_S = 3 * 3600  # a hung subprocess ends the test; no test relies on how fast a busy machine is


def run_cli(*args, timeout=SAFETY_NET_S, env=None, cwd=None):
    """Run ``python -m benchmark ARGS`` in a real subprocess; return the CompletedProcess. ``timeout`` is only a
    safety net against a hang, far above any run's time on a busy machine."""
    import subprocess

    full_env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)


def random_map(seed, size=224):
    return np.random.default_rng(seed).random((size, size)).astype(np.float32)
