import pytest
import torch

from mnist_ops.errors import UserError
from mnist_ops.models import count_parameters, create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_shape_finite_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name)
    model.train()
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name, expected", [
    ("seed-regularized", 511_386), ("seed-baseline", 509_946), ("seed-lean", 7_758),
])
def test_seed_parameter_counts(name, expected):
    assert count_parameters(create_model(name)) == expected


def test_seed_regularized_block_order_and_dropout_parameter():
    model = create_model("seed-regularized", dropout=0.2)
    kinds = [type(m).__name__ for m in model][:4]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout"]
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    baseline = create_model("seed-baseline")
    assert not any(isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm2d)) for m in baseline.modules())


def test_eval_mode_is_deterministic():
    model = create_model("seed-lean", dropout=0.5).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), model(x))


def test_unknown_model_and_bad_dropout():
    with pytest.raises(UserError, match="unknown model 'nope'; choose one of: .*seed-lean"):
        create_model("nope")
    with pytest.raises(UserError, match="dropout"):
        create_model("seed-lean", dropout=1.5)


def test_study_rungs_differ_only_in_regularizers():
    plain, bn, full = (create_model(n) for n in ("seed-lean-plain", "seed-lean-bn", "seed-lean"))
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)) for m in plain.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in bn.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in full.modules())
    assert count_parameters(bn) == count_parameters(full) == 7_758


@pytest.mark.parametrize("name, limit", [("lean-8k", 8_000), ("lean-5k", 5_000)])
def test_challenge_nets_stay_under_their_parameter_budget_with_full_receptive_field(name, limit):
    from mnist_ops.analysis import receptive_field

    model = create_model(name)
    assert count_parameters(model) < limit
    assert receptive_field(model)[-1].receptive_field >= 28


def test_fast_dropout_drops_at_rate_p_and_stays_unbiased():
    from mnist_ops.models import FastDropout

    layer = FastDropout(0.05).train()
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5
    y = layer(x)
    dropped = y == 0
    assert dropped.double().mean().item() == pytest.approx(0.05, abs=0.002)  # 1e6 draws: sd 0.0002
    assert torch.allclose(y[~dropped], x[~dropped] * layer.scale)
    assert layer.scale == pytest.approx(1 / (1 - layer.threshold / 65536))
    assert y.mean().item() == pytest.approx(x.mean().item(), rel=0.01)
    assert torch.equal(layer.eval()(x), x)  # evaluation: the identity


def test_fast_dropout_masks_follow_torch_manual_seed_and_the_memory_format():
    from mnist_ops.models import FastDropout

    layer = FastDropout(0.3).train()
    x = torch.ones(4, 3, 5, 5)

    def mask(seed, tensor):
        torch.manual_seed(seed)
        return layer(tensor) == 0

    assert torch.equal(mask(1, x), mask(1, x)) and not torch.equal(mask(1, x), mask(2, x))
    channels_last = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(1)
    out = layer(channels_last)
    out.sum().backward()
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last.grad, out.detach())  # d(x * mask)/dx = mask, with x = 1


def test_use_fast_dropout_replaces_every_dropout_layer():
    from mnist_ops.models import FastDropout, use_fast_dropout

    model = create_model("seed-regularized", dropout=0.05)
    count = sum(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert count > 0 and use_fast_dropout(model) == count
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert all(m.p == 0.05 for m in model.modules() if isinstance(m, FastDropout))
    assert model.train()(torch.randn(4, 1, 28, 28)).shape == (4, 10)
