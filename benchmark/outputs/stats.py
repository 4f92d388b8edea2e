"""Which differences between methods are real: paired bootstrap intervals, mean ranks, Wilcoxon signed-rank tests
with Holm's correction, and the group of methods not distinguishable from the best (numpy and scipy only).

**Bootstrap.** One matrix of image indices ``I = numpy.random.default_rng(seed).integers(0, n, size=(R, n))`` is
drawn for a set of ``n`` images and shared by every column of values over those images (every method, every
metric), so the same images are resampled for every method and an interval of a difference is paired. Row ``r``
of ``I`` is one resample; the statistic of a column in that resample is the mean of its values over the drawn
images (an image drawn twice counts twice), skipping the images the column has no value for (NaN). Computed as
``(C @ V) / (C @ H)`` where ``C[r, i]`` counts how often image ``i`` is in resample ``r`` (built block by block from
the same random stream, so the result is that of the whole matrix), ``V`` the values with 0 for NaN and ``H`` the
0/1 "has a value" matrix. A resample that draws none of a column's images gives NaN for it and is left out of
that column's interval. The interval is the percentile interval: the 2.5th and 97.5th percentiles (numpy's
linear interpolation) of the R resampled statistics, for a 95 % level.

**Ranks.** Per image, the methods are ranked with average ranks for ties, rank 1 = best in the metric's direction
(higher is better for insertion and Ins-Del, lower for deletion); a method's mean rank is the mean over images.

**Tests.** For every two methods on the same images, the differences ``d_i = a_i - b_i`` are tested with
``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")`` (zero differences are
dropped; "auto" is the exact distribution for n <= 50 without ties or zeros, a permutation test for n <= 13 with
them, the normal approximation with tie correction above 50). Where every difference is zero there is nothing left
to rank: p = 1 (scipy returns NaN). The p-values of all pairs of one model and metric are adjusted with Holm's
step-down method; a pair differs where the adjusted p-value is below ``alpha`` (0.05), in the direction of its
mean difference.

**Best.** The best method has the best mean over the common images. It is marked best only where it differs
significantly from every other method; otherwise the methods it does not differ from form, with it, the group
"not distinguishable from the best".
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as sps

DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 10_000
LEVEL = 0.95
ALPHA = 0.05
CHUNK = 500  # resamples per block of the count matrix: [CHUNK, n] float64
WILCOXON = {"zero_method": "wilcox", "alternative": "two-sided", "method": "auto"}
WILCOXON_TEXT = "scipy.stats.wilcoxon(zero_method='wilcox', alternative='two-sided', method='auto')"


def check_bootstrap(seed: int, resamples: int) -> None:
    if int(resamples) < 1:
        raise ValueError(f"the number of bootstrap resamples must be at least 1, not {resamples}")
    if int(seed) < 0:
        raise ValueError(f"the bootstrap seed must be a non-negative integer, not {seed}")


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, chunk: int = CHUNK):
    """Yield ``(start, C)``: ``C[j, i]`` = how often image ``i`` is drawn in resample ``start + j``, for the rows of
    ``default_rng(seed).integers(0, n, size=(resamples, n))``, drawn ``chunk`` rows at a time (the same stream)."""
    check_bootstrap(seed, resamples)
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        c = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(c, n))
        flat = (idx + n * np.arange(c)[:, None]).ravel()
        yield start, np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)


def bootstrap_means(values, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    chunk: int = CHUNK) -> np.ndarray:
    """``values`` [n images, k columns] (NaN = no value) -> [R, k]: each column's mean over the images of each
    resample that it has a value for (NaN where a resample draws none of them)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n, k = v.shape
    v = np.where(np.isfinite(v), v, np.nan)
    if k > 1:  # identical columns (a method's values over all its images and over the common ones) once
        uniq, inverse = np.unique(v, axis=1, return_inverse=True)
        if uniq.shape[1] < k:
            return bootstrap_means(uniq, resamples, seed, chunk)[:, inverse.ravel()]
    have = np.isfinite(v)
    v0, h = np.where(have, v, 0.0), have.astype(np.float64)
    out = np.full((resamples, k), np.nan)
    if n == 0:
        check_bootstrap(seed, resamples)
        return out
    for start, counts in resample_counts(n, resamples, seed, chunk):
        num, den = counts @ v0, counts @ h
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(counts)] = np.where(den > 0, num / den, np.nan)
    return out


