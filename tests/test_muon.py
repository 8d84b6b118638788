import pytest
import torch

from mnist_ops.models import create_model, list_models
from mnist_ops.muon import GraftedMuon, muon_groups, orthogonalize


@pytest.mark.parametrize("shape", [(8, 9), (16, 144), (10, 16), (144, 16), (1, 9)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    # Newton-Schulz with Keller Jordan's quintic leaves them in about [0.68, 1.13] for inputs whose singular
    # values spread over two decades (5 steps lift the smallest by up to 3.4445^5, about 480x)
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 0, shape[1])
    singular = torch.linalg.svdvals(orthogonalize(matrix))
    assert singular.min() > 0.6 and singular.max() < 1.2


def test_groups_without_muon_step_exactly_as_torch_sgd():
    generator = torch.Generator().manual_seed(1)
    ours = torch.nn.Parameter(torch.randn(5, 3, generator=generator))
    theirs = torch.nn.Parameter(ours.detach().clone())
    mine = GraftedMuon([{"params": [ours], "muon": False}], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    sgd = torch.optim.SGD([theirs], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for _ in range(4):
        grad = torch.randn(5, 3, generator=generator)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        sgd.step()
    assert torch.equal(ours, theirs)


def test_a_muon_step_has_sgds_length_and_an_orthogonal_direction():
    generator = torch.Generator().manual_seed(2)
    weight = torch.nn.Parameter(torch.randn(16, 12, 3, 3, generator=generator))
    before = weight.detach().clone()
    grad = torch.randn(16, 12, 3, 3, generator=generator)
    weight.grad = grad
    GraftedMuon([{"params": [weight], "muon": True}], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0).step()
    step = (before - weight.detach()) / 0.1
    sgd_step = grad + 0.9 * grad  # Nesterov from a fresh buffer (the buffer starts as the gradient)
    assert torch.allclose(step.norm(), sgd_step.norm(), rtol=1e-4)
    singular = torch.linalg.svdvals(step.reshape(16, -1))
    assert singular.max() / singular.min() < 2  # the gradient's own spread is far larger
    assert torch.linalg.cond(grad.reshape(16, -1)) > 2


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_goes_to_one_group_and_only_hidden_conv_filters_to_muon(name):
    model = create_model(name)
    muon, rest = muon_groups(model)
    named = dict(model.named_parameters())
    in_muon = {n for n, p in named.items() if any(p is q for q in muon["params"])}
    assert len(muon["params"]) + len(rest["params"]) == len(named)
    assert in_muon == {n for n, p in named.items() if p.ndim == 4 and not n.startswith("head.")}
    assert in_muon and not any(n.startswith("head.") for n in in_muon)
