"""The per-image values of one model, turned into bootstrap intervals of every table cell and the comparison of
every two methods (:mod:`benchmark.outputs.stats`); the tables are rendered in :mod:`benchmark.outputs.tables`.

One bootstrap per model and per family of per-image files, over the images of that family in sorted name order:
insertion and deletion (every method, ablation ids included: the cells of Tables 1-4, the ranks and the pairwise
comparisons all share this one), max-sensitivity, and the randomisation CSV. The same seed is used for each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats

METRICS = {"insertion": True, "deletion": False, "ins_del": True}  # metric -> higher is better
METRIC_LABELS = {"insertion": "Insertion", "deletion": "Deletion", "ins_del": "Ins-Del"}
GROUP_BEST, GROUP_TIED = "best", "not distinguishable from the best"


def _frame(series: dict[str, pd.Series], names: list[str]) -> pd.DataFrame:
    """[images, methods], NaN where a method has no (finite) value for an image."""
    cols = {m: s[~s.index.duplicated()].reindex(names) for m, s in series.items()}
    df = pd.DataFrame(cols, index=names, dtype=np.float64)
    return df.where(np.isfinite(df))


def _intervals(boot: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = stats.percentile_interval(boot, level)
    small = np.asarray(n) < 2  # as for the standard error: no interval from fewer than 2 images
    lo[small], hi[small] = np.nan, np.nan
    return lo, hi


def cell_intervals(frame: pd.DataFrame, seed: int = stats.DEFAULT_SEED, resamples: int = stats.DEFAULT_RESAMPLES,
                   level: float = stats.LEVEL) -> tuple[pd.Series, pd.Series]:
    """The bootstrap interval of the mean of each column of ``frame`` [images, cells] (NaN = no value), one
    resample matrix for all columns; NaN for a column with fewer than 2 values."""
    boot = stats.bootstrap_means(frame.to_numpy(np.float64), resamples, seed)
    lo, hi = _intervals(boot, frame.notna().sum().to_numpy(), level)
    return pd.Series(lo, index=frame.columns), pd.Series(hi, index=frame.columns)


def faithfulness_analysis(ins: dict[str, pd.Series], dele: dict[str, pd.Series], compared, seed: int,
                          resamples: int, level: float = stats.LEVEL, alpha: float = stats.ALPHA) -> dict:
    """One model's insertion / deletion values -> ``{"cells": {method: {<metric>_ci_low, <metric>_ci_high}},
    "comparisons": {metric: compare() result + "methods", "images"}, "skipped": {metric: reason}, "n_images"}``.

    ``compared``: the method ids whose pairwise comparison is wanted (Table 4's: no ablation ids). Cells are over
    each method's own images; comparisons and ranks over the images every compared method has."""
    names = sorted(set().union(*[s.index.tolist() for s in list(ins.values()) + list(dele.values())]))
    methods = sorted(set(ins) | set(dele))
    fi = _frame({m: ins.get(m, pd.Series(dtype=np.float64)) for m in methods}, names)
    fd = _frame({m: dele.get(m, pd.Series(dtype=np.float64)) for m in methods}, names)
    per_metric = {"insertion": fi, "deletion": fd, "ins_del": fi - fd}
    blocks, layout = [], {}

    def add(key, arr):
        start = sum(b.shape[1] for b in blocks)
        blocks.append(np.asarray(arr, dtype=np.float64))  # [images, columns]
        layout[key] = slice(start, start + blocks[-1].shape[1])

    for metric, f in per_metric.items():
        add(("cells", metric), f.to_numpy())
    comparisons, skipped, common = {}, {}, {}
    for metric, hib in METRICS.items():
        f = per_metric[metric]
        cand = [m for m in compared if m in f.columns and f[m].notna().any()]
        if len(cand) < 2:
            skipped[metric] = f"{len(cand)} method(s) with {METRIC_LABELS[metric]} values: nothing to compare"
            continue
        rows = f[cand].notna().all(axis=1).to_numpy()
        if not rows.any():
            skipped[metric] = "no image has a value for every method"
            continue
        vals = np.where(rows[:, None], f[cand].to_numpy(), np.nan)
        ranks = np.full_like(vals, np.nan)
        ranks[rows] = stats.rank_rows(vals[rows], hib)
        add(("values", metric), vals)
        add(("ranks", metric), ranks)
        common[metric] = (cand, rows)
    boot = stats.bootstrap_means(np.hstack(blocks), resamples, seed) if names else \
        np.full((resamples, sum(b.shape[1] for b in blocks)), np.nan)
    cells: dict[str, dict] = {m: {} for m in methods}
    for metric, f in per_metric.items():
        lo, hi = _intervals(boot[:, layout[("cells", metric)]], f.notna().sum().to_numpy(), level)
        for j, m in enumerate(methods):
            cells[m][f"{metric}_ci_low"], cells[m][f"{metric}_ci_high"] = float(lo[j]), float(hi[j])
    for metric, (cand, rows) in common.items():
        vals = per_metric[metric][cand].to_numpy()[rows]
        res = stats.compare(vals, METRICS[metric], boot[:, layout[("values", metric)]],
                            boot[:, layout[("ranks", metric)]], level=level, alpha=alpha)
        res.update(methods=cand, images=[n for n, r in zip(names, rows) if r])
        comparisons[metric] = res
    return {"cells": cells, "comparisons": comparisons, "skipped": skipped, "n_images": len(names),
            "seed": seed, "resamples": resamples, "level": level, "alpha": alpha}


def groups(comparison: dict | None) -> dict[str, str]:
    """``{method: "best" | "not distinguishable from the best"}`` for the methods of a comparison's best group."""
    if not comparison:
        return {}
    ms = comparison["methods"]
    if comparison["best_significant"]:
        return {ms[comparison["best"]]: GROUP_BEST}
    return {ms[j]: GROUP_TIED for j in comparison["group"]}


def pairs_frame(comparison: dict) -> pd.DataFrame:
    """One row per pair of methods (best mean first): means, the paired difference and its interval, the test."""
    ms, c = comparison["methods"], comparison
    rows = []
    for q, (a, b) in enumerate(c["pairs"]):
        better = "" if c["better"][q] < 0 else ms[c["better"][q]]
        rows.append({"method_a": ms[a], "method_b": ms[b], "n": c["n"], "mean_a": c["mean"][a],
                     "mean_b": c["mean"][b], "mean_diff": c["diff"][q], "diff_ci_low": c["diff_ci"][0][q],
                     "diff_ci_high": c["diff_ci"][1][q], "wilcoxon_statistic": c["statistic"][q],
                     "p_value": c["p"][q], "p_holm": c["p_holm"][q], "significant": bool(c["significant"][q]),
                     "better": better})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "n", "mean_a", "mean_b", "mean_diff", "diff_ci_low",
                                       "diff_ci_high", "wilcoxon_statistic", "p_value", "p_holm", "significant",
                                       "better"])


def verdict(row, metric: str) -> str:
    if row["better"]:
        return f"{row['better']} better"
    if row["significant"]:
        return "differ (equal means)"
    return "not distinguishable"


def best_sentence(comparison: dict, metric: str, alpha: float) -> str:
    ms = comparison["methods"]
    best = ms[comparison["best"]]
    if comparison["best_significant"]:
        return (f"Best: {best}, better than every other method on the same images (Holm-adjusted Wilcoxon p < "
                f"{alpha:g} in every comparison).")
    others = [ms[j] for j in comparison["group"][1:]]
    return (f"No method is best: {best} has the best mean, and {', '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} not distinguishable from it (Holm-adjusted Wilcoxon p >= "
            f"{alpha:g}).")
