"""Muon's update direction for conv filters, with SGD's step size (grafting).

Muon (Keller Jordan, 2024) takes the momentum of a weight matrix and replaces it by the nearest
semi-orthogonal matrix (all singular values near 1), computed by a few Newton-Schulz iterations.
torch.optim.Muon takes 2-D parameters only, so a conv filter bank [out, in, k, k] is treated here
as the matrix [out, in·k·k], as airbench does. The orthogonalized update is then scaled to the length
of the SGD update it replaces (grafting, Agarwal et al. 2020), so the lr means what it means for
SGD and a preset's lr schedule carries over. Every other parameter (BatchNorm, biases, the head,
depthwise filters, whose channels do not share an input) steps as torch.optim.SGD would.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

# torch.optim.Optimizer wraps add_param_group, state_dict, load_state_dict and zero_grad in
# torch._disable_dynamo, which imports torch._dynamo on their first call (sympy and the compiler: 1.3 s of a
# 5-second start-up here, `python -X importtime`) so that torch.compile would not trace into them. Nothing in
# mnist-ops compiles an optimizer, and GraftedMuon's step, unlike torch.optim.SGD's, never touches dynamo, so
# a Muon run can start without that import: each wrapper caches the function it calls on the function it
# wraps, and if torch._dynamo is not loaded yet we set that cache to the plain function. That holds for the
# rest of the process and for every optimizer: these four methods then run unguarded even if torch.compile
# loads dynamo later, which matters only to compiled code that calls them (mnist-ops compiles a model's
# forward at most, in benchmarks/levers.py and compile_cost.py).
DYNAMO_WRAPPED = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def skip_dynamo_import() -> None:
    """Let torch.optim.Optimizer's dynamo-wrapped methods run without importing torch._dynamo (see above)."""
    if "torch._dynamo" in sys.modules:  # loaded already: nothing to save, and dynamo may be in use
        return
    for name in DYNAMO_WRAPPED:
        function = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if function is not None:  # a torch that does not wrap the method has nothing to skip
            setattr(function, "__dynamo_disable", function)


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iterations towards U·Vᵀ of the matrix's SVD (Keller Jordan's quintic coefficients).

    Each step lifts a small singular value by up to 3.4445x, so 5 steps bring those within about 1/500 of
    the largest into [0.68, 1.13] (tests/test_muon.py)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix / (matrix.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class GraftedMuon(torch.optim.Optimizer):
    """torch.optim.SGD (momentum, Nesterov, weight decay) whose groups marked `muon` step along the
    orthogonalized update instead, with its length, and decay their weights apart from it."""

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool, weight_decay: float):
        skip_dynamo_import()
        super().__init__(groups, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      muon=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay, muon = group["lr"], group["momentum"], group["weight_decay"], group["muon"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=decay) if decay and not muon else p.grad
                update = grad
                if momentum:
                    buffer = self.state[p].get("momentum_buffer")
                    if buffer is None:
                        buffer = self.state[p]["momentum_buffer"] = grad.clone()
                    else:
                        buffer.mul_(momentum).add_(grad)
                    update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if muon:
                    direction = orthogonalize(update.reshape(len(update), -1).float()).view_as(update)
                    update = direction * (update.norm() / (direction.norm() + 1e-12))
                    if decay:  # decoupled: orthogonalizing would undo a decay added to the gradient
                        p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr)
        return loss


def muon_groups(model: nn.Module) -> list[dict]:
    """The filters of the model's ungrouped convs outside its head go to Muon; everything else to SGD.
    A net without such convs (your own MLP under the lean-8k preset) gets an empty Muon group: it trains as
    SGD, and fit says so."""
    muon = [module.weight for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.groups == 1 and name != "head" and not name.startswith("head.")]
    chosen = {id(p) for p in muon}
    return [{"params": muon, "muon": True},
            {"params": [p for p in model.parameters() if id(p) not in chosen], "muon": False}]