def percentile_interval(boot, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of each column of ``boot`` [R, k], NaN resamples left out (NaN if all are)."""
    b = np.asarray(boot, dtype=np.float64)
    b = b[:, None] if b.ndim == 1 else b
    q = [50 * (1 - level), 50 * (1 + level)]
    lo, hi = np.full(b.shape[1], np.nan), np.full(b.shape[1], np.nan)
    finite = np.isfinite(b)
    full, some = finite.all(axis=0), finite.any(axis=0) & ~finite.all(axis=0)
    if full.any():  # the usual case, vectorised (nanpercentile goes column by column)
        lo[full], hi[full] = np.percentile(b[:, full], q, axis=0)
    if some.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[some], hi[some] = np.nanpercentile(b[:, some], q, axis=0)
    return lo, hi


def rank_rows(values, higher_is_better: bool) -> np.ndarray:
    """Per row (image), the rank of each column (method): 1 = best, average ranks for ties."""
    v = np.asarray(values, dtype=np.float64)
    return sps.rankdata(-v if higher_is_better else v, axis=1, method="average")


def wilcoxon_tests(diffs) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p) of the Wilcoxon signed-rank test (:data:`WILCOXON`) of each column of ``diffs`` [n, m]; p = 1
    and statistic 0 for a column of zeros only. For n > 50, where scipy's "auto" is the normal approximation for
    every column, one vectorised call with ``method="asymptotic"`` (the same numbers); else one call per column."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    n, m = d.shape
    stat, p = np.zeros(m), np.ones(m)
    live = np.flatnonzero((d != 0).any(axis=0))
    if n == 0 or not len(live):
        return stat, p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if n > 50:
            res = sps.wilcoxon(d[:, live], axis=0, **{**WILCOXON, "method": "asymptotic"})
            stat[live], p[live] = res.statistic, res.pvalue
        else:
            for j in live:
                res = sps.wilcoxon(d[:, j], **WILCOXON)
                stat[j], p[j] = res.statistic, res.pvalue
    return stat, p


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment: sort the m p-values ascending, multiply the i-th (from 1) by m - i + 1, take
    the running maximum, cap at 1; returned in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def compare(values, higher_is_better: bool, boot_means: np.ndarray | None = None,
            boot_ranks: np.ndarray | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
            level: float = LEVEL, alpha: float = ALPHA) -> dict:
    """Compare k methods on the same n images: ``values`` [n, k], all finite.

    ``boot_means`` / ``boot_ranks`` [R, k]: the bootstrap means of the values and of their per-image ranks (drawn
    by the caller to share its resamples with other statistics); drawn here from ``seed`` when absent.

    Returns a dict of arrays: ``n``, ``mean``, ``mean_ci`` (lo, hi), ``rank``, ``rank_ci``, ``order`` (method
    indices, best mean first), ``pairs`` (list of (a, b) in that order, a before b), ``diff`` (mean of a - b),
    ``diff_ci``, ``statistic``, ``p``, ``p_holm``, ``significant``, ``better`` (index of the better method of each
    pair, -1 where none), ``best``, ``group`` (the indices not distinguishable from the best, the best first),
    ``best_significant`` (the best differs from every other method)."""
    v = np.asarray(values, dtype=np.float64)
    n, k = v.shape
    ranks = rank_rows(v, higher_is_better) if n else np.zeros((0, k))
    if boot_means is None:
        both = bootstrap_means(np.hstack([v, ranks]), resamples, seed)
        boot_means, boot_ranks = both[:, :k], both[:, k:]
    sign = 1.0 if higher_is_better else -1.0
    mean = v.mean(axis=0) if n else np.full(k, np.nan)
    order = sorted(range(k), key=lambda j: (-sign * mean[j], j))
    pairs = [(order[i], order[j]) for i in range(k) for j in range(i + 1, k)]
    a = np.array([p[0] for p in pairs], dtype=int)
    b = np.array([p[1] for p in pairs], dtype=int)
    diff = mean[a] - mean[b]
    diff_ci = percentile_interval(boot_means[:, a] - boot_means[:, b], level)
    statistic, p = wilcoxon_tests(v[:, a] - v[:, b])
    p_holm = holm(p) if len(p) else p
    significant = p_holm < alpha
    better = np.where(significant & (sign * diff > 0), a, np.where(significant & (sign * diff < 0), b, -1))
    best = order[0] if k else -1
    beaten = {int(q) for q, (x, y) in enumerate(pairs) if x == best and better[q] == best}
    group = [best] + [y for q, (x, y) in enumerate(pairs) if x == best and q not in beaten]
    return {"n": n, "mean": mean, "mean_ci": percentile_interval(boot_means, level),
            "rank": ranks.mean(axis=0) if n else np.full(k, np.nan), "rank_ci": percentile_interval(boot_ranks, level),
            "order": order, "pairs": pairs, "diff": diff, "diff_ci": diff_ci, "statistic": statistic, "p": p,
            "p_holm": p_holm, "significant": significant, "better": better, "best": best, "group": group,
            "best_significant": k > 1 and len(group) == 1, "alpha": alpha, "level": level}
