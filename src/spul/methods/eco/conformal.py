"""Split conformal thresholds for the prompt classifier, with the finite-sample correction.

Scores are P(forget). For exchangeable calibration and test scores of one class, the rank of a new score
among the n + 1 is uniform, which gives the bounds below without any assumption on the classifier.
"""

from __future__ import annotations

import math

import numpy as np

from spul.errors import DataError
from spul.methods.eco.config import ConformalSide


def conformal_threshold(calibration_scores: np.ndarray, alpha: float, side: ConformalSide) -> tuple[float, bool]:
    """``(threshold, inclusive)``: flag a prompt when ``score > threshold`` (or ``>=`` when inclusive).

    ``retain`` side (calibration = retain scores): threshold = the k-th smallest with k = ⌈(n+1)(1−α)⌉, flag if
    ``score > threshold``; then P(retain flagged) ≤ 1 − k/(n+1) ≤ α. If k > n no finite threshold has that
    guarantee and nothing is flagged.
    ``forget`` side (calibration = forget scores): threshold = the j-th smallest with j = ⌊(n+1)α⌋, flag if
    ``score >= threshold``; then P(forget missed) ≤ j/(n+1) ≤ α. If j < 1 everything is flagged.
    """
    side = ConformalSide(side)
    s = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
    n = len(s)
    if n == 0:
        raise DataError("conformal calibration has no scores", "give the classifier more training rows or raise calibration_fraction")
    if side is ConformalSide.RETAIN:
        k = math.ceil((n + 1) * (1 - alpha))
        return (math.inf if k > n else float(s[k - 1])), False
    if side is ConformalSide.FORGET:
        j = math.floor((n + 1) * alpha)
        return (-math.inf if j < 1 else float(s[j - 1])), True
    raise ValueError(f"no conformal threshold for side {side}")


def decide(scores: np.ndarray, threshold: float, inclusive: bool) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    return scores >= threshold if inclusive else scores > threshold
