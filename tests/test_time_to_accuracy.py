"""benchmarks/time_to_accuracy.py's summary: the median over every seed, a miss counting as never."""
from benchmark_scripts import load_script

time_to_accuracy = load_script("time_to_accuracy")


def test_a_miss_counts_as_the_slowest_seed():
    results = [(21.0, 3), None, (25.0, 4), (26.0, 4)]  # sorted 21, 25, 26, never: median (25 + 26) / 2
    assert time_to_accuracy.median_over_all(results).endswith(": 25.5s")


def test_with_every_seed_reached_it_is_the_plain_median():
    assert time_to_accuracy.median_over_all([(30.0, 5), (20.0, 3), (25.0, 4)]).endswith(": 25.0s")


def test_when_a_miss_is_one_of_the_middle_seeds_the_median_is_never():
    assert time_to_accuracy.median_over_all([(20.0, 3), None]).endswith(": never")
    assert time_to_accuracy.median_over_all([(20.0, 3), None, None]).endswith(": never")
