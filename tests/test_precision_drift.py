"""Precision as a protocol choice: a run at tf32 or bf16 redoes its first images at fp32 and records the drift
(runners/drift.py), the report shows it; an fp32 run records nothing. Real CLI runs of a seeded MobileNetV3-Small
on a demo photo (CPU)."""

import json

import numpy as np
import pytest

from benchmark.core.csvfiles import read_values_csv
from conftest import run_cli

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


def test_negative_drift_images_is_a_usage_error():
    proc = run_cli("run", *TINY, "--drift-images", "-1", "--dry-run")
    assert proc.returncode == 2 and "--drift-images" in proc.stderr and "Traceback" not in proc.stderr
