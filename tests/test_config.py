import pytest

from mnist_ops.config import Config, read_toml, to_toml
from mnist_ops.errors import UserError
from mnist_ops.presets import PRESETS, build_config


def test_seed_regularized_preset_is_the_seeds_recipe():
    config = PRESETS["seed-regularized"]
    assert (config.model, config.optimizer, config.lr, config.momentum, config.batch_size, config.epochs,
            config.augment, config.schedule) == ("seed-regularized", "sgd", 0.015, 0.9, 128, 15, "seed", "constant")


def test_layers_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "seed-lean"\nepochs = 3\nlr = 0.1\n')
    config = build_config(None, str(path), {"lr": 0.2})
    assert (config.preset, config.model, config.epochs, config.lr) == ("seed-lean", "seed-lean", 3, 0.2)
    assert build_config("seed-baseline", str(path), {}).model == "seed-baseline"  # the flag's preset wins


def test_unknown_keys_rejected_by_name(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) learning_rate"):
        build_config(None, str(path), {})


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "'epochs' must be >= 1"),
    ({"epochs": "ten"}, "'epochs' must be int"),
    ({"lr": -1.0}, "'lr' must be in"),
    ({"schedule": "cosine"}, "'schedule' must be one of constant, onecycle"),
    ({"dropout": 1.0}, "'dropout' must be in"),
    ({"nesterov": 1}, "'nesterov' must be bool"),
])
def test_bad_values_rejected(changes, message):
    with pytest.raises(UserError, match=message):
        build_config("seed-lean", None, changes)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("epochs = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        build_config(None, str(path), {})
    with pytest.raises(UserError, match="not found"):
        build_config(None, str(tmp_path / "absent.toml"), {})
    with pytest.raises(UserError, match="unknown preset 'fast'"):
        build_config("fast", None, {})


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = build_config("seed-regularized", None, {"lr": 0.05, "seed": 7})
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config.to_dict()))
    assert Config(**read_toml(path)) == config
    assert build_config(None, str(path), {}) == config
