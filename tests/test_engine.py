import pytest
import torch

from mnist_ops.engine import (NonFiniteLoss, TrainStep, checkpoint_decision, evaluate, find_checkpoint, fold_batchnorm,
                              load_checkpoint, make_optimizer, model_from_checkpoint, random_states,
                              restore_random_states, save_checkpoint)
from mnist_ops.errors import UserError
from mnist_ops.models import create_model, list_models
from mnist_ops.presets import build_config

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




def test_find_checkpoint_takes_a_run_directory_and_prefers_best(tmp_path):
    messages = []
    (tmp_path / "last.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, log=messages.append) == tmp_path / "last.pt"
    assert "no best.pt" in messages[-1]
    (tmp_path / "best.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, log=messages.append) == tmp_path / "best.pt"
    assert find_checkpoint(tmp_path / "last.pt") == tmp_path / "last.pt"


def test_a_missing_best_pt_suggests_last_pt_and_an_empty_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match="holds no best.pt or last.pt"):
        find_checkpoint(run)
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="use .*last.pt or the run directory"):
        find_checkpoint(run / "best.pt")


@pytest.mark.parametrize("preset", ["lean-8k", "lean-8k-fast"])  # one model, and two copies in threads
def test_the_train_step_moves_the_weights_against_the_gradient(preset):
    config = build_config(preset, None, {"lr": 0.05, "momentum": 0.0, "nesterov": False})
    torch.manual_seed(0)
    model = create_model(config.model, dropout=config.dropout)
    reference = create_model(config.model, dropout=config.dropout)
    reference.load_state_dict(model.state_dict())
    step = TrainStep(model, make_optimizer(config, model), config)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    logits, loss = step(x, y)
    step.close()
    assert logits.shape == (16, 10) and loss.dim() == 0 and not loss.requires_grad
    for (name, after), before in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(after, before - 0.05 * after.grad, atol=1e-6), name


def test_a_non_finite_loss_stops_the_step_before_the_weights_change():
    config = build_config("lean-8k", None, {})
    model = create_model("lean-8k", dropout=0.0)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    step = TrainStep(model, make_optimizer(config, model), config)
    x = torch.full((4, 1, 28, 28), float("nan"))
    with pytest.raises(NonFiniteLoss):
        step(x, torch.arange(4))
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    torch.randn(3, generator=generator)
    save_checkpoint(tmp_path / "state.pt", {"random_states": random_states(generator)})
    expected = (torch.randn(5, generator=generator), torch.randn(5), np.random.rand(5), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    generator = torch.Generator().manual_seed(99)
    restore_random_states(torch.load(tmp_path / "state.pt", weights_only=True)["random_states"], generator)
    got = (torch.randn(5, generator=generator), torch.randn(5), np.random.rand(5), random.random())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert np.array_equal(got[2], expected[2]) and got[3] == expected[3]
