"""Welch's t interval between two groups of runs, the paired t interval between two recipes run on the
same seeds, and the Clopper-Pearson interval of a share of seeds (all from scipy's distributions)."""

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

    @property
    def without_spread(self) -> bool:
        """Every pair (or run) differs by the same amount, to rounding: the t interval shrinks to a point.
        Accuracies come in steps of 0.01 points, so over 2-3 seeds that happens by chance, and a point
        says nothing about how far the next seed may fall."""
        return self.high - self.low < 1e-9

    def without_spread_phrase(self, seeds: int) -> str:
        """How the paired comparisons word an interval without spread (`without_spread`)."""
        return f"{self.difference:+.3f} points on each of the {seeds} seeds: no spread, so no interval"

    @property
    def verdict(self) -> str:
        """How the paired comparisons (compare_on_validation.py, records --paired) word an interval with spread."""
        return "a real difference" if self.excludes_zero else "not told apart from no difference"


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


def paired_interval(first: list[float], second: list[float], confidence: float = 0.95) -> Interval | None:
    """The paired t interval for the mean of second[i] - first[i]: two recipes on the same seeds (the same
    initial weights and batches), so each seed's luck cancels in its difference. None below 2 pairs."""
    from scipy.stats import t

    if len(first) != len(second):
        raise ValueError(f"pairs need equal lengths, got {len(first)} and {len(second)}")
    if len(first) < 2:
        return None
    differences = np.asarray(second, dtype=float) - np.asarray(first, dtype=float)
    mean, degrees = float(differences.mean()), len(differences) - 1
    margin = float(t.ppf(0.5 + confidence / 2, degrees)) * float(differences.std(ddof=1)) / math.sqrt(len(differences))
    return Interval(mean, mean - margin, mean + margin, degrees)


def share_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval for the chance of a success, from `successes` of `trials`.

    For a record: the chance that a new seed holds the bar, from how many of the seeds tried held it.
    14 of 15 gives (0.68, 0.998): a rule that fails one seed in three is not ruled out.
    """
    from scipy.stats import beta

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high
