"""The command line end to end, in real subprocesses, on the offline pretrained model and real photos."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_cli
from runners.store import DONE, FAILED, RunLock

LITE = ["--model", "efficientnet_lite0", "--profile", "quick", "--no-progress"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One full `run` on the demo photos with the plugin example next to the built-in methods."""
    out = tmp_path_factory.mktemp("demo")
    res = run_cli("run", *LITE, "--out", out, "--plugin", REPO / "examples/vanilla_gradient.py",
                  "--methods", "gradcam,cam,vanilla_gradient")
    return out, res


def test_run_end_to_end_on_the_pretrained_model(demo_run):
    out, res = demo_run
    assert res.returncode == 0, res.stderr
    assert "using the embedded demo photos" in res.stdout
    run_dir = out / "efficientnet_lite0"
    csv = run_dir / "csv"
    for method in ("gradcam", "cam", "vanilla_gradient"):
        ins = pd.read_csv(csv / f"ins_auc_efficientnet_lite0_{method}.csv", index_col=0)
        assert list(ins.columns) == ["0"] and len(ins) == 5 and ins.index[0] == "chelsea.png"
        assert ((ins["0"] >= 0) & (ins["0"] <= 1)).all()
        det = pd.read_csv(csv / f"del_details_efficientnet_lite0_{method}.csv", index_col=0)
        assert list(det.columns) == [str(i) for i in range(16)]  # quick profile: 16 steps
        auc = pd.read_csv(csv / f"del_auc_efficientnet_lite0_{method}.csv", index_col=0)["0"]
        np.testing.assert_allclose(auc.to_numpy(), det.mean(axis=1).to_numpy(), atol=1e-6)
    table = (run_dir / "tables/faithfulness.md").read_text()
    assert "profile `quick`" in table and "| vanilla_gradient | 5 |" in table
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["protocol"]["profile"]["name"] == "quick" and prov["protocol"]["seed"] == 0
    assert prov["environment"]["versions"]["torch"].startswith("2.")
    with h5py.File(run_dir / "maps.h5", "r") as f:
        assert f["maps/gradcam/map"].shape == (5, 224, 224)
        assert (f["maps/gradcam/status"][()] == DONE).all()
        assert json.loads(f.attrs["provenance"])["model"]["mean"][0] == pytest.approx(127 / 255)
        targets = f["clean/target"][()]
    assert 281 <= targets[0] <= 285 and targets[1] == 967
    assert "Insertion" in res.stdout and "| gradcam | 5 |" in res.stdout


