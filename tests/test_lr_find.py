import json
import math

import pytest
import torch

from mnist_ops.data import Split
from mnist_ops.errors import UserError
from mnist_ops.lr_find import TrainBatches, lr_find, suggest_lr
from mnist_ops.presets import build_config


def test_suggestion_is_the_steepest_descent_after_skipping_the_ends():
    learning_rates = [10 ** (-5 + i / 10) for i in range(40)]
    losses = [2.0] * 40
    for i in range(20, 40):
        losses[i] = 2.0 - 0.01 * (i - 20)
    losses[25:28] = [1.9, 1.4, 0.9]  # the steepest drop is around index 26
    losses[2] = -50.0  # a glitch among the first 10 points is ignored
    assert suggest_lr(learning_rates, losses) == learning_rates[26]


def test_a_loss_that_never_falls_gets_no_suggestion_and_a_readable_plot(tmp_path, monkeypatch):
    """The steepest point of a loss that only rises is where it rose least: no suggestion, not that lr. A diverging
    tail leaves the plot at the top instead of flattening the rest of the curve to a line at 0."""
    from mnist_ops.lr_find import RangeTest, plot_range_test

    learning_rates = [10 ** (-1 + i / 20) for i in range(30)]
    rising = [2.3 + 0.01 * i for i in range(25)] + [9.0, 1e3, 1e6, 1e10, 5e14]
    assert suggest_lr(learning_rates, rising) is None
    falling_then_diverging = [2.3 - 0.05 * i for i in range(25)] + [9.0, 1e3, 1e6, 1e10, 5e14]
    assert suggest_lr(learning_rates, falling_then_diverging) is not None
    drawn = []
    monkeypatch.setattr("mnist_ops.report.save_figure", lambda figure, path: drawn.append(figure.axes[0]))
    for losses in (rising, falling_then_diverging):
        plot_range_test(RangeTest(learning_rates, losses, suggest_lr(learning_rates, losses), True),
                        tmp_path / "x.png", "t")
        assert drawn[-1].get_ylim()[1] < 10  # the curve, not the divergence, sets the scale


def test_the_steepest_fall_after_the_loss_blew_up_is_not_suggested():
    """An audit's curve: the loss bottomed out near lr 0.25, jumped up, and fell steeply again; that fall, beyond
    torch-lr-finder's divergence threshold's reach, was suggested (2.85: 40% after 4 epochs, against 54% at 0.1)."""
    learning_rates = [10 ** (-4 + i / 10) for i in range(50)]
    losses = [2.0 - 0.03 * i for i in range(30)]  # down to 1.13 at index 29 (lr 0.08), steepest where it is steady
    losses[15:18] = [1.5, 1.45, 1.4]  # a steeper step on the way down, at index 15
    losses += [1.9, 1.95, 1.9, 1.7, 1.5, 1.3, 1.25, 1.2, 1.2, 1.2] + [1.2] * 10  # blown up, then a steep fall
    assert suggest_lr(learning_rates, losses) == learning_rates[15]
    below = losses[:30] + [1.9, 1.95, 1.9, 1.5, 1.1, 0.7, 0.65, 0.6, 0.6, 0.6] + [0.6] * 10  # ... to below 1.13
    assert suggest_lr(learning_rates, below) == learning_rates[15]
    went_nan = losses[:30] + [float("nan")] * 20  # torch-lr-finder records a NaN loss and goes on
    assert suggest_lr(learning_rates, went_nan) == learning_rates[15]


def test_a_wobble_of_the_loss_is_no_blow_up():
    learning_rates = [10 ** (-4 + i / 10) for i in range(50)]
    losses = [2.0 - 0.02 * i for i in range(20)]  # down to 1.62 at index 19
    losses += [1.65, 1.7, 1.72, 1.7, 1.65] + [1.6, 1.3, 1.0, 0.9, 0.85] + [0.8] * 20  # up 6%, then the steep fall
    assert suggest_lr(learning_rates, losses) == learning_rates[26]


def test_short_histories_use_every_point_and_too_short_is_a_user_error():
    assert suggest_lr([0.1, 0.2, 0.3], [1.0, 0.5, 0.4]) in (0.1, 0.2)
    with pytest.raises(UserError, match="fewer than 2 iterations"):
        suggest_lr([0.1], [1.0])


def test_batches_are_normalized_epochs_of_the_training_split():
    train = Split(torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8), torch.arange(10))
    config = build_config("seed-lean", None, {"batch_size": 4, "augment": "none"})
    batches = list(TrainBatches(train, config, mean=0.5, std=0.25, generator=torch.Generator().manual_seed(0)))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == list(range(10))
    inputs, labels = batches[0]
    assert inputs.shape == (4, 1, 28, 28)
    assert torch.allclose(inputs[:, 0], (train.images[labels].float() / 255 - 0.5) / 0.25)


