"""Figures and the report from hand-made stored results: every figure is written, non-empty and not blank, and the
report lists every table and figure, with the provenance and what is missing."""


import h5py
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from test_tables import write_curves, write_faith, write_provenance

from benchmark.outputs.figures import ablation_figure, curves_figure, maps_figure, randomisation_figure
from benchmark.outputs.tables import load_run
from conftest import random_map

IMAGES = ["chelsea.png", "coffee.png", "astronaut.png"]
METHODS = ["gradcam", "pcampm", "rise", "integratedgradient"]


def check_png(path, min_kb=10):
    assert path is not None and path.exists() and path.stat().st_size > min_kb * 1024
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # not a constant picture


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A model folder as a quick run on the demo photos leaves it: CSVs (AUC, curves, ablations, randomisation)
    and a maps.h5 with real-shaped maps."""
    root = tmp_path_factory.mktemp("res") / "quick"
    rd = root / "efficientnet_lite0"
    write_provenance(rd, "efficientnet_lite0")
    csv = rd / "csv"
    rng = np.random.default_rng(0)
    s = 16
    for k, m in enumerate(METHODS + ["pcampm_step1", "pcampm_step2", "pcampm_step3", "pcampm_step4"] +
                          [f"campm_l{i}" for i in range(1, 6)]):
        ins = {n: np.clip(np.linspace(0.05, 0.9 - 0.03 * k, s) + rng.normal(0, 0.02, s), 0, 1) for n in IMAGES}
        dele = {n: np.clip(np.linspace(0.8, 0.02 + 0.01 * k, s) + rng.normal(0, 0.02, s), 0, 1) for n in IMAGES}
        write_curves(csv / f"ins_details_efficientnet_lite0_{m}.csv", ins)
        write_curves(csv / f"del_details_efficientnet_lite0_{m}.csv", dele)
        write_faith(csv, "efficientnet_lite0", m, {n: float(v.mean()) for n, v in ins.items()},
                    {n: float(v.mean()) for n, v in dele.items()})
    rows = [{"image": n, "method": m, "convention": c, "step": st, "layer": f"layer{6 - st}",
             "spearman": 1 - 0.2 * st, "spearman_abs": 1 - 0.15 * st, "ssim": 1 - 0.1 * st, "hog": 1 - 0.05 * st}
            for n in IMAGES for m in ("gradcam", "pcampm") for c in ("original_top1", "randomised_top1")
            for st in range(1, 5)]
    pd.DataFrame(rows).to_csv(csv / "randomisation_efficientnet_lite0.csv", index=False)
    (rd / "figures").mkdir()  # a randomisation grid as the sanity check draws it (Figures 26-28)
    mpimg.imsave(rd / "figures" / "randomisation_efficientnet_lite0_chelsea.png", rng.random((60, 200, 3)))
    with h5py.File(rd / "maps.h5", "w") as f:
        f["names"] = np.array(IMAGES + ["rocket.png"], dtype=h5py.string_dtype())
        f["clean/target"] = np.array([282, 967, 834, 812])
        f["clean/prob"] = np.array([0.6, 0.9, 0.3, 0.5], dtype=np.float32)
        for k, m in enumerate(METHODS):
            f[f"maps/{m}/map"] = np.stack([random_map(10 * k + i) for i in range(4)])
            f[f"maps/{m}/status"] = np.array([1, 1, 1, 0], dtype=np.uint8)  # rocket not done
    return rd


def test_maps_figure_without_the_images_says_so(run_dir, tmp_path):
    run = load_run(run_dir)
    run.provenance["config"] = {"data": str(tmp_path / "no_such_folder"), "image_list": None}
    path, note = maps_figure(run, tmp_path / "maps.png", n_images=2, methods=["gradcam", "rise"])
    check_png(path)
    assert "images not drawn" in note and "no_such_folder" in note


def test_figures_absent_inputs_give_none(tmp_path):
    run = load_run(tmp_path / "empty")
    assert curves_figure(run, tmp_path / "a.png") is None and ablation_figure(run, tmp_path / "b.png") is None
    assert randomisation_figure(run, tmp_path / "c.png") is None
    assert maps_figure(run, tmp_path / "d.png")[0] is None


def test_report_lists_every_table_and_figure(run_dir, capsys):
    """`python -m benchmark report` (in-process) over the results folder: every figure written and not blank."""
    from benchmark.cli import main

    assert main(["report", "--profile", "quick", "--out", str(run_dir.parent)]) == 0
    path = run_dir.parent / "report.md"
    assert f"report: {path}" in capsys.readouterr().out
    text = path.read_text()
    for title in ("Table 1 (ours vs paper)", "Table 4 (ours vs paper)", "Tables 2-3", "Cascading randomisation",
                  "Provenance", "What is missing", "Mean insertion (top) and deletion (bottom) curves",
                  "Figures 11-12", "Figures 3/5", "cf. Figures 26-28", "How to read the statistics",
                  "Mean ranks and the best group", "Pairwise comparison: Insertion ↑, efficientnet_lite0",
                  "Pairwise comparison: Ins-Del ↑, efficientnet_lite0", "Which differences are real (Deletion)"):
        assert title in text
    figs = sorted((run_dir.parent / "figures").glob("*.png"))
    assert [f.name for f in figs] == [f"{k}_efficientnet_lite0.png" for k in ("ablation", "curves", "maps",
                                                                             "randomisation")] + \
        [f"significance_efficientnet_lite0_{m}.png" for m in ("deletion", "ins_del", "insertion")]
    for f in figs:
        assert f"](figures/{f.name})" in text
        check_png(f, min_kb=30 if f.name.startswith("maps") else 10)
    assert "images not drawn" not in text  # the demo photos were found from provenance.json
    assert "| profile | quick |" in text and "| seed | 0 |" in text
    assert "Table 5: no max-sensitivity CSV" in text  # what is missing is said
    assert "Paper columns" not in text  # no published values for this model
    html = (run_dir.parent / "report.html").read_text()
    assert "Cascading randomisation grid (paper Figures 26-28) - efficientnet_lite0, chelsea" in text
    assert "](efficientnet_lite0/figures/randomisation_efficientnet_lite0_chelsea.png)" in text
    assert html.count("<img ") == 8 and "<table>" in html
