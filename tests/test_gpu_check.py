"""scripts/gpu_check.sh end to end on the CPU (``--tiny``): the real shell script, each step in its own process,
a wheel folder installed without network (``--wheels``), the JSON it writes, the paper-run ETA recomputed from its
rows, and the precision drift.

The budget is large so that no step meets its timeout on a busy machine: no timing is asserted, only that every
figure the GPU run needs is there and consistent."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _run(*args, timeout=3 * 3600):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _probe_wheel(folder):
    """A real (tiny) wheel file, standing for the dependencies a GPU machine without network gets as files."""
    import base64
    import hashlib
    import zipfile

    name, ver = "gpucheck_probe", "0.1"
    info = f"{name}-{ver}.dist-info"
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for p, d in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name}-{ver}-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return folder


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    wheels = _probe_wheel(tmp_path_factory.mktemp("wheels"))
    proc = _run(out, "--wheels", wheels, "--device", "cpu", "--tiny", "--budget-s", 3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, json.loads((out / "gpu_check.json").read_text())


def test_every_step_ran_and_left_its_log(check):
    out, proc, data = check
    assert data["schema"] == "benchmark-gpu-check/1"
    steps = data["steps"]
    assert set(steps) == {"env", "limits", "items:efficientnet_lite0:fp32", "drift:efficientnet_lite0"}
    assert {k: v["status"] for k, v in steps.items()} == dict.fromkeys(steps, "ok")
    assert data["summary"]["steps"] == dict.fromkeys(steps, "ok")
    for step in steps:
        assert (out / "logs" / (step.replace(":", "_") + ".log")).stat().st_size > 0
    assert steps["env"]["device"] == "cpu" and "torch" in steps["env"]
    assert "cudnn.allow_tf32" in steps["env"]["tf32_defaults_before_the_harness"]
    assert "| efficientnet_lite0 | fp32 | 8 |" in data["summary"]["markdown"]
    # --wheels: installed without network into OUT/site, and every step's Python finds it
    assert (out / "site" / "gpucheck_probe" / "__init__.py").read_text() == "VALUE = 42\n"
    assert steps["env"]["wheels"]["installed"] == {"gpucheck_probe": "0.1"}


def test_items_report_cold_and_steady_state_apart(check):
    items = check[2]["steps"]["items:efficientnet_lite0:fp32"]["items"]
    assert {i["id"] for i in items} == {"gradcam", "occlusion", "integratedgradient", "insertion", "deletion"}
    for i in items:
        assert "skipped" not in i, i
        assert i["cold_s"] > 0 and i["steady_s"] > 0
        assert math.isclose(i["cold_extra_s"], i["cold_s"] - i["steady_s"])
        assert i["efficiency"] > 0 and i["target"] == (0.7 if i["gradient"] else 0.8)
        assert i["met"] == (i["efficiency"] >= i["target"])
        assert i["above_limit"] == (i["efficiency"] > 1.05)  # flagged, never silently counted as efficient
    # each limit the efficiencies use is the best of its three timed blocks
    lim = check[2]["steps"]["items:efficientnet_lite0:fp32"]["limits"]["8"]
    for kind in ("forward", "backward"):
        assert len(lim[f"{kind}_blocks_passes_per_s"]) == 3
        assert lim[f"{kind}_passes_per_s"] == max(lim[f"{kind}_blocks_passes_per_s"])
    cold = check[2]["steps"]["items:efficientnet_lite0:fp32"]["process_cold"]
    assert set(cold) == {"cuda_init_s", "model_load_s", "method_libraries_import_s", "tuning_s",
                         "first_forward_pass_s", "first_backward_pass_s"}
    assert all(v >= 0 for v in cold.values())
    row = check[2]["summary"]["table"][0]
    assert row["above_limit"] == [i["id"] for i in items if i["above_limit"]]
    by_id = {i["id"]: i for i in items}
    # Grad-CAM: one forward+backward per image; occlusion and the metrics run forward only
    assert by_id["gradcam"]["measured_per_image"] == {"forward": 0.0, "backward": 1.0}
    assert by_id["gradcam"]["gradient"] and not by_id["occlusion"]["gradient"]
    assert not by_id["insertion"]["gradient"] and not by_id["deletion"]["gradient"]
    for iid in ("gradcam", "integratedgradient", "occlusion", "insertion", "deletion"):  # the hook counts them
        assert by_id[iid]["measured_per_image"] == by_id[iid]["declared_per_image"], iid
    # occlusion is priced at the run's size: at 96 px the quick stride (32) leaves 2 x 2 windows + the clean pass
    assert by_id["occlusion"]["declared_per_image"] == {"forward": 5.0, "backward": 0.0}


def test_paper_eta_is_the_sum_of_its_rows_at_2000_images(check):
    step = check[2]["steps"]["items:efficientnet_lite0:fp32"]
    eta = step["eta"]
    rows = eta["rows"]
    assert eta["images"] == 2000
    assert {r["stage"] for r in rows} >= {"maps", "metrics", "sanity"}
    assert all(r["images"] == 2000 for r in rows if r["stage"] in ("maps", "metrics"))
    assert all(r["images"] == eta["sanity_images"] for r in rows if r["stage"] == "sanity")
    assert math.isclose(eta["at_limits_s"], sum(r["at_limits_s"] for r in rows), rel_tol=1e-9)
    assert math.isclose(eta["at_measured_s"], sum(r["at_measured_s"] for r in rows), rel_tol=1e-9)
    assert math.isclose(eta["total_h"], (eta["at_measured_s"] + eta["cold_s"]) / 3600, rel_tol=1e-9)
    lim = step["limits"][str(step["pass_batch_size"])]
    for r in rows:  # at the limits: forward / R_forward + backward / R_backward
        want = r["forward"] / lim["forward_passes_per_s"] + r["backward"] / lim["backward_passes_per_s"]
        assert math.isclose(r["at_limits_s"], want, rel_tol=1e-9)


def test_drift_tf32_is_exactly_nothing_on_cpu_and_bf16_moves_the_maps(check):
    drift = check[2]["steps"]["drift:efficientnet_lite0"]["drift"]
    (tf32,), (bf16,) = drift["tf32"], drift["bf16"]
    # TF32 is a switch of CUDA matmuls and cuDNN convolutions: on a CPU the passes are bit for bit fp32
    assert tf32["map_max_abs_diff"] == 0.0
    assert all(v["max_abs_diff"] == 0.0 for v in tf32["metrics"].values())
    assert set(tf32["metrics"]) == {"insertion", "deletion"}
    assert bf16["map_max_abs_diff"] > 0 and bf16["map_max_rel_diff"] > 0
    rows = check[2]["summary"]["drift"]
    assert {(r["precision"], r["method"]) for r in rows} == {("tf32", "gradcam"), ("bf16", "gradcam")}


def test_missing_wheel_folder_is_a_clear_error(tmp_path):
    proc = _run(tmp_path / "out", "--wheels", tmp_path / "no_such_folder", "--device", "cpu", "--tiny")
    assert proc.returncode == 2
    assert "no_such_folder" in proc.stderr and "Traceback" not in proc.stderr
