"""Welch's t interval between two groups of runs (the Student-t quantile comes from scipy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    difference: float  # mean(second) - mean(first)
    low: float
    high: float
    degrees_of_freedom: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def welch_interval(first: list[float], second: list[float], confidence: float = 0.95) -> Interval | None:
    """Welch's t interval for mean(second) - mean(first); None with fewer than 2 values in a group."""
    from scipy.stats import t

    if len(first) < 2 or len(second) < 2:
        return None
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    difference = float(b.mean() - a.mean())
    variance_a, variance_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    standard_error = math.sqrt(variance_a + variance_b)
    if standard_error == 0:
        return Interval(difference, difference, difference, math.inf)
    degrees = (variance_a + variance_b) ** 2 / (variance_a ** 2 / (len(a) - 1) + variance_b ** 2 / (len(b) - 1))
    margin = float(t.ppf(0.5 + confidence / 2, degrees)) * standard_error
    return Interval(difference, difference - margin, difference + margin, degrees)
