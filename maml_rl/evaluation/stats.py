"""The statistics of ``eval.json``: a mean and its Student-t confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["CONFIDENCE", "mean_confidence_interval"]

#: Coverage of every confidence interval of an evaluation.
CONFIDENCE = 0.95


def mean_confidence_interval(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float | None]:
    """Sample mean and the half-width of its two-sided t confidence interval.

    ``half = t_{(1 + confidence) / 2, n − 1} · s / √n`` with ``s`` the sample standard
    deviation (``ddof = 1``) and ``t_{p, ν}`` the quantile of Student's t distribution
    (``scipy.stats.t``).

    Args:
        values: ``n ≥ 1`` numbers.
        confidence: coverage of the interval, in ``(0, 1)``.

    Returns:
        ``(mean, half_width)``; ``half_width`` is ``None`` for a single value.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_confidence_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, None
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * sem
