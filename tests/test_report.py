"""Figures and the report from hand-made stored results: every figure is written, non-empty and not blank, and the
report lists every table and figure, with the provenance and what is missing."""


import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from test_tables import write_curves, write_faith, write_provenance

from benchmark.outputs.figures import ablation_figure, curves_figure, maps_figure, randomisation_figure
from benchmark.outputs.runs import load_run
from conftest import random_map
from runners.store import H5Store

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
    with H5Store(rd / "maps.h5", IMAGES + ["rocket.png"]) as st:  # a real store; rocket's maps not done
        st.ensure_group("clean", {"target": ((), "i8"), "prob": ((), "f4")}, {})
        st.write("clean", [0, 1, 2], target=np.array([282, 967, 834]), prob=np.array([0.6, 0.9, 0.3], np.float32))
        for k, m in enumerate(METHODS):
            st.ensure_group(f"maps/{m}", {"map": ((224, 224), "f4")}, {})
            st.write(f"maps/{m}", [0, 1, 2], map=np.stack([random_map(10 * k + i) for i in range(3)]))
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
    for title in ("Table 1: Faithfulness", "Table 4: Faithfulness", "Tables 2-3", "Cascading randomisation",
                  "Provenance", "What is missing", "Mean insertion (left) and deletion (right) curves",
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
    assert "Table 5: no max-sensitivity CSV" in text and "`--metrics sensitivity`" in text  # and how to get it
    assert "Paper columns" not in text and "(ours vs paper)" not in text  # no published values for this model
    assert "paper columns" not in text
    assert text.count("Symbols: ") >= 6  # one line under each table
    assert "| weights | imagenet (sha256 unknown) |" in text  # an old provenance without the hash: never "None"
    html = (run_dir.parent / "report.html").read_text()
    assert "Cascading randomisation grid (paper Figures 26-28) - efficientnet_lite0, chelsea" in text
    assert "](efficientnet_lite0/figures/randomisation_efficientnet_lite0_chelsea.png)" in text
    assert html.count("<img ") == 8 and "<table>" in html


# ------------------------------------------------------------------------------------------ readable figures
def test_curve_panels_hold_at_most_six_lines_and_the_floor_its_own():
    from benchmark.outputs.figures import FLOOR, MAX_LINES, curve_groups
    from benchmark.outputs.figures import MAP_ORDER as ALL

    groups = curve_groups(set(ALL) | set(FLOOR) | {f"plugin{i}" for i in range(7)})
    assert all(len(ms) <= MAX_LINES == 6 for _, ms in groups)
    floor = [ms for t, ms in groups if t.startswith("floor")]
    assert floor == [["pcampm"] + FLOOR]
    others = [ms for t, ms in groups if t.startswith("other methods")]
    assert len(others) == 2 and sum(len(ms) - 1 for ms in others) == 7  # PCAM± + 5, PCAM± + 2
    assert {m for _, ms in groups for m in ms} == set(ALL) | set(FLOOR) | {f"plugin{i}" for i in range(7)}


def test_randomisation_ticks_every_kth_layer():
    from benchmark.outputs.figures import step_ticks

    steps = list(range(1, 51))
    shown, labels = step_ticks(steps, {s: f"blocks.{s}" for s in steps})
    assert len(shown) <= 12 and shown[0] == 1 and shown[-1] == 50 and labels[0] == "1: blocks.1"
    assert step_ticks([1, 2, 3], {1: "a", 2: "b", 3: "c"})[0] == [1, 2, 3]


def test_signed_maps_are_centred_at_zero():
    """InputXGrad-like maps (both signs) are detected and drawn with 0 white, positive red, negative blue, not
    min-max normalised into a uniform colour."""
    import matplotlib.pyplot as plt

    from benchmark.outputs.figures import _draw_map, is_signed

    signed = np.zeros((20, 20))
    signed[:, :5], signed[:, -5:] = -1.0, 1.0
    assert is_signed(signed) and not is_signed(np.abs(signed)) and not is_signed(random_map(0, 20))
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    _draw_map(ax, signed, None, True)
    ax.set_position((0, 0, 1, 1))
    ax.axis("off")
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    plt.close(fig)
    h, w = img.shape[:2]
    left, mid, right = img[h // 2, 2], img[h // 2, w // 2], img[h // 2, w - 3]
    assert left[2] > left[0] + 50 and right[0] > right[2] + 50  # blue negative, red positive
    assert mid.min() > 230  # 0 is white


def test_weights_hash_shown_or_unknown():
    from benchmark.outputs.figures import weights_sha

    assert weights_sha({"protocol": {"weights_sha256": "ab12"}, "model": {"weights_sha256": None}}) == "ab12"
    assert weights_sha({"model": {"weights_sha256": "cd34"}}) == "cd34"
    assert weights_sha({"model": {"weights_sha256": None}}) == "unknown" == weights_sha({})


def test_randomisation_grid_wraps_fifty_layers(tmp_path):
    """EfficientNet-Lite0's 50 randomisation steps: 13 tiles a row, each unit a block of 4 rows, not one strip."""
    from benchmark.outputs.randomisation_grid import GRID_COLUMNS, draw_grid

    rng = np.random.default_rng(0)
    layers = [f"blocks.{i}.conv_pwl" for i in range(50)]
    units = [{"layers": layers, "method": "gradcam", "convention": c, "targets": np.arange(51),
              "thumbs": rng.random((51, 112, 112)).astype(np.float16)} for c in ("original_top1", "randomised_top1")]
    path = draw_grid(units, rng.random((224, 224, 3)), "efficientnet_lite0", "chelsea.png", tmp_path / "g.png")
    check_png(path)
    h, w = mpimg.imread(path).shape[:2]
    assert GRID_COLUMNS == 13 and w < 1700 and h > 0.6 * w  # 13 columns x 8 rows of tiles
