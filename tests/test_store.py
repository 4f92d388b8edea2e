"""The HDF5 store: round trip, refusals, lock, npz formats, and resume after a real SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, run_cli
from runners.npz import export_npz, import_npz, to_map
from runners.store import DONE, FAILED, TODO, H5Store, RunLock, StoreError

NAMES = ["a.JPEG", "b.JPEG", "c.JPEG"]


def test_round_trip_and_status(tmp_path):
    path = tmp_path / "maps.h5"
    with H5Store(path, NAMES, {"protocol": {"profile": "quick"}}, check_attrs=["protocol"]) as s:
        s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 1}}, check=["params"])
        maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
        s.write("maps/m", [2, 0], map=maps)
        s.fail("maps/m", 1, "map contains NaN or infinite values")
    with H5Store(path, NAMES, {"protocol": {"profile": "quick"}}, check_attrs=["protocol"], mode="r") as s:
        assert s.status("maps/m").tolist() == [DONE, FAILED, DONE]
        assert np.array_equal(s.read("maps/m", "map", [0, 2]), maps[[1, 0]])  # lossless float32
        assert s.errors("maps/m") == {"b.JPEG": "map contains NaN or infinite values"}
        assert s.group_attrs("maps/m")["params"] == {"k": 1}
    with h5py.File(path, "r") as f:  # plain h5py can read it; contiguous, allocated up front
        assert f["maps/m/map"].dtype == np.float32 and f["maps/m/map"].shape == (3, 4, 4)
        assert f["maps/m/map"].chunks is None


def test_refuses_other_list_other_protocol_and_other_params(tmp_path):
    path = tmp_path / "maps.h5"
    with H5Store(path, NAMES, {"protocol": {"profile": "quick"}}, check_attrs=["protocol"]) as s:
        s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 1}}, check=["params"])
        s.write("maps/m", [1], map=np.ones((1, 4, 4), np.float32))
    with pytest.raises(StoreError, match="another image list"):
        H5Store(path, NAMES[:2], {"protocol": {"profile": "quick"}})
    with pytest.raises(StoreError, match="different protocol"):
        H5Store(path, NAMES, {"protocol": {"profile": "paper"}}, check_attrs=["protocol"])
    with H5Store(path, NAMES, {"protocol": {"profile": "quick"}}, check_attrs=["protocol"]) as s:
        with pytest.raises(StoreError, match="different params"):
            s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 2}}, check=["params"])
        assert s.status("maps/m").tolist() == [TODO, DONE, TODO]  # the finished map is kept
        assert s.group_attrs("maps/m")["params"] == {"k": 1}


def test_a_group_without_a_finished_row_takes_new_params(tmp_path):
    """Parameters that failed on every image (or never ran) left no result: the group starts again with the new
    ones, its failure records cleared, and the caller is told."""
    path = tmp_path / "maps.h5"
    with H5Store(path, NAMES, {}) as s:
        assert s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 1}}, check=["params"]) is None
        s.fail("maps/m", 0, "MethodError: k must be >= 2")
        said = s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 2}}, check=["params"])
        assert said == 'maps/m held no finished row (params stored: {"k": 1}); started again with params {"k": 2}'
        assert s.status("maps/m").tolist() == [TODO] * 3 and s.errors("maps/m") == {}
        assert s.group_attrs("maps/m")["params"] == {"k": 2}
        s.write("maps/m", [2], map=np.ones((1, 4, 4), np.float32))
    with H5Store(path, NAMES, {}, mode="r") as s:  # the new group is whole on disk
        assert s.status("maps/m").tolist() == [TODO, TODO, DONE]
        assert np.array_equal(s.read("maps/m", "map", [2]), np.ones((1, 4, 4), np.float32))


def test_a_group_without_a_version_is_version_1(tmp_path):
    """A group of an older harness has no ``version`` attribute: version 1 continues it, version 2 is refused
    while it holds a finished row (and the row is kept)."""
    path = tmp_path / "maps.h5"
    with H5Store(path, NAMES, {}) as s:
        s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {"params": {"k": 1}}, check=["params"])  # no version
        s.write("maps/m", [0], map=np.ones((1, 4, 4), np.float32))
        v1 = {"params": {"k": 1}, "version": 1}
        assert s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, v1, check=["params", "version"]) is None
        with pytest.raises(StoreError, match="computed by version 1 of its code; this is version 2"):
            s.ensure_group("maps/m", {"map": ((4, 4), "f4")}, {**v1, "version": 2}, check=["params", "version"])
        assert s.status("maps/m").tolist() == [DONE, TODO, TODO]


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    code = ("import sys, time; sys.path.insert(0, %r); from runners.store import RunLock\n"
            "with RunLock(%r): print('locked', flush=True); time.sleep(30)" % (str(REPO), str(tmp_path)))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"another benchmark process \\(pid {holder.pid}\\)"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel released the lock of the killed process
        pass


@pytest.mark.parametrize("shape", [(224, 224), (1, 224, 224), (1, 1, 224, 224), (7, 7), (1, 1, 14, 14)])
def test_npz_import_accepts_the_authors_shapes(shape):
    value = np.random.default_rng(0).random(shape).astype(np.float32)
    out = to_map(value, 224)
    assert out.shape == (224, 224)
    if shape[-1] == 224:
        assert np.array_equal(out, value.reshape(224, 224))
    else:  # upsampled bilinearly: a constant map stays constant, the mean is about kept
        assert to_map(np.full(shape, 3.0, np.float32), 224).std() < 1e-6
        assert abs(out.mean() - value.mean()) < 0.05


def test_npz_export_import_round_trip(tmp_path):
    maps = np.random.default_rng(1).random((3, 224, 224)).astype(np.float32)
    with H5Store(tmp_path / "a.h5", NAMES, {}) as s:
        s.ensure_group("maps/gradcam", {"map": ((224, 224), "f4")}, {"params": {}})
        s.write("maps/gradcam", [0, 1, 2], map=maps)
        (path,) = export_npz(s, "vgg16", tmp_path / "npz")
    assert path.name == "vgg16_gradcam.npz"
    with np.load(path) as z:
        assert sorted(z.files) == NAMES and np.array_equal(z["b.JPEG"], maps[1])
    np.savez(tmp_path / "extra.npz", **{"a.JPEG": maps[0][None, None], "zzz.JPEG": maps[1],
                                        "c.JPEG": np.full((7, 7), np.nan, np.float32)})
    with H5Store(tmp_path / "b.h5", NAMES, {}) as s:
        assert import_npz(s, path, "gradcam", 224) == {"imported": 3, "not_in_list": 0, "bad": 0}
        assert np.array_equal(s.read("maps/gradcam", "map"), maps)
        counts = import_npz(s, tmp_path / "extra.npz", "theirs", 224)
        assert counts == {"imported": 1, "not_in_list": 1, "bad": 1}
        assert s.status("maps/theirs").tolist() == [DONE, TODO, FAILED]


def _done_count(path):
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int((f["maps/slow_saliency/status"][()] == DONE).sum())
    except (OSError, KeyError):
        return 0


def test_resume_after_sigkill(tmp_path):
    """Kill a real run with SIGKILL mid-way; the store stays readable and the rerun computes only the rest."""
    args = ["maps", "--model", "efficientnet_lite0", "--profile", "quick", "--methods", "slow_saliency",
            "--plugin", REPO / "tests/plugins/slow_saliency.py", "--batch-size", "1", "--no-progress"]
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *map(str, args), "--out", str(out)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = out / "efficientnet_lite0" / "maps.h5"
    deadline = time.time() + 3600  # a safety net against a hang, not a time limit
    while _done_count(store) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _done_count(store)
    assert 2 <= done_before < 5, "the kill should land mid-run"
    with h5py.File(store, "r") as f:  # readable, and the finished maps are complete and finite
        st = f["maps/slow_saliency/status"][()]
        assert np.isfinite(f["maps/slow_saliency/map"][np.flatnonzero(st == DONE)]).all()
    resumed = run_cli(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"slow_saliency: {5 - done_before} computed, {done_before} already stored, 0 failed" in resumed.stdout
    clean = run_cli(*args, "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    with h5py.File(store, "r") as a, h5py.File(tmp_path / "clean/efficientnet_lite0/maps.h5", "r") as b:
        assert (a["maps/slow_saliency/status"][()] == DONE).all()
        np.testing.assert_allclose(a["maps/slow_saliency/map"][()], b["maps/slow_saliency/map"][()], atol=1e-6)
