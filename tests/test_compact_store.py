"""``--compact-maps`` (issue #17 point 5): real HDF5 files, real models, real commands.

The default layout stays float32 and contiguous; a compact group is float16, one image per chunk, gzip + shuffle,
read back as float32 equal to the float16 rounding of what was written; its CRC still catches a changed byte; a
store is never continued with another ``--compact-maps``; export-npz writes float32 from a compact store.
"""

import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO
from methods.polycam import is_ablation
from runners.context import RunConfig, RunContext
from runners.maps import run_maps
from runners.store import COMPACT, CORRUPT, DONE, EXP2, H5Store, StoreError, from_float16, to_float16

sys.path.insert(0, str(REPO / "scripts"))
from compact_maps_effect import small_bundle  # noqa: E402

LITE = dict(model="efficientnet_lite0", profile="quick", progress=False, device="cpu", batch_size=2, data="demo",
            limit=1, methods=["gradcam"])
CLI = ["--model", "efficientnet_lite0", "--profile", "quick", "--batch-size", "2", "--no-progress", "--data", "demo",
       "--limit", "1", "--methods", "gradcam"]
NAMES = ["chelsea.png", "coffee.png"]


def cli(capsys, *args):
    from benchmark.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def small_maps():
    """Every Poly-CAM map (ablations included) and Grad-CAM of a small seeded CNN on two demo photos (112 px)."""
    from benchmark.data import DemoSource, preprocess
    from methods import make_method
    from methods.base import load_builtin_methods

    load_builtin_methods()
    model = small_bundle()
    x = model.normalize(torch.stack([preprocess(DemoSource().open(n), 112) for n in NAMES]))
    with torch.no_grad():
        t = model.net(x).argmax(1)
    maps = {}
    for mid, params in (("pcampm", {"ablations": True}), ("gradcam", {})):
        method = make_method(mid, batch_size=64, **params)
        method.check_applicable(model)
        maps.update({k: v.numpy() for k, v in method.compute_all(model, x, t, 112).items()})
    return maps


def write_store(path, maps, storage):
    with H5Store(path, NAMES, {"protocol": {}}) as st:
        for oid, m in maps.items():
            st.ensure_group(f"maps/{oid}", {"map": ((112, 112), "f4")}, {"params": {}, **storage},
                            check=["params", "storage"])
            st.write(f"maps/{oid}", [0, 1], map=m)


@pytest.fixture(scope="module")
def compact_run(tmp_path_factory):
    """`maps --compact-maps all` through the command line: Grad-CAM of EfficientNet-Lite0 on one demo photo."""
    from benchmark.cli import main

    out = tmp_path_factory.mktemp("compact")
    assert main(["maps", *CLI, "--compact-maps", "all", "--out", str(out)]) == 0
    return out


def test_default_layout_is_float32_contiguous(tmp_path):
    """(a) The default: float32, contiguous, no filter, no storage attribute, no compact_maps in the protocol."""
    ctx = RunContext(RunConfig(**LITE, out=str(tmp_path)))
    assert run_maps(ctx).computed == {"gradcam": 1}
    with h5py.File(ctx.run_dir / "maps.h5", "r") as f:
        g = f["maps/gradcam"]
        ds = g["map"]
        assert ds.dtype == np.float32 and ds.chunks is None and ds.compression is None and not ds.shuffle
        assert "storage" not in g.attrs and "map" + EXP2 not in g
        assert ds.id.get_storage_size() == 5 * 224 * 224 * 4  # allocated whole, as before
        assert "compact_maps" not in f.attrs["protocol"]


def test_compact_group_layout_and_values(tmp_path, small_maps):
    """(b) float16, one image per chunk, gzip 4 + shuffle; reads float32 equal to the float16 rounding (for maps
    inside float16's normal range: exactly np.float16(map)); smaller on disk; the default store keeps float32."""
    ablation = {k: v for k, v in small_maps.items() if is_ablation(k)}
    write_store(tmp_path / "f32.h5", ablation, {})
    write_store(tmp_path / "f16.h5", ablation, {"storage": COMPACT})
    with H5Store(tmp_path / "f16.h5", NAMES, mode="r") as st, H5Store(tmp_path / "f32.h5", NAMES, mode="r") as ref:
        for oid, m in ablation.items():
            ds = st.f[f"maps/{oid}"]["map"]
            assert ds.dtype == np.float16 and ds.chunks == (1, 112, 112)
            assert ds.compression == "gzip" and ds.compression_opts == 4 and ds.shuffle
            values, bad = st.read_rows(f"maps/{oid}")
            assert bad == [] and values["map"].dtype == np.float32
            np.testing.assert_array_equal(values["map"], from_float16(*to_float16(m)))
            assert ds.id.get_storage_size() < ref.f[f"maps/{oid}"]["map"].id.get_storage_size()
            np.testing.assert_array_equal(ref.read_rows(f"maps/{oid}")[0]["map"], m)  # the default: exact
        assert len(ablation) == 30  # every Poly-CAM ablation of the three weightings
    m = np.random.default_rng(0).random((2, 112, 112)).astype(np.float32) * 0.9 + 0.05  # float16 normal range
    write_store(tmp_path / "plain.h5", {"x": m}, {"storage": COMPACT})
    with H5Store(tmp_path / "plain.h5", NAMES, mode="r") as st:
        np.testing.assert_array_equal(st.read_rows("maps/x")[0]["map"], m.astype(np.float16).astype(np.float32))
    tiny = np.stack([m[0] * 1e-9, m[1] * 1e9])  # underflows / overflows plain float16: kept to 11 bits
    back = from_float16(*to_float16(tiny))
    assert np.isfinite(back).all() and np.abs(back - tiny).max(axis=(1, 2)).max() <= 2 ** -11 * tiny.max()


