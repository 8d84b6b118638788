import re
import time

import pytest
import torch

from mnist_ops.bench import PerSampleDataset, images_per_second, make_step, run_bench, too_few_warning
from mnist_ops.data import Split
from mnist_ops.models import create_model
from mnist_ops.presets import build_config


def test_per_sample_dataset_without_augmentation_is_plain_normalization():
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    dataset = PerSampleDataset(Split(images, torch.arange(4)), mean=0.1307, std=0.3081, augment="none")
    x, y = dataset[2]
    assert x.shape == (1, 28, 28) and y == 2
    assert torch.allclose(x, (images[2].float() / 255 - 0.1307) / 0.3081)


@pytest.mark.parametrize("rotation_fill, fill_pixel", [("mean", round(0.1307 * 255)), ("zero", 0)])
def test_per_sample_rotation_keeps_shape_and_fills_with_the_mean_or_the_background(rotation_fill, fill_pixel):
    images = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    dataset = PerSampleDataset(Split(images, torch.zeros(1, dtype=torch.long)), 0.1307, 0.3081, "seed",
                               rotation_fill=rotation_fill)
    torch.manual_seed(0)
    values = torch.cat([dataset[0][0].flatten() for _ in range(20)])
    fill = (fill_pixel / 255 - 0.1307) / 0.3081
    assert values.max() == pytest.approx((1 - 0.1307) / 0.3081)
    assert (values - fill).abs().min() < 1e-6  # some corner pixels were rotated in from outside
    assert ((values - fill).abs() < 1e-6).float().mean() < 0.5


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["lean-8k", "lean-8k-fast"])  # the second runs (b) on two model copies
def test_bench_runs_and_its_numbers_are_consistent(mnist_root, preset, two_threads):
    lines = []
    config = build_config(preset, None, {"batch_size": 32})
    threads = torch.get_num_threads()
    assert threads == two_threads
    results = run_bench(config, batches=3, repeats=2, workers=0, data_root=mnist_root, log=lines.append)
    assert torch.get_num_threads() == threads
    assert f"replicas={config.replicas}, fast_dropout={config.fast_dropout}" in results["ours"]
    assert set(results["measures"]) == {"data", "train step", "end to end"}
    for name, measure in results["measures"].items():
        assert len(measure["per_sample"]) == len(measure["ours"]) == 2
        assert all(rate > 0 for rate in measure["per_sample"] + measure["ours"])
        printed = next(line for line in lines if line.startswith(f"{name:<12} "))  # the table shows the JSON
        assert printed.endswith(f"{measure['ratio']:.2f}x")
    assert re.fullmatch(r"end-to-end speedup: \d+\.\d\dx", lines[-1])
    assert lines[-1] == f"end-to-end speedup: {results['measures']['end to end']['ratio']:.2f}x"
    assert results["warning"] == too_few_warning(3, 2) and f"warning: {results['warning']}" in lines
    assert any(line.startswith("each cell: median img/s over the 2 repeat(s), then (mean±std)") for line in lines)
    assert results["provenance"]["threads"] == threads and results["provenance"]["torch"] == torch.__version__
    # the whole recipe is recorded (--optimizer and --ema change what (b) measures), and how the net was built
    assert results["config"] == config.to_dict() and results["model_source"]["reference"] == config.model


def test_images_per_second_times_each_repeat_after_one_warm_up():
    calls = []

    def run():
        calls.append(time.perf_counter())
        time.sleep(0.5 if len(calls) == 1 else 0.05)  # a slow first call (start-up) must not count
        return 100

    rates = images_per_second(run, repeats=3)
    assert len(calls) == 4 and len(rates) == 3
    assert all(1200 < rate <= 2000 for rate in rates)  # 100 images in a bit over 0.05 s


def test_too_few_batches_or_repeats_are_flagged_and_the_defaults_are_not():
    assert too_few_warning(60, 3) is None and too_few_warning(20, 3) is None
    assert "below 20 x 3" in too_few_warning(2, 1) and "--batches >= 20 --repeats >= 3" in too_few_warning(60, 1)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_the_benched_step_updates_an_ema_when_the_recipe_has_one(ema):
    """bench times the step training runs: with an EMA, the average is updated on every step too."""
    config = build_config("lean-8k", None, {"ema": ema})
    step = make_step(create_model("lean-8k", dropout=0.0), config)
    step(torch.randn(8, 1, 28, 28), torch.arange(8))
    assert (step.ema is not None) == (ema > 0)
    if ema:
        assert int(step.ema.n_averaged) == 1


def test_step_profile_rates_each_size_and_refuses_a_size_the_model_cannot_take(monkeypatch, capsys):
    import sys

    from benchmark_scripts import exit_code_of_main, load_script

    monkeypatch.setattr(sys, "argv", ["step_profile.py", "--sizes", "28", "20", "--steps", "1", "--repeats", "2",
                                      "--batch-size", "4"])
    load_script("step_profile").main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["28 x 28", "20 x 20"]
    assert "(1.00x the first size)" in lines[0]
    assert all(len(line.split("passes ")[1].split(", ")) == 2 for line in lines)  # one rate per repeat
    assert exit_code_of_main("step_profile", ["--model", "lean-8k", "--sizes", "24"], monkeypatch) == 2
    assert "model 'lean-8k' fails on a batch of shape [2, 1, 24, 24]" in capsys.readouterr().err


def test_bench_refuses_training_crops(mnist_root):
    from mnist_ops.errors import UserError

    with pytest.raises(UserError, match="^bench compares whole-image pipelines, and train_crop = 24; set train_crop = 0$"):
        run_bench(build_config("lean-8k-fast").replace(train_crop=24), batches=2, repeats=1, workers=0,
                  data_root=mnist_root)
