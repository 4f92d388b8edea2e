"""Paired bootstrap intervals, ranks, Wilcoxon signed-rank tests with Holm's correction and the best group, with
exact values on fabricated per-image CSV files: the bootstrap equals a naive loop with the same seed, the p-values
equal scipy's, Holm's correction worked by hand, identical methods are not distinguishable, a method better on
every image is significant at n = 30."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_tables import write_faith, write_provenance

from benchmark.cli import build_parser, main
from benchmark.cli.results import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from benchmark.outputs import stats
from benchmark.outputs.tables import build_results_tables

TAG = "efficientnet_lite0"


def fabricate(root, ins: dict, dele: dict, tag=TAG):
    """A quick-profile model folder with ins/del AUC CSVs: ``{method: {image: value}}``."""
    run = root / tag
    write_provenance(run, tag)
    for m in ins:
        write_faith(run / "csv", tag, m, ins[m], dele[m])
    return root


def col(names, values) -> dict:
    return {n: float(v) for n, v in zip(names, values)}


def naive_bootstrap(per_image: list[dict], names: list[str], resamples: int, seed: int) -> np.ndarray:
    """Per resample (a row of default_rng(seed).integers(0, n, (R, n)) over the sorted image names), the mean of
    each column over the drawn images it has, by a plain Python loop."""
    idx = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    out = np.empty((resamples, len(per_image)))
    for r in range(resamples):
        drawn = [names[i] for i in idx[r]]
        for j, col in enumerate(per_image):
            out[r, j] = np.mean([col[x] for x in drawn if x in col])
    return out


def test_bootstrap_means_equal_a_naive_loop_in_blocks():
    rng = np.random.default_rng(5)
    v = rng.random((9, 3))
    v[[1, 4], 2] = np.nan  # the third column lacks two images
    cols = [{str(i): v[i, j] for i in range(9) if np.isfinite(v[i, j])} for j in range(3)]
    naive = naive_bootstrap(cols, [str(i) for i in range(9)], 130, 11)
    for chunk in (7, 64, 500):  # blocks of the count matrix: the same stream, the same resamples
        assert stats.bootstrap_means(v, 130, 11, chunk=chunk) == pytest.approx(naive, rel=1e-12)


def test_table_and_pairwise_intervals_equal_a_naive_loop(tmp_path):
    """Table 4's cell intervals (each method over its own images) and the pairwise intervals of the paired
    differences (over the images both have) are those of a naive loop with the same seed and resamples."""
    rng = np.random.default_rng(1)
    names = [f"img{i:02d}.JPEG" for i in range(12)]
    ins = {m: {n: float(rng.random()) for n in names} for m in ("gradcam", "rise")}
    dele = {m: {n: float(rng.random()) for n in names} for m in ("gradcam", "rise")}
    del ins["rise"]["img03.JPEG"], dele["rise"]["img07.JPEG"]  # rise lacks an image in each
    root = fabricate(tmp_path / "quick", ins, dele)
    built = build_results_tables(root, seed=7, resamples=300)
    t4 = pd.read_csv(root / "tables" / "faithfulness.csv").set_index("method")
    assert (t4.loc["rise", "bootstrap_seed"], t4.loc["rise", "bootstrap_resamples"]) == (7, 300)
    # cells: insertion, deletion and per-image Ins-Del of each method over its own images
    insdel = {m: {n: ins[m][n] - dele[m][n] for n in names if n in ins[m] and n in dele[m]} for m in ins}
    cols = [ins["gradcam"], ins["rise"], dele["rise"], insdel["rise"]]
    naive = naive_bootstrap(cols, names, 300, 7)
    lo, hi = np.percentile(naive, [2.5, 97.5], axis=0)
    got = [t4.loc["gradcam", ["insertion_ci_low", "insertion_ci_high"]], t4.loc["rise", ["insertion_ci_low",
           "insertion_ci_high"]], t4.loc["rise", ["deletion_ci_low", "deletion_ci_high"]],
           t4.loc["rise", ["ins_del_ci_low", "ins_del_ci_high"]]]
    for j, g in enumerate(got):
        assert g.tolist() == pytest.approx([lo[j], hi[j]], rel=1e-12)
    # pairwise insertion: the mean difference over the 11 images both have, resampled from the same matrix
    pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_insertion.csv")
    assert len(pw) == 1 and pw.loc[0, "n"] == 11
    a, b = pw.loc[0, "method_a"], pw.loc[0, "method_b"]
    common = [n for n in names if n in ins["rise"]]
    diff = {n: ins[a][n] - ins[b][n] for n in common}
    d = naive_bootstrap([diff], names, 300, 7)[:, 0]
    assert pw.loc[0, "mean_diff"] == pytest.approx(np.mean(list(diff.values())), rel=1e-12)
    assert [pw.loc[0, "diff_ci_low"], pw.loc[0, "diff_ci_high"]] == pytest.approx(np.percentile(d, [2.5, 97.5]),
                                                                                  rel=1e-12)
    # ranks: 2 methods, so a method's rank is 1 where it is better and 2 where worse
    rk = built["tables"]["ranks"].data.set_index(["metric", "method"])
    wins = np.mean([1.0 if ins[a][n] > ins[b][n] else 2.0 for n in common])
    assert rk.loc[("insertion", a), "mean_rank"] == pytest.approx(wins)
    naive_rank = naive_bootstrap([{n: 1.0 if ins[a][n] > ins[b][n] else 2.0 for n in common}], names, 300, 7)
    assert rk.loc[("insertion", a), ["rank_ci_low", "rank_ci_high"]].tolist() == pytest.approx(
        np.percentile(naive_rank[:, 0], [2.5, 97.5]), rel=1e-12)


@pytest.mark.parametrize("n", [20, 80])  # scipy's exact distribution (n <= 50) and its normal approximation
def test_wilcoxon_p_values_equal_scipy_and_holm_over_all_pairs(tmp_path, n):
    rng = np.random.default_rng(n)
    names = [f"i{k:03d}" for k in range(n)]
    methods = ["gradcam", "layercam", "rise", "occlusion"]
    shift = {"gradcam": 0.0, "layercam": 0.02, "rise": 0.1, "occlusion": 0.1}
    base = rng.random(n)
    ins = {m: {x: float(np.round(base[k] + shift[m] + rng.normal(0, 0.05), 3)) for k, x in enumerate(names)}
           for m in methods}  # rounded: ties and zero differences occur
    dele = {m: {x: 0.1 for x in names} for m in methods}
    root = fabricate(tmp_path / "quick", ins, dele)
    build_results_tables(root, resamples=50)
    pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_insertion.csv")
    assert len(pw) == 6 and set(pw["n"]) == {n}
    for row in pw.itertuples():
        d = np.array([ins[row.method_a][x] - ins[row.method_b][x] for x in names])
        ref = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
        assert row.wilcoxon_statistic == pytest.approx(ref.statistic)
    assert pw["p_holm"].to_numpy() == pytest.approx(stats.holm(pw["p_value"].to_numpy()), rel=1e-12)
    assert set(pw["zero_method"]) == {"wilcox"} and set(pw["alternative"]) == {"two-sided"}
    # deletion: every method has 0.1 on every image: all differences are 0, p = 1, nothing distinguishable
    pd_ = pd.read_csv(root / "tables" / f"pairwise_{TAG}_deletion.csv")
    assert (pd_["p_value"] == 1.0).all() and (~pd_["significant"]).all()


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0; 0.9 x 1 -> running max 1.0


def test_identical_methods_are_not_distinguishable(tmp_path):
    """Two methods with the same value on every image: difference 0, interval [0, 0], p = 1, both in the best
    group; a third method worse on every image is outside it."""
    rng = np.random.default_rng(3)
    names = [f"i{k:02d}" for k in range(30)]
    v = rng.random(30)
    ins = {"gradcam": col(names, v), "layercam": col(names, v),
           "rise": col(names, v - 0.1 - rng.random(30) / 10)}
    dele = {m: col(names, rng.random(30)) for m in ins}
    root = fabricate(tmp_path / "quick", ins, dele)
    built = build_results_tables(root, resamples=200)
    pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_insertion.csv")
    same = pw[(pw["method_a"] != "rise") & (pw["method_b"] != "rise")]
    assert len(same) == 1
    row = same.iloc[0]
    assert (row.mean_diff, row.diff_ci_low, row.diff_ci_high, row.p_value, row.p_holm) == (0, 0, 0, 1, 1)
    assert not row.significant and pd.isna(row.better)
    md = built["tables"][f"pairwise_{TAG}_insertion"].markdown()
    assert md.count("| not distinguishable |") == 1 and md.count(" better |") == 2  # both beat rise
    assert "layercam is not distinguishable from it" in md or "gradcam is not distinguishable from it" in md
    rk = built["tables"]["ranks"].data.set_index(["metric", "method"])
    assert rk.loc[("insertion", "gradcam"), "group"] == rk.loc[("insertion", "layercam"), "group"] == \
        "not distinguishable from the best"
    assert rk.loc[("insertion", "rise"), "group"] == ""
    assert rk.loc[("insertion", "gradcam"), "mean_rank"] == rk.loc[("insertion", "layercam"), "mean_rank"] == 1.5
    t4 = pd.read_csv(root / "tables" / "faithfulness.csv").set_index("method")
    assert t4.loc["gradcam", "insertion_group"] == "not distinguishable from the best"
    assert "≈best" in built["tables"]["table4"].markdown()


def test_better_on_every_image_is_significant_at_n30(tmp_path):
    """Better on each of 30 images (distinct differences): the exact two-sided p is 2 / 2^30, the method is best
    in insertion, deletion and Ins-Del; ablation ids stay out of the comparison."""
    rng = np.random.default_rng(4)
    names = [f"i{k:02d}" for k in range(30)]
    base, gap = rng.random(30), 0.01 + rng.permutation(30) / 1000  # distinct positive gaps
    ins = {"pcampm": col(names, base + gap), "gradcam": col(names, base),
           "pcampm_step1": col(names, base + 1.0)}  # an ablation id, far better: not compared
    dele = {"pcampm": col(names, base / 2), "gradcam": col(names, base / 2 + gap),
            "pcampm_step1": col(names, base / 2)}
    root = fabricate(tmp_path / "quick", ins, dele)
    built = build_results_tables(root, resamples=500)
    for metric in ("insertion", "deletion", "ins_del"):
        pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_{metric}.csv")
        assert len(pw) == 1 and pw.loc[0, "method_a"] == "pcampm" and pw.loc[0, "better"] == "pcampm"
        assert pw.loc[0, "p_holm"] < 0.05 and bool(pw.loc[0, "significant"])
    pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_insertion.csv")
    assert pw.loc[0, "p_value"] == pytest.approx(2 / 2 ** 30, rel=1e-9)
    assert pw.loc[0, "diff_ci_low"] > 0
    rk = built["tables"]["ranks"].data.set_index(["metric", "method"])
    assert rk.loc[("insertion", "pcampm"), ["mean_rank", "rank_ci_low", "rank_ci_high", "group"]].tolist() == \
        [1.0, 1.0, 1.0, "best"]
    assert "pcampm_step1" not in set(rk.reset_index()["method"])
    md = built["tables"]["table4"].markdown()
    assert "| pcampm | 30 |" in md and md.count(" best |") == 3  # insertion, deletion and Ins-Del cells
    assert "Best: pcampm, better than every other method" in built["tables"][f"pairwise_{TAG}_deletion"].markdown()


def test_bootstrap_options_on_the_command_line(tmp_path, capsys):
    assert (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED) == (stats.DEFAULT_RESAMPLES, stats.DEFAULT_SEED)
    args = build_parser().parse_args(["report", "--bootstrap-resamples", "99", "--bootstrap-seed", "5"])
    assert (args.bootstrap_resamples, args.bootstrap_seed) == (99, 5)
    names = [f"i{k}" for k in range(5)]
    ins = {m: {x: float(k + j) for k, x in enumerate(names)} for j, m in enumerate(("gradcam", "rise"))}
    root = fabricate(tmp_path / "quick", ins, ins)
    assert main(["tables", "--profile", "quick", "--out", str(root), "--bootstrap-resamples", "64",
                 "--bootstrap-seed", "9"]) == 0
    pw = pd.read_csv(root / "tables" / f"pairwise_{TAG}_insertion.csv")
    assert (pw.loc[0, "bootstrap_resamples"], pw.loc[0, "bootstrap_seed"]) == (64, 9)
    assert "64 resamples, seed 9" in (root / "tables" / "tables.md").read_text()
    assert main(["tables", "--profile", "quick", "--out", str(root), "--bootstrap-resamples", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_report_shows_long_pairwise_tables_as_the_best_against_every_other(tmp_path):
    from benchmark.outputs.report import MAX_PAIRS, _report_table

    names = [f"i{k}" for k in range(6)]
    ins = {f"m{j:02d}": {x: float(j + k / 10) for k, x in enumerate(names)} for j in range(11)}  # m10 best
    root = fabricate(tmp_path / "quick", ins, ins)
    t = build_results_tables(root, resamples=20)["tables"][f"pairwise_{TAG}_insertion"]
    assert len(t.rows) == 55 > MAX_PAIRS
    shown = _report_table(t)
    assert [r[:2] for r in shown.rows] == [["m10", f"m{j:02d}"] for j in range(9, -1, -1)]
    assert "10 of 55 pairs" in shown.notes[-1] and len(t.rows) == 55  # the written table keeps every pair


def test_nothing_to_compare_is_said_not_guessed(tmp_path):
    """One method with values and one with empty CSV files: intervals where there are 2 images, no ranks or pairwise
    tables, and the reason listed."""
    root = fabricate(tmp_path / "quick", {"rise": {"a": 0.5, "b": 0.1}}, {"rise": {"a": 0.2}})
    csv = root / TAG / "csv"
    (csv / f"ins_auc_{TAG}_gradcam.csv").write_text(",0\n")
    (csv / f"del_auc_{TAG}_gradcam.csv").write_text(",0\n")
    built = build_results_tables(root, resamples=50)
    assert "ranks" not in built["tables"] and not any(k.startswith("pairwise_") for k in built["tables"])
    assert any(m.startswith("ranks and pairwise tables:") for m in built["missing"])
    assert built["tables"]["table4"].rows[0][:5] == ["rise", "2/1/1", "0.300 ± 0.200 [0.100, 0.500]", "0.200",
                                                     "0.300"]