@pytest.mark.parametrize("start, end, iterations, message", [
    (1.0, 0.1, 20, r"need 1e-08 <= --start-lr < --end-lr <= 10, got 1 and 0.1"),
    (0.0, 0.1, 20, "need 1e-08 <= --start-lr < --end-lr"),
    (1e-4, float("inf"), 20, "got 0.0001 and inf"),  # once accepted: it suggested lr inf, written as JSON Infinity
    (1e-4, float("nan"), 20, "got 0.0001 and nan"),
    (1e-4, 1.0, 1, "--iterations must be >= 2"),
])
def test_bad_ranges_are_user_errors(tmp_path, start, end, iterations, message):
    with pytest.raises(UserError, match=message):
        lr_find(build_config("seed-lean", None, {}), start, end, iterations, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_range_test_writes_a_figure_and_a_suggestion_within_the_range(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"limit_train": 2000, "batch_size": 64, "device": "cpu"})
    result = lr_find(config, 1e-4, 1.0, 30, tmp_path, data_root=mnist_root, log=lambda message: None)
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isfinite(result.suggested_lr) and 1e-4 <= result.suggested_lr <= 1.0
    record = json.loads((tmp_path / "lr_find.json").read_text())
    assert record["suggested_lr"] == result.suggested_lr
    assert record["learning_rates"][0] == pytest.approx(1e-4)
    assert record["learning_rates"] == sorted(record["learning_rates"])  # an exponential ramp upwards


def test_a_batch_larger_than_the_training_set_is_refused_before_the_test(mnist_root, tmp_path):
    """--batch-size 100000 on 500 images stepped on batches of 500 under a plot titled "batch 100000" (a review)."""
    config = build_config("seed-lean", None, {"limit_train": 500, "batch_size": 100_000, "device": "cpu"})
    with pytest.raises(UserError, match="batch_size 100000 is more than the 500 training images, and the range test "
                                        "steps on whole batches; lower --batch-size"):
        lr_find(config, 1e-4, 1.0, 5, tmp_path / "out", data_root=mnist_root, log=lambda message: None)
    assert not (tmp_path / "out").exists()


def test_few_iterations_are_flagged_and_the_default_is_not():
    from mnist_ops.lr_find import few_iterations_warning

    assert few_iterations_warning(100, 100) is None
    assert "only 10 iterations (--iterations 10)" in few_iterations_warning(10, 10)
    assert "the loss diverged early" in few_iterations_warning(12, 100)


def test_an_earlier_result_is_refused_before_any_work_unless_forced(tmp_path):
    from mnist_ops.lr_find import check_out_dir

    check_out_dir(tmp_path, force=False)  # empty: fine
    (tmp_path / "lr_find.png").write_bytes(b"old")
    with pytest.raises(UserError, match="already holds lr_find.png"):
        lr_find(build_config("seed-lean", None, {}), 1e-4, 1.0, 20, tmp_path, data_root=tmp_path / "no-data")
    check_out_dir(tmp_path, force=True)


@pytest.mark.integration
def test_the_range_test_says_once_that_it_leaves_the_teacher_out(mnist_root, digit_checkpoint, tmp_path):
    config = build_config("lean-8k", None, {"limit_train": 500, "batch_size": 64, "device": "cpu",
                                            "teacher": str(digit_checkpoint), "distill_weight": 0.5})
    lines = []
    lr_find(config, 1e-4, 1.0, 5, tmp_path, data_root=mnist_root, log=lines.append)
    assert sum("the teacher is not used" in line for line in lines) == 1
    assert "note: the range test trains one fp32 copy of the model, without the recipe's ema 0.999; its lr " \
           "suggestion is for that plain step" in lines  # lean-8k's EMA


@pytest.mark.integration
def test_the_range_test_runs_on_a_data_set_of_ones_own(tmp_path, capsys):
    """--dataset: the net is built for the data set's classes and image size, as train builds it (it was built
    for 10 classes, so a label of 10 or more failed inside the loss)."""
    from idx_data import write_idx_dataset
    from mnist_ops.cli import main

    data = write_idx_dataset(tmp_path / "shapes", (256, 32), size=(20, 24), classes=12)
    assert main(["lr-find", "--preset", "lean-2k", "--model", "fast-8k", "--dataset", str(data), "--iterations", "12", "--batch-size", "16",
                 "--out", str(tmp_path / "range"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "range" / "lr_find.json").read_text())
    assert len(record["learning_rates"]) == 12 and all(math.isfinite(loss) for loss in record["losses"])


def test_a_net_of_ones_own_that_fails_in_train_mode_is_one_line(mnist_root, tmp_path, capsys):
    """check_output runs nets in eval mode; one that raised only in train mode ended the range test with a
    traceback through torch-lr-finder, where `train` says it in one line (an audit)."""
    from mnist_ops.cli import main

    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n        self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n\n"
        "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('boom when training')\n"
        "        return self.head(x)\n")
    code = main(["lr-find", "--preset", "seed-lean", "--model", f"{tmp_path / 'nets.py'}:Net", "--limit-train", "256",
                 "--iterations", "5", "--out", str(tmp_path / "range"), "--data-root", str(mnist_root), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [
        f"mnist-ops: error: model {tmp_path / 'nets.py'}:Net raised RuntimeError: boom when training while training in "
        "the range test; fix its forward() (it must run in train mode on any batch size)"]
    assert not (tmp_path / "range" / "lr_find.json").exists()
