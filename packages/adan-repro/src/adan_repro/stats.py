"""Statistics over seeds: confidence bands, areas under curves and Welch's t-test (SciPy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 2  # per optimizer, for a standard deviation and hence any t interval or test


def confidence_band(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t interval of the mean over axis 0 (no band for a single seed)."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < MIN_SEEDS:
        return mean, mean
    half = stats.t.ppf(0.5 + confidence / 2.0, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per seed (row): the trapezoid area under the curve divided by the step span.

    Dividing by the span gives the curve's average value over the run, in the metric's own
    unit, so that it reads like the final value and does not depend on the step count.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) < 2:
        return values[:, -1].copy()
    widths = np.diff(steps)
    heights = (values[:, 1:] + values[:, :-1]) / 2.0
    return (heights * widths).sum(axis=1) / (steps[-1] - steps[0])


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with Welch's confidence interval and two-sided p-value.

    ``ci_low``, ``ci_high`` and ``p`` are None when a group has fewer than two seeds, or when
    neither group varies (the test has no spread to work with): then ``reason`` says which.
    """

    diff: float
    n_a: int
    n_b: int
    ci_low: float | None
    ci_high: float | None
    p: float | None
    confidence: float
    reason: str | None = None

    @property
    def testable(self) -> bool:
        return self.p is not None


def welch(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> Difference:
    """Welch's unequal-variance t-test of ``a`` against ``b`` (one value per seed each)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        reason = (
            f"too few seeds to tell ({len(a)} vs {len(b)}; a t-test needs at least "
            f"{MIN_SEEDS} per optimizer)"
        )
        return Difference(diff, len(a), len(b), None, None, None, confidence, reason)
    if a.std() == 0 and b.std() == 0:
        reason = "no spread over seeds in either optimizer: a t-test cannot judge it"
        return Difference(diff, len(a), len(b), None, None, None, confidence, reason)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Difference(
        diff, len(a), len(b), float(ci.low), float(ci.high), float(res.pvalue), confidence
    )
