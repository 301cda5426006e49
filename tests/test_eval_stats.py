"""Statistics of an evaluation: the t confidence interval against analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maml_rl.evaluation import mean_confidence_interval


def _t_quantile_closed_form(p: float, df: int) -> float:
    """Student's t quantile where it has a closed form: ``df = 1`` is the Cauchy
    distribution, ``tan(π (p − ½))``; ``df = 2``: ``(2p − 1) / √(2 p (1 − p))``."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    assert df == 2
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


@pytest.mark.parametrize(
    ("n", "confidence", "t"),
    [
        (2, 0.95, _t_quantile_closed_form(0.975, 1)),  # 12.7062...
        (2, 0.80, _t_quantile_closed_form(0.90, 1)),
        (3, 0.95, _t_quantile_closed_form(0.975, 2)),  # 4.3026...
        (3, 0.99, _t_quantile_closed_form(0.995, 2)),
        # Student's t quantiles to 17 digits (the regularised incomplete beta function
        # inverted at 30 digits with mpmath)
        (4, 0.95, 3.1824463052837084),
        (10, 0.95, 2.262157162798205),
        (11, 0.95, 2.2281388519862742),
        (40, 0.95, 2.0226909200367607),
        (6, 0.90, 2.0150483733330235),
        (21, 0.99, 2.8453397097861081),
    ],
)
def test_half_width_is_the_t_quantile_times_the_standard_error(
    n: int, confidence: float, t: float
) -> None:
    values = np.arange(n, dtype=np.float64)  # s² = n (n + 1) / 12
    sem = math.sqrt(n * (n + 1) / 12) / math.sqrt(n)
    mean, half = mean_confidence_interval(values, confidence)
    assert mean == (n - 1) / 2
    assert half == pytest.approx(t * sem, rel=1e-12)


def test_confidence_interval_on_a_hand_computed_sample() -> None:
    # mean 2.5; s² = (1.5² + 0.5² + 0.5² + 1.5²) / 3 = 5/3; sem = √(5/3) / 2;
    # t_{0.975, 3} = 3.1824463052837084 → half-width 2.0542603...
    mean, half = mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(3.1824463052837084 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert half == pytest.approx(2.05426, abs=1e-5)
    assert mean_confidence_interval([7.0]) == (7.0, None)
    assert mean_confidence_interval([3.0, 3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_confidence_interval([])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        mean_confidence_interval([1.0, 2.0], confidence=1.0)
