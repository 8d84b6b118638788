import json

import pytest

from mnist_ops.errors import UserError
from mnist_ops.presets import build_config
from mnist_ops.engine import load_checkpoint
from mnist_ops.train import fit


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


@pytest.mark.integration
def test_fast_dropout_training_repeats_and_learns(mnist_root, tmp_path):
    config = build_config("seed-lean", None, {"epochs": 1, "limit_train": 3_000, "batch_size": 32, "lr": 0.05,
                                              "fast_dropout": True, "augment": "none"})
    summaries = [fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False) for name in "ab"]
    assert summaries[0]["last_test_accuracy"] == summaries[1]["last_test_accuracy"] >= 85.0
    assert "FastDropout" in (tmp_path / "a" / "summary.txt").read_text()
