import pytest
import torch
from torch import nn

from mnist_ops.models import create_model, list_models
from mnist_ops.muon import GraftedMuon, muon_groups, orthogonalize


def spread(*shape, seed=0):
    """A random matrix whose columns are scaled over two decades: singular values far from equal."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * torch.logspace(-2, 0, shape[-1])


@pytest.mark.parametrize("shape", [(8, 9), (16, 144), (10, 16), (144, 16), (1, 9)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    # Newton-Schulz with Keller Jordan's quintic leaves them in about [0.68, 1.13] for inputs whose singular
    # values spread over two decades (5 steps lift the smallest by up to 3.4445^5, about 480x)
    singular = torch.linalg.svdvals(orthogonalize(spread(*shape)))
    assert singular.min() > 0.6 and singular.max() < 1.2


@pytest.mark.parametrize("momentum, nesterov, decay", [(0.9, True, 1e-3), (0.9, False, 0.0), (0.0, False, 1e-3)])
def test_groups_without_muon_step_exactly_as_torch_sgd(momentum, nesterov, decay):
    generator = torch.Generator().manual_seed(1)
    ours = nn.Parameter(torch.randn(5, 3, generator=generator))
    theirs = nn.Parameter(ours.detach().clone())
    mine = GraftedMuon([{"params": [ours], "muon": False}], lr=0.1, momentum=momentum, nesterov=nesterov,
                       weight_decay=decay)
    sgd = torch.optim.SGD([theirs], lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=decay)
    for _ in range(4):
        grad = torch.randn(5, 3, generator=generator)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        sgd.step()
    assert torch.equal(ours, theirs)


def test_a_muon_step_has_sgds_length_and_an_orthogonal_direction():
    weight = nn.Parameter(torch.randn(16, 12, 3, 3, generator=torch.Generator().manual_seed(2)))
    before = weight.detach().clone()
    grad = spread(108, 16, seed=3).T.reshape(16, 12, 3, 3)  # rows scaled over two decades
    weight.grad = grad
    GraftedMuon([{"params": [weight], "muon": True}], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0).step()
    step = (before - weight.detach()) / 0.1
    sgd_step = grad + 0.9 * grad  # Nesterov from a fresh buffer (the buffer starts as the gradient)
    assert torch.allclose(step.norm(), sgd_step.norm(), rtol=1e-4)
    assert torch.linalg.cond(grad.reshape(16, -1)) > 20
    singular = torch.linalg.svdvals(step.reshape(16, -1))
    assert singular.max() / singular.min() < 2


def test_muon_decays_weights_apart_from_the_orthogonalized_step():
    weight = nn.Parameter(torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(4)))
    before = weight.detach().clone()
    weight.grad = torch.zeros_like(weight)  # no gradient: only the decay moves the weights
    GraftedMuon([{"params": [weight], "muon": True}], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01).step()
    assert torch.allclose(weight.detach(), before * (1 - 0.1 * 0.01))


def test_muon_takes_the_full_convs_outside_the_head():
    model = create_model("lean-8k")
    names = {id(p): n for n, p in model.named_parameters()}
    muon, rest = muon_groups(model)
    chosen = sorted(names[id(p)] for p in muon["params"])
    assert chosen == sorted(n for n, p in model.named_parameters() if n.startswith("conv") and p.ndim == 4)
    assert len(chosen) == 7 and "head.weight" in {names[id(p)] for p in rest["params"]}


def test_depthwise_filters_step_as_sgd():
    # lean-2k's separable blocks: a depthwise conv's channels share no input, so its filters are not one matrix
    model = create_model("lean-2k")
    depthwise = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    muon, rest = muon_groups(model)
    assert depthwise and depthwise <= {id(p) for p in rest["params"]}
    assert not depthwise & {id(p) for p in muon["params"]}


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_goes_to_exactly_one_group(name):
    model = create_model(name)
    muon, rest = muon_groups(model)
    grouped = [id(p) for p in muon["params"] + rest["params"]]
    assert muon["params"] and sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_a_net_without_convs_steps_as_sgd():
    # your own MLP under the lean-8k preset (which takes Muon) still trains: fit logs that it is SGD
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    muon, rest = muon_groups(mlp)
    assert muon["params"] == [] and len(rest["params"]) == 2


@pytest.mark.integration
def test_fit_says_when_muon_has_nothing_to_step(mnist_root, tmp_path):
    from mnist_ops.presets import build_config
    from mnist_ops.train import fit

    nets = tmp_path / "nets.py"
    nets.write_text("import torch.nn as nn\ndef Net(num_classes=10):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    lines = []
    config = build_config("lean-8k", None, {"model": f"{nets}:Net", "epochs": 1, "limit_train": 300,
                                            "validation": 300, "ema": 0.0})
    fit(config, tmp_path / "run", data_root=mnist_root, log=lines.append, progress=False)
    assert "optimizer muon: this net has no ungrouped conv outside its head for Muon; it trains as SGD" in lines


DYNAMO_PROBE = """
import sys
import torch
from torch import nn
from mnist_ops.muon import GraftedMuon, muon_groups
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
optimizer = GraftedMuon(muon_groups(model), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
model(torch.randn(2, 1, 28, 28)).sum().backward()
optimizer.step()
state = optimizer.state_dict()
optimizer.zero_grad()
optimizer.load_state_dict(state)
print("torch._dynamo" in sys.modules)
"""


def test_a_muon_optimizer_saves_and_restores_without_importing_dynamo():
    """torch.optim.Optimizer's wrapped methods import torch._dynamo (1.3 s) on first call; Muon runs skip it."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", DYNAMO_PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    # the same probe with SGD, whose step imports dynamo, prints True: the probe sees an import when there is one
    sgd = DYNAMO_PROBE.replace("GraftedMuon(muon_groups(model), ", "torch.optim.SGD(model.parameters(), ")
    result = subprocess.run([sys.executable, "-c", sgd], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_once_dynamo_is_loaded_its_wrappers_are_left_alone():
    """After torch.compile (or an SGD step) loaded dynamo, a Muon optimizer leaves the methods dynamo-disabled."""
    import subprocess
    import sys

    probe = "import torch._dynamo\n" + DYNAMO_PROBE.replace('print("torch._dynamo" in sys.modules)', """
from mnist_ops.muon import DYNAMO_WRAPPED
plain = [getattr(torch.optim.Optimizer, name).__wrapped__ for name in DYNAMO_WRAPPED]
print([getattr(function, "__dynamo_disable", None) not in (None, function) for function in plain])
""")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[True, True, True, True]"
