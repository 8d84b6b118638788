import json

import pytest
import torch

from mnist_ops.errors import UserError
from mnist_ops.models import create_model, list_models
from mnist_ops.presets import build_config
from mnist_ops.train import (checkpoint_decision, evaluate, fit, fold_batchnorm, load_checkpoint, model_from_checkpoint,
                             prepare_run_dir, save_checkpoint)

SEED_LOG = [98.73, 99.34, 99.38, 99.53, 99.44, 99.42, 99.39, 99.48, 99.53, 99.47, 99.43, 99.41, 99.61, 99.64, 99.52]


def test_checkpoint_rule_reproduces_the_seed_log():
    saved, best = [], -1.0
    for epoch, accuracy in enumerate(SEED_LOG):
        save, reason = checkpoint_decision(epoch, accuracy, best, target=99.4)
        if save:
            saved.append(epoch)
            assert "Target achieved" in reason
        best = max(best, accuracy)
    assert saved == [3, 12, 13]  # the epochs where the seed printed "Target Achieved"


def test_checkpoint_rule_needs_the_target():
    assert checkpoint_decision(5, 99.0, 98.0, target=99.4)[0] is False
    assert checkpoint_decision(2, 99.9, 98.0, target=99.4)[0] is False
    assert checkpoint_decision(3, 99.5, 99.5, target=99.4)[0] is False


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = create_model("seed-lean")
    checkpoint = {"model_name": "seed-lean", "model": model.state_dict(), "config": {"dropout": 0.05},
                  "epoch": 4, "metrics": {"test_accuracy": 99.1}, "mean": 0.1307, "std": 0.3081}
    save_checkpoint(tmp_path / "best.pt", checkpoint)
    loaded = load_checkpoint(tmp_path / "best.pt")
    assert loaded["epoch"] == 4 and loaded["metrics"] == {"test_accuracy": 99.1}
    restored = model_from_checkpoint(loaded).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(restored(x), model.eval()(x))


def test_unreadable_or_foreign_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an mnist-ops checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_run_dir_holding_a_run_is_not_overwritten(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="already holds a run"):
        prepare_run_dir(tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


def quiet(message):
    pass


@pytest.mark.integration
def test_one_epoch_of_seed_lean_on_10k_images_reaches_95_percent(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1, "limit_train": 10_000, "augment": "none",
                                              "schedule": "onecycle", "lr": 0.05, "batch_size": 32})
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert summary["last_test_accuracy"] >= 95.0
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "metrics.jsonl", "curves.png", "summary.txt", "last.pt"} <= files
    assert "best.pt" not in files  # the seed's rule: nothing before epoch 3
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["metrics"]["test_accuracy"] == pytest.approx(summary["last_test_accuracy"], abs=1e-4)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_same_seed_gives_identical_metrics(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 2, "limit_train": 1_500, "seed": 5})
    for name in ("a", "b"):
        fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False)
    timing = {"seconds", "train_images_per_second"}  # wall-clock time cannot repeat

    def learned(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert learned("a") == learned("b")
    assert len(learned("a")) == 2
    other = fit(config.replace(seed=6), tmp_path / "c", data_root=mnist_root, log=quiet, progress=False)
    assert learned("c") != learned("a") and other["epochs"] == 2


@pytest.mark.integration
def test_fast_mode_bf16_channels_last_trains(mnist_root, tmp_path):
    config = build_config("lean-8k", None, {"epochs": 1, "limit_train": 3_000, "precision": "bf16",
                                            "channels_last": True, "augment": "none", "batch_size": 32,
                                            "lr": 0.05})
    summary = fit(config, tmp_path / "run", data_root=mnist_root, log=quiet, progress=False)
    assert summary["last_test_accuracy"] >= 85.0


def test_missing_data_leaves_no_run_directory(tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1})
    with pytest.raises(UserError, match="mnist-ops data fetch"):
        fit(config, tmp_path / "run", data_root=tmp_path / "empty-root", log=quiet, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", list_models())
def test_folded_batchnorm_computes_the_same_function(name):
    torch.manual_seed(0)
    model = create_model(name)
    for module in model.modules():  # non-trivial statistics and affine parameters, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    inputs = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(inputs)
        folded = fold_batchnorm(model)
        assert torch.allclose(folded(inputs), expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    labels = torch.randint(0, 10, (64,))
    result = evaluate(model, inputs, labels, torch.device("cpu"), batch_size=16)
    assert torch.equal(result.predictions, expected.argmax(dim=1))
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(expected, labels).item(), abs=1e-4)


@pytest.mark.integration
def test_fast_dropout_training_repeats_and_learns(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1, "limit_train": 3_000, "batch_size": 32, "lr": 0.05,
                                              "fast_dropout": True, "augment": "none"})
    summaries = [fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False) for name in "ab"]
    assert summaries[0]["last_test_accuracy"] == summaries[1]["last_test_accuracy"] >= 85.0
    assert "FastDropout" in (tmp_path / "a" / "summary.txt").read_text()
