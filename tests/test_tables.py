"""Tables from small hand-written CSV files: exact means, standard errors and image counts; published values beside
ours (shown, never expected); missing methods and models reported; Tables 2-3, Table 5 and the randomisation
summary; the `tables` command."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.core.csvfiles import read_randomisation
from benchmark.outputs import published as pub
from benchmark.outputs.runs import FLOOR_METHODS
from benchmark.outputs.tables import build_results_tables, build_tables, mean_se

SQRT3 = np.sqrt(3.0)


def write_values(path, values: dict) -> None:
    """A ``,0`` CSV in the reference format: header ``,0``, rows ``name,value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",0\n" + "".join(f"{k},{v!r}\n" for k, v in values.items()))


def write_curves(path, curves: dict) -> None:
    s = len(next(iter(curves.values())))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("," + ",".join(map(str, range(s))) + "\n" +
                    "".join(f"{k}," + ",".join(repr(float(x)) for x in v) + "\n" for k, v in curves.items()))


def write_provenance(run_dir, tag, profile="quick", steps=16, layers=None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    prov = {"protocol": {"profile": {"name": profile, "quick": profile == "quick", "image_size": 224,
                                     "antialias": False}, "model": tag, "weights": "imagenet", "seed": 0},
            "metrics": {m: {"steps": steps, "blur_kernel": 11, "blur_sigma": 5.0} for m in ("insertion", "deletion")},
            "model": {"layer_sets": {"paper": layers or ["a1", "a2", "a3", "a4", "a5"]}, "polycam_preset": "paper"},
            "data": "demo", "config": {"data": "demo", "image_list": None}}
    (run_dir / "provenance.json").write_text(json.dumps(prov))


def write_faith(csv, tag, method, ins: dict, dele: dict) -> None:
    write_values(csv / f"ins_auc_{tag}_{method}.csv", ins)
    write_values(csv / f"del_auc_{tag}_{method}.csv", dele)


@pytest.fixture
def results(tmp_path):
    """results/quick with vgg16 (gradcam, pcampm, a plugin method) and resnet50 (gradcam only)."""
    root = tmp_path / "quick"
    csv = root / "vgg16" / "csv"
    write_provenance(root / "vgg16", "vgg16", layers=["features.3", "features.8", "features.15", "features.22",
                                                      "features.29"])
    write_faith(csv, "vgg16", "gradcam", {"a.JPEG": 0.1, "b.JPEG": 0.3}, {"a.JPEG": 0.05, "b.JPEG": 0.15})
    # pcampm: 3 insertion values, 2 deletion values -> Ins-Del over the 2 images having both
    write_faith(csv, "vgg16", "pcampm", {"a.JPEG": 0.5, "b.JPEG": 0.7, "c.JPEG": 0.9}, {"a.JPEG": 0.2, "b.JPEG": 0.2})
    write_faith(csv, "vgg16", "my_method", {"a.JPEG": 0.4}, {"a.JPEG": 0.1})
    root2 = root / "resnet50"
    write_provenance(root2, "resnet50")
    write_faith(root2 / "csv", "resnet50", "gradcam", {"a.JPEG": 0.6, "b.JPEG": 0.6}, {"a.JPEG": 0.3, "b.JPEG": 0.1})
    return root


def test_mean_se_is_sample_std_over_sqrt_n():
    assert mean_se([0.1, 0.3]) == (2, pytest.approx(0.2), pytest.approx(0.1))
    n, m, se = mean_se([1.0, np.nan, 3.0, 5.0])  # non-finite values are not counted
    assert (n, m) == (3, pytest.approx(3.0)) and se == pytest.approx(2.0 / SQRT3)
    assert np.isnan(mean_se([0.4])[2]) and mean_se([])[0] == 0


def test_table4_exact_means_se_n_and_paper_columns(results):
    built = build_results_tables(results)
    df = built["tables"]["table4"].data.set_index(["model", "method"])
    g = df.loc[("vgg16", "gradcam")]
    assert (g.n_ins, g.n_del, g.n_both) == (2, 2, 2)
    assert (g.insertion, g.insertion_se) == (pytest.approx(0.2), pytest.approx(0.1))
    assert (g.deletion, g.deletion_se) == (pytest.approx(0.1), pytest.approx(0.05))
    assert (g.ins_del, g.ins_del_se) == (pytest.approx(0.1), pytest.approx(0.05))
    p = df.loc[("vgg16", "pcampm")]
    assert (p.n_ins, p.n_del, p.n_both) == (3, 2, 2)
    assert (p.insertion, p.insertion_se) == (pytest.approx(0.7), pytest.approx(0.2 / SQRT3))
    assert (p.deletion, p.deletion_se) == (pytest.approx(0.2), pytest.approx(0.0))
    assert (p.ins_del, p.ins_del_se) == (pytest.approx(0.4), pytest.approx(0.1))  # 0.3, 0.5 per image
    r = df.loc[("resnet50", "gradcam")]
    assert (r.insertion, r.deletion, r.ins_del, r.ins_del_se) == (pytest.approx(0.6), pytest.approx(0.2),
                                                                  pytest.approx(0.4), pytest.approx(0.1))
    # published values sit beside ours, labelled as paper, and are not our numbers
    assert (g.paper_insertion, g.paper_deletion, g.paper_ins_del) == pub.FAITHFULNESS["vgg16"]["gradcam"]
    assert (r.paper_insertion, r.paper_deletion, r.paper_ins_del) == (0.65, 0.31, 0.35)
    assert g.paper_insertion != pytest.approx(g.insertion)
    assert np.isnan(df.loc[("vgg16", "my_method")].paper_insertion)
    md = (results / "tables" / "faithfulness.md").read_text()
    # 95 % bootstrap interval of a mean of 2 values: the resampled means are v1, (v1 + v2) / 2, v2
    # (p = 1/4, 1/2, 1/4), so the 2.5th and 97.5th percentiles are v1 and v2. my_method has 1 image, so the
    # comparison is on that image only: nothing is distinguishable, every vgg16 method is in the best group
    assert ("| gradcam | 2 | 0.200 ± 0.100 [0.100, 0.300] ≈best | 0.100 ± 0.050 [0.050, 0.150] ≈best | "
            "0.100 ± 0.050 [0.050, 0.150] ≈best | 0.58 / 0.18 / 0.40 | 2 | 0.600 ± 0.000 [0.600, 0.600] |" in md)
    assert "| pcampm | 3/2/2 | 0.700 ± 0.115 [0.500, 0.900] ≈best |" in md
    assert "| my_method | 1 | 0.400 ≈best | 0.100 ≈best | 0.300 ≈best |" in md  # n = 1: no SE, no interval
    assert (g.insertion_ci_low, g.insertion_ci_high) == (pytest.approx(0.1), pytest.approx(0.3))
    assert (g.bootstrap_seed, g.bootstrap_resamples, g.ci_level) == (0, 10000, 0.95)
    assert g.insertion_group == "not distinguishable from the best" and r.insertion_group == ""  # 1 method
    assert "10000 resamples, seed 0" in md
    assert "VGG16 paper Ins / Del / Ins-Del" in md and "ResNet50 paper Ins / Del / Ins-Del" in md
    assert "profile `quick`" in md and "16 insertion/deletion steps" in md
    # paper rows we did not compute are shown with the published values and listed as missing
    assert "| rise | 0 | - | - | - | 0.62 / 0.18 / 0.44 | 0 | - | - | - | 0.67 / 0.28 / 0.39 |" in md
    t4 = built["tables"]["table4"]
    assert any(m.startswith("vgg16: no insertion/deletion CSV for integratedgradient") for m in t4.missing)
    assert any(m.startswith("resnet50:") and "pcampm" in m for m in t4.missing)
    # Table 1 keeps the CAM-based rows; the plugin method is only in Table 4
    t1 = built["tables"]["table1"].data
    assert set(t1["method"]) == set(pub.TABLE1_METHODS) and "my_method" not in set(t1["method"])
    for ext in ("csv", "md", "tex"):
        assert (results / "tables" / f"table1_cam.{ext}").stat().st_size > 100
    assert r"$\pm$" in (results / "tables" / "faithfulness.tex").read_text()


def test_missing_models_and_tables_are_reported(tmp_path):
    root = tmp_path / "paper"
    write_faith(root / "vgg16" / "csv", "vgg16", "gradcam", {"a": 0.5}, {"a": 0.25})
    built = build_results_tables(root)
    t4 = built["tables"]["table4"]
    assert "model resnet50: no results folder (one of the paper's two models)" in t4.missing
    assert "profile unknown (no provenance.json)" in t4.notes[0]
    assert any("Table 5" in m for m in built["missing"])
    assert any("randomisation" in m for m in built["missing"])
    assert any("Tables 2-3: vgg16" in m for m in built["missing"])
    text = (root / "tables" / "tables.md").read_text()
    assert "## Not built" in text and "Table 5" in text
    # one model folder: its own tables, no complaint about the other paper model
    single = build_tables(root / "vgg16", "vgg16")
    assert single["markdown"] == root / "vgg16" / "tables" / "faithfulness.md"
    assert single["table"].set_index("method").loc["gradcam", "ins_del"] == pytest.approx(0.25)
    assert not any("resnet50" in m for m in single["tables"]["table4"].missing)


def test_tables_2_3_from_ablation_csvs(results):
    csv = results / "vgg16" / "csv"
    # PCAM± after step k: insertion 0.1 k (step 5 = pcampm, already written above); CAM± on layer i: 0.05 i
    for k in range(1, 5):
        write_faith(csv, "vgg16", f"pcampm_step{k}", {"a.JPEG": 0.1 * k, "b.JPEG": 0.1 * k + 0.2},
                    {"a.JPEG": 0.0, "b.JPEG": 0.0})
    for i in range(1, 6):
        write_faith(csv, "vgg16", f"campm_l{i}", {"a.JPEG": 0.05 * i}, {"a.JPEG": 0.01})
    write_faith(csv, "vgg16", "pcampm_nolnorm", {"a.JPEG": 0.33}, {"a.JPEG": 0.11})
    built = build_results_tables(results)
    t = built["tables"]["ablation_vgg16"]
    assert t.title == pub.TABLE2_TITLE
    ids = [r[2] for r in t.rows]
    assert ids == ["pcampm_step1", "pcampm_step2", "pcampm_step3", "pcampm_step4", "pcampm", "campm_l5", "campm_l4",
                   "campm_l3", "campm_l2", "campm_l1", "pcampm_nolnorm"]
    df = t.data.set_index("method")
    assert df.loc["pcampm_step3", "insertion"] == pytest.approx(0.4)  # (0.3 + 0.5) / 2
    assert df.loc["pcampm_step3", "insertion_se"] == pytest.approx(0.1)
    assert df.loc["campm_l2", "insertion"] == pytest.approx(0.1) and df.loc["campm_l2", "n_ins"] == 1
    assert df.loc["campm_l2", "ins_del"] == pytest.approx(0.09)
    # layer names: ours from provenance, the paper's for the matching published row
    assert df.loc["pcampm_step1", "layer"] == "features.29" and df.loc["pcampm_step1", "paper_layer"] == "block5_conv3"
    assert tuple(df.loc["pcampm_step1", ["paper_insertion", "paper_deletion", "paper_ins_del"]]) == (0.60, 0.18, 0.42)
    assert tuple(df.loc["campm_l1", ["paper_insertion", "paper_deletion", "paper_ins_del"]]) == (0.49, 0.23, 0.26)
    assert np.isnan(df.loc["pcampm_nolnorm", "paper_insertion"])  # B.2 has no published number
    assert any("PCAM+" in m for m in t.missing)  # pcamp ablations absent
    md = (results / "tables" / "ablation_vgg16.md").read_text()
    assert "| PCAM± | l5 features.29 | pcampm_step1 | 2 | 0.200 ± 0.100 [0.100, 0.300] |" in md


def test_published_ablation_rows_are_consistent_with_table1():
    """Transcription check: the last fusion step is Table 1's row, the first equals the deepest isolated layer."""
    for tag in pub.MODELS:
        for w in ("p", "m", "pm"):
            assert pub.ABLATION[tag][f"pcam{w}"] == pub.FAITHFULNESS[tag][f"pcam{w}"]
            assert pub.ABLATION[tag][f"pcam{w}_step1"] == pub.ABLATION[tag][f"cam{w}_l5"]
        assert set(pub.SENSITIVITY[tag]) == set(pub.TABLE4_METHODS) - {"sscam"}


def test_table5_from_sens_csvs(results):
    write_values(results / "vgg16" / "csv" / "sens_vgg16_gradcam.csv", {"a.JPEG": 1.0, "b.JPEG": 3.0})
    write_values(results / "vgg16" / "csv" / "sens_vgg16_pcampm.csv", {"a.JPEG": 0.5, "b.JPEG": 0.5, "c.JPEG": 2.0})
    t = build_results_tables(results)["tables"]["table5"]
    df = t.data.set_index(["model", "method"])
    assert df.loc[("vgg16", "gradcam"), ["n", "max_sensitivity", "max_sensitivity_se"]].tolist() == \
        [2, pytest.approx(2.0), pytest.approx(1.0)]
    assert df.loc[("vgg16", "pcampm"), "max_sensitivity"] == pytest.approx(1.0)
    assert df.loc[("vgg16", "pcampm"), "max_sensitivity_se"] == pytest.approx(0.5)
    assert df.loc[("vgg16", "gradcam"), "paper_max_sensitivity"] == 0.0625
    assert any(m.startswith("resnet50: no max-sensitivity CSV (sens_resnet50_<method>.csv); score it with "
                            "`--metrics sensitivity`") for m in t.missing)
    assert "| gradcam | 2 | 2.0000 ± 1.0000 [1.0000, 3.0000] | 0.0625 |" in t.markdown()
    assert df.loc[("vgg16", "gradcam"), ["max_sensitivity_ci_low", "max_sensitivity_ci_high"]].tolist() == [1.0, 3.0]


def test_remove_and_classify_ratios_from_rc_details(results):
    csv = results / "vgg16" / "csv"
    # 3 images, bits [top-k for k=.1,.3,.5,.7,.9 | random for the same k]
    write_curves(csv / "rc_details_vgg16_gradcam.csv", {
        "a.JPEG": [1, 1, 0, 0, 0, 1, 1, 1, 1, 0],
        "b.JPEG": [0, 1, 0, 0, 0, 1, 1, 1, 0, 0],
        "c.JPEG": [1, 0, 1, 0, 0, 1, 0, 1, 0, 0]})
    write_values(csv / "rc_auc_vgg16_gradcam.csv", {"a.JPEG": 0.0, "b.JPEG": 0.0, "c.JPEG": 0.0})
    built = build_results_tables(results)
    t = built["tables"]["remove_classify"]
    row = t.data.set_index(["model", "method"]).loc[("vgg16", "gradcam")]
    # k=.1: 2/3; k=.3: 2/2; k=.5: 1/3; k=.7: 0/1; k=.9: no random-erased image correct -> NaN
    assert row["n"] == 3
    assert row["ratio_k0.1"] == pytest.approx(2 / 3) and row["ratio_k0.3"] == pytest.approx(1.0)
    assert row["ratio_k0.5"] == pytest.approx(1 / 3) and row["ratio_k0.7"] == 0.0 and np.isnan(row["ratio_k0.9"])
    assert row["ratio_mean"] == pytest.approx((2 / 3 + 1 + 1 / 3 + 0) / 4)
    assert row["protocol"] == "harness"  # the metrics stage's choices (docs/calm.md)
    assert "| VGG16 | gradcam | harness | 3 | 0.667 | 1.000 | 0.333 | 0.000 | nan | 0.500 |" in t.markdown()
    assert (results / "tables" / "remove_classify.csv").is_file()
    assert "remove_classify" not in build_results_tables(results / "resnet50")["tables"]


def test_randomisation_summary(results):
    rows = []
    for conv, base in (("original_top1", 0.0), ("randomised_top1", 0.5)):
        for img, off in (("a.JPEG", 0.1), ("b.JPEG", 0.3)):
            for step, layer in ((1, "classifier.6"), (2, "features.28")):
                v = base + off * step
                rows.append({"image": img, "method": "gradcam", "convention": conv, "step": step, "layer": layer,
                             "spearman": v, "spearman_abs": abs(v), "ssim": v / 2, "hog": v / 4})
    pd.DataFrame(rows).to_csv(results / "vgg16" / "csv" / "randomisation_vgg16.csv", index=False)
    t = build_results_tables(results)["tables"]["randomisation"]
    df = t.data.set_index(["model", "method", "convention", "step"])
    last = df.loc[("vgg16", "gradcam", "original_top1", 2)]
    assert last["layer"] == "features.28" and last["n_spearman"] == 2
    assert last["spearman"] == pytest.approx(0.4) and last["spearman_se"] == pytest.approx(0.2)  # 0.2, 0.6
    assert last["ssim"] == pytest.approx(0.2) and last["hog"] == pytest.approx(0.1)
    assert df.loc[("vgg16", "gradcam", "randomised_top1", 1), "spearman"] == pytest.approx(0.7)
    assert t.rows[0][:5] == ["vgg16", "gradcam", "original_top1", "2 (features.28)", "2"]
    assert t.rows[0][5] == "0.400 ± 0.200 [0.200, 0.600]"
    assert (last["spearman_ci_low"], last["spearman_ci_high"]) == (pytest.approx(0.2), pytest.approx(0.6))
    assert "resnet50: no randomisation_resnet50.csv" in t.missing


def test_randomisation_csv_with_wrong_columns_is_refused(tmp_path):
    path = tmp_path / "randomisation_vgg16.csv"
    pd.DataFrame({"image": ["a"], "method": ["gradcam"], "step": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing column.*convention"):
        read_randomisation(path)


def test_tables_command_all_models_and_one_model(results, capsys):
    """The `tables` command in-process (the subprocess path is covered by test_cli)."""
    assert main(["tables", "--profile", "quick", "--out", str(results)]) == 0
    out = capsys.readouterr().out
    assert (results / "tables" / "faithfulness.csv").exists() and (results / "tables" / "tables.tex").exists()
    assert "models: vgg16, resnet50" in out and "VGG16 Insertion" in out and "ResNet50 Insertion" in out
    assert "Missing:" in out
    assert main(["tables", "--model", "resnet50", "--profile", "quick", "--out", str(results)]) == 0
    df = pd.read_csv(results / "resnet50" / "tables" / "faithfulness.csv")
    assert set(df["model"]) == {"resnet50"}
    # CSV files without the metrics.h5 they were written from: used, and said once per folder
    md = (results / "tables" / "tables.md").read_text()
    assert "## Files read that nothing could vouch for" in md
    for tag in ("vgg16", "resnet50"):
        assert md.count(f"- {tag}: csv/: no metrics.h5 in this folder") == 1
    assert main(["tables", "--profile", "paper", "--out", str(results / "nothing_here")]) == 2
    assert "no results folder" in capsys.readouterr().err


@pytest.mark.parametrize("name, text, says", [
    ("ins_auc_vgg16_gradcam.csv", ",0\na.JPEG,0.1\nb.JPEG,abc\n",
     "the value 'abc' of 'b.JPEG' (column '0') is not a number"),
    ("del_auc_vgg16_pcampm.csv", "\x00\x01garbage", "has no value column"),
])
def test_a_damaged_values_csv_is_named_with_the_remedy(results, capsys, name, text, says):
    """A values CSV that cannot be read as its name says stops `tables` with its path, the first bad value and how
    to write it again: never a traceback, never a table quietly without that method."""
    path = results / "vgg16" / "csv" / name
    path.write_text(text)
    assert main(["tables", "--model", "vgg16", "--profile", "quick", "--out", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}" in err and says in err and "Traceback" not in err
    assert "written again from metrics.h5 by `python -m benchmark metrics`" in err


@pytest.mark.parametrize("text, says", [("{bad json", "is not readable JSON (Expecting property name"),
                                         ("[1, 2]", "holds a list, not a JSON object")])
def test_a_damaged_provenance_is_named_with_the_remedy(results, capsys, text, says):
    path = results / "vgg16" / "provenance.json"
    path.write_text(text)
    assert main(["tables", "--model", "vgg16", "--profile", "quick", "--out", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path} {says}" in err and "Traceback" not in err
    assert "every stage writes it again (e.g. `python -m benchmark metrics` on this folder)" in err


def test_a_damaged_curves_csv_is_named_in_the_report(results, capsys):
    """The curves feed only a figure: the report is still written and says why that figure is not drawn."""
    run = results / "vgg16"
    write_curves(run / "csv" / "ins_details_vgg16_gradcam.csv", {"a.JPEG": [0.1, 0.2], "b.JPEG": [0.3, 0.4]})
    assert main(["report", "--model", "vgg16", "--profile", "quick", "--out", str(results)]) == 0
    assert (run / "figures" / "curves_vgg16.png").exists()
    path = run / "csv" / "ins_details_vgg16_gradcam.csv"
    path.write_text(",0,1\na.JPEG,0.1,0.2\nb.JPEG,0.3,nope\n")
    assert main(["report", "--model", "vgg16", "--profile", "quick", "--out", str(results)]) == 0
    report = (run / "report.md").read_text()
    assert (f"vgg16: curves figure not drawn (could not be drawn: CSVFileError: {path}: the value 'nope' of "
            "'b.JPEG' (column '1') is not a number") in report
    # the figure of the earlier report showed curves that are no longer those of the CSV files
    assert "; the older curves_vgg16.png was removed" in report
    assert not (run / "figures" / "curves_vgg16.png").exists()


# ------------------------------------------------------------------------------------------ floor, symbols, words
def test_floor_rows_at_the_bottom_never_compared(results):
    """The model-independent baselines are the floor: last rows, labelled, out of the comparisons and marks; a
    method whose mean is no better than the best floor mean is marked in that cell."""
    csv = results / "vgg16" / "csv"
    write_faith(csv, "vgg16", "centre_prior", {"a.JPEG": 0.35, "b.JPEG": 0.25}, {"a.JPEG": 0.3, "b.JPEG": 0.3})
    write_faith(csv, "vgg16", "random_map", {"a.JPEG": 0.1, "b.JPEG": 0.1}, {"a.JPEG": 0.2, "b.JPEG": 0.2})
    built = build_results_tables(results)
    comp = built["analyses"]["vgg16"]["comparisons"]["insertion"]
    assert "centre_prior" not in comp["methods"] and "random_map" not in comp["methods"]
    assert not set(built["tables"]["ranks"].data["method"]) & set(FLOOR_METHODS)
    assert not any("centre_prior" in r[:2] for k, t in built["tables"].items() if k.startswith("pairwise")
                   for r in t.rows)
    t4 = built["tables"]["table4"]
    labels = [r[0] for r in t4.rows]
    assert labels[-2:] == ["random_map (floor)", "centre_prior (floor)"]  # FLOOR_METHODS order
    df = t4.data.set_index(["model", "method"])
    assert df.loc[("vgg16", "centre_prior"), "floor"] and not df.loc[("vgg16", "gradcam"), "floor"]
    assert df.loc[("vgg16", "centre_prior"), "insertion_group"] == ""
    # gradcam: insertion 0.2 < 0.3 (centre prior) does not clear it; deletion 0.1 < 0.2 (the best floor:
    # random_map) and Ins-Del 0.1 > 0.0 (centre prior) do
    g = df.loc[("vgg16", "gradcam")]
    assert not g.insertion_clears_floor and g.deletion_clears_floor and g.ins_del_clears_floor
    assert df.loc[("vgg16", "pcampm"), "insertion_clears_floor"]  # 0.7 > 0.3
    row = next(r for r in t4.rows if r[0] == "gradcam")
    assert row[2] == "0.200 ± 0.100 [0.100, 0.300] ≈best (floor not cleared)" and "floor" not in row[3]
    floor_row = next(r for r in t4.rows if r[0] == "centre_prior (floor)")
    assert "best" not in " ".join(floor_row)
    assert any(n.startswith("Floor: model-independent baselines") for n in t4.notes)
    assert "(floor): a model-independent baseline" in t4.symbols and "(floor not cleared):" in t4.symbols
    t1 = built["tables"]["table1"]
    assert [r[0] for r in t1.rows][-2:] == ["random_map (floor)", "centre_prior (floor)"]
    md = t4.markdown()
    assert md.index("| centre_prior (floor) |") < md.index("Symbols: ")  # the line is under the table


def test_floor_ids_are_the_registered_baselines():
    from methods import METHODS, get_method_class

    assert set(FLOOR_METHODS) == {m for m in METHODS if get_method_class(m).family == "baseline"}


SYMBOLS = {"±": "a ± b:", "≈best": "≈best:", "(floor)": "(floor):", "(floor not cleared)": "(floor not cleared):",
           "↑": "↑ higher", "↓": "↓ lower"}


def test_every_symbol_of_every_table_is_explained_under_it(results):
    write_values(results / "vgg16" / "csv" / "sens_vgg16_gradcam.csv", {"a.JPEG": 1.0, "b.JPEG": 3.0})
    write_faith(results / "vgg16" / "csv", "vgg16", "edge_map", {"a.JPEG": 0.3}, {"a.JPEG": 0.3})
    built = build_results_tables(results)
    assert {"table1", "table4", "table5", "ranks", "pairwise_vgg16_insertion"} <= set(built["tables"])
    for key, t in built["tables"].items():
        cells = [c for r in t.rows for c in r]
        assert t.symbols.startswith("Symbols: "), key
        assert t.markdown().rstrip().split("\n")[-1] == t.symbols or t.missing, key  # under the rows
        for sym, text in SYMBOLS.items():
            if any(sym in c for c in cells + t.header):
                assert text in t.symbols, (key, sym)
        if "-" in cells:
            assert "-: " in t.symbols, key
        if any(c.count("/") == 2 and c.replace("/", "").isdigit() for c in cells):
            assert "n_ins/n_del/n_both" in t.symbols, key
        if any("[" in c for c in cells):
            assert "[lo, hi]: 95 % bootstrap interval" in t.symbols, key
    t4 = built["tables"]["table4"]
    assert "n_ins/n_del/n_both" in t4.symbols and "-: no value" in t4.symbols  # pcampm 3/2/2; rise not computed
    assert "Symbols: " in (results / "tables" / "tables.md").read_text()
    assert "Symbols: " in (results / "tables" / "faithfulness.tex").read_text()


def test_paper_wording_only_where_a_paper_column_is_shown(tmp_path):
    root = tmp_path / "quick"
    write_provenance(root / "efficientnet_lite0", "efficientnet_lite0")
    write_faith(root / "efficientnet_lite0" / "csv", "efficientnet_lite0", "gradcam", {"a": 0.5, "b": 0.4},
                {"a": 0.25, "b": 0.2})
    write_values(root / "efficientnet_lite0" / "csv" / "sens_efficientnet_lite0_gradcam.csv", {"a": 1.0})
    built = build_results_tables(root)
    text = (root / "tables" / "tables.md").read_text()
    assert "(ours vs paper)" not in text and "paper columns" not in text and "paper:" not in text
    assert built["tables"]["table4"].title.startswith("Table 4: Faithfulness")
    assert built["tables"]["table5"].title == "Table 5: Sensitivity max table"
    assert "Profile `quick` is not the paper's protocol (cheaper parameters): these numbers are not comparable" in text


def test_randomisation_n_cells_are_explained(results):
    """A similarity undefined on some images (Spearman of a constant map) shows its own n in its cell; one undefined
    on every image shows `-`; both are explained under the table."""
    rows = []
    for img, sp in (("a.JPEG", np.nan), ("b.JPEG", 0.2)):
        for step in (1, 2):
            rows.append({"image": img, "method": "gradcam", "convention": "original_top1", "step": step,
                         "layer": f"l{step}", "spearman": sp, "spearman_abs": np.nan, "ssim": 0.5, "hog": 0.1})
    pd.DataFrame(rows).to_csv(results / "vgg16" / "csv" / "randomisation_vgg16.csv", index=False)
    t = build_results_tables(results)["tables"]["randomisation"]
    assert t.rows[0][4:7] == ["2", "0.200 (n=1)", "-"]
    assert "(n=k): the similarity is defined on k of the n images only" in t.symbols
    assert "-: the similarity is undefined on every image" in t.symbols


def test_tables_of_a_missing_profile_name_the_one_that_exists(results, capsys):
    """`tables --profile paper` with results only under results/quick says where they are."""
    assert main(["tables", "--profile", "paper", "--out", str(results.parent / "paper")]) == 2
    err = capsys.readouterr().err
    assert "no results folder" in err and f"results exist in {results} (--profile quick" in err
