from pathlib import Path

import pytest
import torch

from mnist_ops.engine import TrainStep, build_model, make_optimizer, make_scheduler, memory_format
from mnist_ops.errors import UserError
from mnist_ops.models import count_parameters, create_model
from mnist_ops.config import to_toml
from mnist_ops.presets import PRESETS, build_config


EPOCH_LIMITS = {"lean-2k": 20}  # the records' limits (docs/records.md); 15 for every other preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_takes_a_finite_training_step_that_reaches_every_parameter(name):
    config = build_config(name)
    assert config.preset == name and 1 <= config.epochs <= EPOCH_LIMITS.get(name, 15)
    torch.manual_seed(0)
    model = build_model(config).to(memory_format=memory_format(config))
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = make_optimizer(config, model)
    step = TrainStep(model, optimizer, config, make_scheduler(config, optimizer, steps_per_epoch=10))
    logits, loss = step(torch.randn(8, 1, 28, 28), torch.arange(8))  # the engine's step, as fit takes it
    step.close()
    assert logits.shape == (8, 10) and torch.isfinite(loss)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name
        assert not torch.equal(parameter, before[parameter_name]), parameter_name  # the optimizer stepped

def test_the_race_preset_differs_from_the_challenge_recipe_only_in_its_net_speed_and_schedule():
    fast, base = build_config("lean-8k-fast"), build_config("lean-8k")
    assert fast.model != base.model and count_parameters(create_model(fast.model)) < 8_000  # fast-8k pools early
    changed = {key for key, value in fast.to_dict().items() if base.to_dict()[key] != value}
    # no EMA (an average lost 0.03 points in the 5-epoch race: docs/records.md), a plain last epoch, precise BN and
    # the seed's black rotation corners; the data, the augmentation, the optimizer and the 99.4% target are the
    # challenge's
    assert changed == {"preset", "model", "precision", "channels_last", "replicas", "batch_size", "lr", "epochs",
                       "ema", "plain_epochs", "precise_bn", "rotation_fill"}
    assert (fast.augment, fast.optimizer, fast.target_accuracy, fast.plain_epochs) == ("seed", "muon", 99.4, 1)
    assert fast.precise_bn == 5120


def test_a_recorded_run_config_repeats_that_run_and_a_partial_file_layers_on_its_preset(tmp_path):
    """--config with an older run's config.toml gave the keys added since their preset's value of today: lean-8k's
    first runs had no EMA, and training from their file got one (an audit). A file that records a whole run takes
    Config's defaults for them; a short file still takes its preset's."""
    recorded = Path(__file__).parents[1] / "docs" / "lean-8k" / "lean-8k" / "seed1" / "config.toml"
    assert "ema" not in recorded.read_text() and PRESETS["lean-8k"].ema == 0.999
    config = build_config(None, str(recorded))
    assert (config.preset, config.ema, config.optimizer, config.rotation_fill) == ("lean-8k", 0.0, "sgd", "mean")
    short = tmp_path / "short.toml"
    short.write_text('preset = "lean-8k"\nlr = 0.05\n')
    config = build_config(None, str(short))
    assert (config.lr, config.ema, config.optimizer) == (0.05, 0.999, "muon")


def test_a_preset_flag_that_would_only_relabel_a_recorded_run_is_refused(tmp_path):
    """--preset lean-8k with a whole lean-2k config.toml changed only the run's label (an audit); on a short file
    the flag's preset still wins (tests/test_config.py)."""
    path = tmp_path / "config.toml"
    path.write_text(to_toml(build_config("lean-2k").to_dict()))
    with pytest.raises(UserError, match=r"--preset lean-8k would change only the label of the run .* \(preset "
                                        r"'lean-2k'\); drop --preset"):
        build_config("lean-8k", str(path))
    assert build_config("lean-2k", str(path)).model == "lean-2k"
