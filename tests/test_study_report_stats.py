import math
import statistics

import pytest

from mnist_ops.study_report.stats import welch_interval


@pytest.mark.parametrize("size, t_975", [(2, 4.303), (3, 2.776), (5, 2.306), (16, 2.042)])
def test_welch_interval_against_a_hand_computation_and_printed_t_tables(size, t_975):
    # equal variances and sizes: Welch df = 2 (n - 1); t quantiles from a printed table (df 2, 4, 8, 30)
    first = [float(value) for value in range(1, size + 1)]
    second = [value + 2.0 for value in first]
    standard_error = math.sqrt(2 * statistics.variance(first) / size)
    interval = welch_interval(first, second)
    assert interval.degrees_of_freedom == pytest.approx(2 * (size - 1))
    assert interval.difference == pytest.approx(2.0)
    assert (interval.low, interval.high) == pytest.approx((2.0 - t_975 * standard_error, 2.0 + t_975 * standard_error),
                                                          abs=1e-3)


def test_unequal_variances_use_welch_satterthwaite_degrees_of_freedom():
    first, second = [99.0, 99.1, 99.2, 99.3], [98.0, 99.0, 100.0]
    va, vb = statistics.variance(first) / 4, statistics.variance(second) / 3
    expected = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    assert welch_interval(first, second).degrees_of_freedom == pytest.approx(expected)
    assert 2 < expected < 2.1  # dominated by the noisier group: close to its n - 1


def test_identical_samples_contain_zero_and_separated_samples_exclude_it():
    runs = [99.1, 99.3, 99.2]
    same = welch_interval(runs, list(runs))
    assert same.low < 0 < same.high and same.difference == pytest.approx(0.0)
    assert not same.excludes_zero
    apart = welch_interval([97.0, 97.1, 97.2], [99.3, 99.4, 99.5])
    assert apart.excludes_zero and apart.low > 2.0


def test_welch_interval_edge_cases():
    assert welch_interval([99.0], [99.5, 99.6]) is None  # one seed has no spread
    constant = welch_interval([99.0, 99.0], [99.5, 99.5])
    assert (constant.low, constant.high) == pytest.approx((0.5, 0.5)) and constant.excludes_zero


def test_paired_interval_against_a_hand_computation_and_scipys_paired_t_test():
    from scipy.stats import ttest_rel

    from mnist_ops.study_report.stats import paired_interval

    first, second = [99.46, 99.43, 99.43, 99.47], [99.44, 99.46, 99.48, 99.48]  # docs/val-8k: preset, distill4
    interval = paired_interval(first, second)
    differences = [b - a for a, b in zip(first, second)]
    margin = 3.182 * statistics.stdev(differences) / 2  # t(0.975, 3) from a printed table, sqrt(4) pairs
    assert interval.difference == pytest.approx(0.0175)
    assert (interval.low, interval.high) == pytest.approx((0.0175 - margin, 0.0175 + margin), abs=1e-4)
    expected = ttest_rel(second, first).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert interval.degrees_of_freedom == 3 and not interval.excludes_zero


def test_pairing_takes_out_each_seeds_luck_that_welch_leaves_in():
    """Seeds far apart, one recipe always 0.05 better: only the paired interval sees it."""
    from mnist_ops.study_report.stats import paired_interval

    first = [99.10, 99.50, 99.30, 99.70]
    second = [value + 0.05 + noise for value, noise in zip(first, [0.01, -0.01, 0.0, 0.005])]
    assert paired_interval(first, second).excludes_zero
    assert not welch_interval(first, second).excludes_zero
    assert paired_interval([99.0], [99.1]) is None
    with pytest.raises(ValueError, match="equal lengths"):
        paired_interval([99.0, 99.1], [99.2])


def test_the_same_difference_on_every_seed_is_an_interval_without_spread():
    """val-1k, 2026-11-26: two nets 0.01 apart on both seeds (98.80 / 98.81, 98.95 / 98.96). The t interval
    is a point, which said "a real difference" from two seeds; it is marked as having no spread instead."""
    from mnist_ops.study_report.stats import paired_interval

    same = paired_interval([98.80, 98.95], [98.81, 98.96])
    assert same.without_spread and same.difference == pytest.approx(0.01)
    spread = paired_interval([98.80, 98.95], [98.81, 98.97])
    assert not spread.without_spread and spread.low < 0 < spread.high
