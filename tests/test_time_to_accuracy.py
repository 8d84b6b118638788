"""benchmarks/time_to_accuracy.py: the summary (the median over every seed, a miss counting as never) and the
per-sample pipeline's recipe."""
import pytest

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


@pytest.mark.integration
def test_the_per_sample_pipeline_recomputes_batchnorm_as_fit_does(mnist_root, monkeypatch, capsys):
    import mnist_ops.engine

    calls = []
    recompute = mnist_ops.engine.recompute_batchnorm
    monkeypatch.setattr(mnist_ops.engine, "recompute_batchnorm",
                        lambda model, inputs, *args: calls.append(len(inputs)) or recompute(model, inputs, *args))
    monkeypatch.setenv("MNIST_OPS_DATA", str(mnist_root))
    # no DataLoader processes: they fork, and a fork of a pytest-xdist worker (execnet threads) can hang
    import mnist_ops.bench

    loader = mnist_ops.bench.per_sample_loader
    monkeypatch.setattr(mnist_ops.bench, "per_sample_loader",
                        lambda *args, **kwargs: loader(*args, **{**kwargs, "workers": 0}))
    time_to_accuracy.per_sample_training(["--preset", "lean-8k-fast", "--epochs", "1", "--limit-train", "600",
                                          "--batch-size", "60", "--validation", "500", "--precise-bn", "120"])
    assert calls == [120]  # once per epoch, over the first 120 plain training images
    assert capsys.readouterr().out.startswith("epoch  0: per-sample pipeline | test loss ")