def test_crc_catches_a_changed_compact_value(tmp_path, small_maps):
    """(c) A value changed in the file without its CRC: the row is reported corrupt and marked so; the rows around
    it still verify."""
    write_store(tmp_path / "f16.h5", {"camp_l2": small_maps["camp_l2"]}, {"storage": COMPACT})
    with h5py.File(tmp_path / "f16.h5", "r+") as f:
        ds = f["maps/camp_l2/map"]
        ds[1, 50, 50] = np.float16(ds[1, 50, 50]) + np.float16(1.0)  # rewrites the compressed chunk of row 1
    with H5Store(tmp_path / "f16.h5", NAMES) as st:
        assert st.verify("maps/camp_l2") == [1]
        assert st.status("maps/camp_l2").tolist() == [DONE, CORRUPT]
        assert st.read_rows("maps/camp_l2", [0])[1] == []
    write_store(tmp_path / "exp.h5", {"camp_l2": small_maps["camp_l2"]}, {"storage": COMPACT})
    with h5py.File(tmp_path / "exp.h5", "r+") as f:  # the exponent is covered too
        f["maps/camp_l2/map" + EXP2][0] += 1
    with H5Store(tmp_path / "exp.h5", NAMES, mode="r") as st:
        assert st.verify("maps/camp_l2", mark=False) == [0]


def test_continue_with_another_setting_is_refused(compact_run, capsys, tmp_path):
    """(d) A compact store continued with --compact-maps none (or a default store with ablations): exit 2, a
    message naming the option, no traceback; the compact group came from the real maps stage."""
    run_dir = compact_run / "efficientnet_lite0"
    with h5py.File(run_dir / "maps.h5", "r") as f:
        ds = f["maps/gradcam/map"]
        assert ds.dtype == np.float16 and ds.chunks == (1, 224, 224) and ds.compression == "gzip"
        assert '"compact_maps": "all"' in f.attrs["protocol"]
    code, _, err = cli(capsys, "maps", *CLI, "--compact-maps", "none", "--out", compact_run)
    assert code == 2 and "--compact-maps" in err and "Traceback" not in err, err
    assert "made with --compact-maps all" in err
    code, _, err = cli(capsys, "maps", *CLI, "--compact-maps", "ablations", "--out", compact_run)
    assert code == 2 and "--compact-maps all" in err, err
    # commands without the option (metrics, export-npz, status) take the store's setting
    ctx = RunContext(RunConfig(**LITE, out=str(compact_run)))
    assert ctx.compact_maps == "all"
    # the same setting continues: nothing to compute
    code, _, err = cli(capsys, "maps", *CLI, "--compact-maps", "all", "--out", compact_run)
    assert code == 0, err
    with H5Store(tmp_path / "g.h5", NAMES, {"protocol": {}}) as st:  # a group with a finished map never changes
        st.ensure_group("maps/a", {"map": ((4, 4), "f4")}, {"params": {}}, check=["params", "storage"])  # layout
        st.write("maps/a", [0], map=np.ones((1, 4, 4), np.float32))
        with pytest.raises(StoreError, match="--compact-maps"):
            st.ensure_group("maps/a", {"map": ((4, 4), "f4")}, {"params": {}, "storage": COMPACT},
                            check=["params", "storage"])


def test_export_npz_from_a_compact_store_is_float32(compact_run, capsys, tmp_path):
    """(e) export-npz writes float32 (224, 224) maps, equal to what the store reads."""
    code, out, err = cli(capsys, "export-npz", *CLI, "--out", compact_run, "--to", tmp_path)
    assert code == 0, err
    with np.load(tmp_path / "efficientnet_lite0_gradcam.npz") as npz, \
            H5Store(compact_run / "efficientnet_lite0" / "maps.h5", [f"{n}.png" for n in
                    ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")], mode="r") as st:
        m = npz["chelsea.png"]
        assert m.dtype == np.float32 and m.shape == (224, 224)
        np.testing.assert_array_equal(m, st.read_rows("maps/gradcam", [0])[0]["map"][0])
