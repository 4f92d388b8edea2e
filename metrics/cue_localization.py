r"""Cue localization (CALM paper; the authors' ``eval_cue_location.py``): the score of a method on CUB-200-2011
class pairs, for every method. The ground truth (the parts where two classes differ) is :mod:`benchmark.data.cub`;
the loop over pairs and images is :mod:`runners.cue_localization`.

Score. ``s = norm(|R(x, c1) - R(x, c2)|)`` on 224x224 under the ``calm`` protocol (the reference's order: ``R`` the
raw map, the method's ``norm`` applied to the absolute difference with :func:`normalize_scoremap`), or
``s = clip(|S(x, c1) - S(x, c2)|)`` with ``S`` the normalised map under the ``harness`` protocol (constant or NaN
maps -> zeros, the reference's ``clipping`` norm); and the pixel average precision (PxAP) of ``s`` against the
true region over the images, with the reference's histogram evaluator: 1000 log-spaced thresholds
``10^-(6.993..0)`` plus the edges 1, 2, 3; ``PxAP = 100 sum_i precision_i (recall_i - recall_{i-1})`` over
thresholds with a positive prediction. Scores below the first threshold (1.02e-7) fall outside the histogram and
are not counted (the reference's behaviour, kept). The result per group is the mean PxAP over its pairs.

Histograms (stated in every result): the reference creates one evaluator and accumulates the histograms of
*every* pair into it without resetting, so the PxAP it reports for a pair is that of all pairs seen so far (the
``calm`` protocol does the same, to reproduce its numbers). The better definition gives each pair fresh histograms
(:class:`PxAPHistogram` per pair: the ``harness`` protocol, ``--histograms reset``).
"""

from __future__ import annotations

import numpy as np

from .base import MetricError

GROUPS = (1, 2, 3)
FIX = ("histograms reset for every class pair (the reference accumulates them over all pairs without reset, so "
       "its per-pair PxAP mixes every earlier pair)")
ACCUMULATED = ("histograms accumulated over all pairs without reset, as the reference (the PxAP of a pair is that of "
               "every pair scored so far, all groups included)")
NORMS = ("clipping", "minmax", "max", "none")


def threshold_list(kind: str = "log", interval: float = 0.001) -> np.ndarray:
    """The reference's thresholds: ``log``: 10^-t for t in arange(0, 7, 7 interval) reversed; ``even``."""
    if kind == "log":
        t = np.arange(0, 7, interval * 7)
        return np.array([10 ** (-v) for v in t[::-1]])
    if kind == "even":
        return np.arange(0, 1, interval)
    raise MetricError(f"threshold kind must be log or even, not {kind!r}")


class PxAPHistogram:
    """The reference's ``MaskEvaluator``: score histograms at true and false pixels, then PxAP."""

    def __init__(self, thresholds: np.ndarray | None = None):
        t = threshold_list() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        self.edges = np.append(t, [1.0, 2.0, 3.0])
        self.true_hist = np.zeros(len(self.edges) - 1)
        self.false_hist = np.zeros(len(self.edges) - 1)
        self.true_pixels = 0  # every true pixel, also those scored below the first threshold (not in the histogram)

    def accumulate(self, score: np.ndarray, gt: np.ndarray) -> None:
        if score.shape != gt.shape:
            raise MetricError(f"score map {score.shape} and ground truth {gt.shape} differ in shape")
        self.true_hist += np.histogram(score[gt == 1], bins=self.edges)[0]
        self.true_pixels += int((gt == 1).sum())
        self.false_hist += np.histogram(score[gt == 0], bins=self.edges)[0]

    def compute(self) -> float:
        tp = self.true_hist[::-1].cumsum()
        fn = self.true_hist.sum() - tp
        fp = self.false_hist[::-1].cumsum()
        if self.true_pixels == 0:
            raise MetricError("no true cue pixel in this pair's images")
        if ((tp + fn) <= 0).all():
            return 0.0  # every true pixel scored below the first threshold: the map finds none of them
        if ((tp + fp) <= 0).all():
            return 0.0  # the reference raises; a map that is zero everywhere finds nothing
        nonzero = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        return float(100 * (precision[1:] * np.diff(recall))[nonzero[1:]].sum())


def clip_norm(m: np.ndarray) -> np.ndarray:
    """The reference's ``clipping`` norm: NaN or constant -> zeros, else clipped to [0, 1]."""
    if np.isnan(m).any() or m.min() == m.max():
        return np.zeros_like(m)
    return np.clip(m, 0.0, 1.0)


def normalize_scoremap(m: np.ndarray, norm: str) -> np.ndarray:
    """The reference's ``normalize_scoremap`` on one map, computed in the map's own dtype (float32 for the maps of
    the harness, as the reference's) on a copy, returned as float64: NaN anywhere or a constant map -> zeros;
    ``max``: ``m / max``; ``minmax``: ``(m - min) / max(m - min)``; ``clipping`` (and ``none``): as is; then
    clipped to [0, 1]."""
    if norm not in NORMS:
        raise MetricError(f"norm must be one of {NORMS}, not {norm!r}")
    m = np.array(m, copy=True)
    if np.isnan(m).any() or m.min() == m.max():
        return np.zeros(m.shape, dtype=np.float64)
    if norm == "max":
        m /= m.max()
    elif norm == "minmax":
        m -= m.min()
        m /= m.max()
    return np.clip(m, 0.0, 1.0).astype(np.float64)