def test_tables_rebuild_from_csv_alone(demo_run, tmp_path):
    out, _ = demo_run
    copy = tmp_path / "efficientnet_lite0"
    copy.mkdir()
    import shutil

    shutil.copytree(out / "efficientnet_lite0" / "csv", copy / "csv")
    res = run_cli("tables", "--model", "efficientnet_lite0", "--profile", "quick", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(copy / "tables/faithfulness.csv")
    ins = pd.read_csv(copy / "csv/ins_auc_efficientnet_lite0_gradcam.csv", index_col=0)["0"]
    assert df.set_index("method").loc["gradcam", "insertion"] == pytest.approx(ins.mean())


def test_rerun_computes_nothing_new(demo_run):
    out, _ = demo_run
    res = run_cli("run", *LITE, "--out", out, "--plugin", REPO / "examples/vanilla_gradient.py",
                  "--methods", "gradcam,vanilla_gradient")
    assert res.returncode == 0, res.stderr
    assert "gradcam: 0 computed, 5 already stored, 0 failed" in res.stdout
    assert "insertion/gradcam: 0 computed, 5 already stored" in res.stdout


def test_npz_export_then_import_under_another_name(demo_run, tmp_path):
    out, _ = demo_run
    res = run_cli("export-npz", *LITE, "--out", out, "--methods", "gradcam", "--to", tmp_path)
    assert res.returncode == 0, res.stderr
    npz = tmp_path / "efficientnet_lite0_gradcam.npz"
    res = run_cli("import-npz", *LITE, "--out", tmp_path / "imported", npz, "--method", "theirs")
    assert res.returncode == 0, res.stderr and "5 imported" in res.stdout
    res = run_cli("metrics", *LITE, "--out", tmp_path / "imported", "--methods", "theirs")
    assert res.returncode == 0, res.stderr
    a = pd.read_csv(out / "efficientnet_lite0/csv/ins_auc_efficientnet_lite0_gradcam.csv", index_col=0)
    b = pd.read_csv(tmp_path / "imported/efficientnet_lite0/csv/ins_auc_efficientnet_lite0_theirs.csv", index_col=0)
    np.testing.assert_allclose(a["0"].to_numpy(), b["0"].to_numpy(), atol=1e-6)


def test_unknown_names_are_clear_errors(tmp_path):
    res = run_cli("maps", *LITE, "--out", tmp_path, "--methods", "gradcam,nosuch")
    assert res.returncode == 2 and "unknown method 'nosuch'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("maps", "--model", "resnet5O", "--out", tmp_path, "--no-progress")
    assert res.returncode == 2 and "unknown model 'resnet5O'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("metrics", *LITE, "--out", tmp_path, "--metrics", "auroc")
    assert res.returncode == 2 and "unknown metric 'auroc'" in res.stderr


def test_vgg16_without_weights_fails_with_the_remedy(tmp_path):
    res = run_cli("run", "--model", "vgg16", "--data", "demo", "--out", tmp_path, "--limit", "1", "--no-progress",
                  env={"TORCH_HOME": str(tmp_path / "hub")})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--weights FILE" in res.stderr and "vgg16-397923af.pth" in res.stderr


def test_not_applicable_method_asked_explicitly_is_refused(tmp_path):
    res = run_cli("maps", "--model", "vgg11", "--weights", "random", "--profile", "quick", "--no-progress",
                  "--out", tmp_path, "--methods", "cam", "--limit", "1")
    assert res.returncode == 2 and "cam needs a global-average-pooling + Linear head" in res.stderr


def test_bad_images_stop_the_run_with_one_message_or_are_skipped(photo_folder, tmp_path):
    folder, lst, names = photo_folder
    good = (folder / names[0]).read_bytes()
    (folder / "ILSVRC2012_val_00000009.JPEG").write_bytes(good[: len(good) // 3])
    lst.write_text(lst.read_text() + "ILSVRC2012_val_00000009.JPEG\nILSVRC2012_val_00000010.JPEG\n")
    common = ["maps", *LITE, "--data", folder, "--image-list", lst, "--methods", "gradcam", "--out", tmp_path]
    res = run_cli(*common)
    assert res.returncode == 2
    assert "2 image(s) cannot be used" in res.stderr
    assert "ILSVRC2012_val_00000009.JPEG: unreadable" in res.stderr
    assert "ILSVRC2012_val_00000010.JPEG: missing file" in res.stderr
    res = run_cli(*common, "--skip-bad-images")
    assert res.returncode == 0, res.stderr
    assert "skipping 2 bad image(s)" in res.stdout
    with h5py.File(tmp_path / "efficientnet_lite0/maps.h5", "r") as f:
        assert f["image_status"][()].tolist() == [1, 1, 1, 2, 2]
        assert f["image_error"][4].decode() == "missing file"
        assert f["maps/gradcam/status"][()].tolist() == [DONE, DONE, DONE, 0, 0]


def test_nan_maps_and_raising_methods_are_recorded_per_image(tmp_path):
    res = run_cli("run", *LITE, "--out", tmp_path, "--plugin", REPO / "tests/plugins/broken_methods.py",
                  "--methods", "nan_on_coffee,raises_on_coffee,gradcam", "--batch-size", "4")
    assert res.returncode == 1  # not everything asked for was computed
    assert "FAILED maps nan_on_coffee on coffee.png: map contains NaN" in res.stderr
    assert "FAILED maps raises_on_coffee on coffee.png: RuntimeError: cannot explain espresso" in res.stderr
    with h5py.File(tmp_path / "efficientnet_lite0/maps.h5", "r") as f:
        for m in ("nan_on_coffee", "raises_on_coffee"):
            assert f[f"maps/{m}/status"][()].tolist() == [DONE, FAILED, DONE, DONE, DONE]
        assert (f["maps/gradcam/status"][()] == DONE).all()
    ins = pd.read_csv(tmp_path / "efficientnet_lite0/csv/ins_auc_efficientnet_lite0_nan_on_coffee.csv", index_col=0)
    assert "coffee.png" not in ins.index and len(ins) == 4
    assert "| nan_on_coffee | 4 |" in res.stdout


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    with RunLock(tmp_path / "efficientnet_lite0"):
        res = run_cli("maps", *LITE, "--out", tmp_path, "--methods", "gradcam")
    assert res.returncode == 2 and "another benchmark process" in res.stderr


def test_help_on_every_command():
    for cmd in ("run", "maps", "metrics", "tables", "report", "sanity", "perf", "merge", "status", "train-calm",
                "cue-localization", "methods", "models", "export-npz", "import-npz"):
        res = run_cli(cmd, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout


def test_methods_lists_plugins(tmp_path):
    res = run_cli("methods", "--plugin", REPO / "examples/vanilla_gradient.py")
    assert res.returncode == 0
    assert "vanilla_gradient" in res.stdout and "gradcam" in res.stdout and "Simonyan" in res.stdout
