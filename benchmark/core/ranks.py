"""Rank correlation of two maps with numpy and scipy only (no torch), so that the sanity check's similarity
measures and the precision-drift check (which reads without torch) share one definition::

    spearman(a, b) = pearson(rank(a), rank(b))   over the pixels, ties ranked by their mean rank
"""

from __future__ import annotations

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the pixels of two maps (NaN if one is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
