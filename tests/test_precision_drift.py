"""Precision as a protocol choice: a run at tf32 or bf16 redoes its first images at fp32 and records the drift
(runners/drift.py), the report shows it; an fp32 run records nothing. Real CLI runs of a seeded MobileNetV3-Small
on a demo photo (CPU)."""

import json
import shutil

import numpy as np
import pytest

from benchmark.core.csvfiles import read_values_csv
from conftest import run_cli
from runners.csvcheck import check_folder
from runners.store import H5Store, stored_names

TINY = ["--model", "mobilenet_v3_small", "--weights", "random", "--profile", "quick", "--limit", "1",
        "--methods", "gradcam", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for prec in ("fp32", "tf32", "bf16"):
        folder = tmp_path_factory.mktemp(prec)
        proc = run_cli("run", *TINY, "--precision", prec, "--drift-images", "1", "--out", folder)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        out[prec] = (folder, proc)
    return out


def _drift(folder):
    (path,) = folder.glob("*/precision_drift.json")
    return json.loads(path.read_text()), path.parent


def test_fp32_run_records_no_drift(runs):
    folder, proc = runs["fp32"]
    assert not list(folder.glob("*/precision_drift.json"))
    assert "precision drift" not in proc.stdout


def test_tf32_on_cpu_drifts_by_exactly_nothing(runs):
    # TF32 switches CUDA matmuls and cuDNN convolutions only: on a CPU the passes are fp32 bit for bit
    drift, _ = _drift(runs["tf32"][0])
    assert drift["precision"] == "tf32" and drift["reference"] == "fp32"
    row = drift["methods"]["gradcam"]
    assert row["images"] == 1 and len(row["image_names"]) == 1
    assert row["map_max_abs_diff"] == 0.0 and row["map_max_rel_diff"] == 0.0
    assert set(row["metrics"]) == {"insertion", "deletion"}
    assert all(v["max_abs_diff"] == 0.0 and v["mean_abs_diff"] == 0.0 for v in row["metrics"].values())


def test_bf16_drift_is_measured_against_the_stored_values(runs):
    folder, proc = runs["bf16"]
    drift, run_dir = _drift(folder)
    row = drift["methods"]["gradcam"]
    assert row["map_max_abs_diff"] > 0 and 0 < row["map_max_rel_diff"] < 1
    assert "largest relative map difference" in proc.stdout
    for metric, v in row["metrics"].items():  # the stored side is the value the run wrote to its CSV file
        prefix = {"insertion": "ins", "deletion": "del"}[metric]
        (csv,) = (run_dir / "csv").glob(f"{prefix}*_auc_*_gradcam.csv")
        stored = read_values_csv(csv)
        assert np.isclose(stored[row["image_names"][0]], v["stored_mean"], rtol=0, atol=1e-6)
        assert v["max_abs_diff"] == pytest.approx(abs(v["stored_mean"] - v["fp32_mean"]), abs=1e-7)


def test_report_shows_the_drift(runs):
    folder, _ = runs["bf16"]
    proc = run_cli("report", "--out", folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (folder / "report.md").read_text()
    assert "Precision drift" in text and "`gradcam`: map max |d|" in text
    assert "Precision drift" not in (runs["fp32"][0] / "report.md").read_text()


def test_the_drift_file_is_recomputed_from_its_fp32_arrays_and_the_stores(runs, tmp_path):
    """precision_drift.json is vouched for like the CSV files: its summary is computed again from
    precision_drift.npz (the fp32 side) and the stored maps and values, and must be equal bit for bit."""
    src, _ = runs["bf16"]
    folder = tmp_path / "bf16"
    shutil.copytree(src, folder)
    drift, run_dir = _drift(folder)
    json_path, npz_path = run_dir / "precision_drift.json", run_dir / "precision_drift.npz"
    with np.load(npz_path) as z:  # what the fp32 side holds
        assert set(z.files) == {"map__gradcam", "fp32__insertion__gradcam", "fp32__deletion__gradcam",
                                "images__gradcam"}
        assert z["map__gradcam"].shape == (1, 224, 224) and list(z["images__gradcam"]) == ["chelsea.png"]
    check, n = check_folder(run_dir)
    assert n >= 1 and check.disagree == [] and not any("precision_drift" in u for u in check.unchecked)

    def report():
        proc = run_cli("report", "--out", folder)
        return proc, (folder / "report.md").read_text()

    # a hand edit of one number: left out of the report, named with the field, report and status exit 1
    edited = json.loads(json_path.read_text())
    assert edited["methods"]["gradcam"]["map_max_abs_diff"] > 0
    edited["methods"]["gradcam"]["map_max_abs_diff"] *= 1.5
    json_path.write_text(json.dumps(edited, indent=1))
    proc, text = report()
    assert proc.returncode == 1 and "Precision drift" not in text
    assert "precision_drift.json disagrees with the summary" in text and "gradcam.map_max_abs_diff" in text
    status = run_cli("status", "--out", folder)
    assert status.returncode == 1 and "DISAGREES: precision_drift.json" in status.stdout
    json_path.write_text(json.dumps(drift, indent=1))
    proc, text = report()
    assert proc.returncode == 0 and "Precision drift" in text and "precision_drift.json" not in text

    # stale: a stored map written again since (a valid row: its checksum is right)
    maps_h5 = run_dir / "maps.h5"
    shutil.copy(maps_h5, tmp_path / "maps.h5.orig")
    with H5Store(maps_h5, stored_names(maps_h5)) as store:
        rows, _ = store.read_rows("maps/gradcam", [0])
        store.write("maps/gradcam", [0], map=rows["map"] * 0.5)
    proc, text = report()
    assert proc.returncode == 1 and "Precision drift" not in text and "gradcam.map_max_abs_diff" in text
    shutil.copy(tmp_path / "maps.h5.orig", maps_h5)

    # damaged fp32 arrays: named, not used
    good = npz_path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2: len(bad) // 2 + 16] = bytes(16)
    npz_path.write_bytes(bytes(bad))
    proc, text = report()
    assert proc.returncode == 1 and "Precision drift" not in text and "could not be checked" in text

    # no fp32 arrays (an older harness): shown as found, named as not checked
    npz_path.unlink()
    proc, text = report()
    assert proc.returncode == 0 and "Precision drift" in text
    unchecked = text[text.index("## Files read that nothing could vouch for"):]
    assert "precision_drift.json: no precision_drift.npz next to it" in unchecked

    json_path.write_text("[1, 2]")  # JSON, but not what the harness writes
    proc, text = report()
    assert proc.returncode == 1 and "precision_drift.json holds no JSON object" in text
    assert "Traceback" not in proc.stderr


def test_negative_drift_images_is_a_usage_error():
    proc = run_cli("run", *TINY, "--drift-images", "-1", "--dry-run")
    assert proc.returncode == 2 and "--drift-images" in proc.stderr and "Traceback" not in proc.stderr
