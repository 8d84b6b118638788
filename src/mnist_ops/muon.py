"""Muon's update direction for conv filters, with SGD's step size (grafting).

Muon (Keller Jordan, 2024) takes the momentum of a weight matrix and replaces it by the nearest
semi-orthogonal matrix (all singular values 1), computed by a few Newton-Schulz iterations.
torch.optim.Muon takes 2-D parameters only, so a conv filter bank [out, in, k, k] is treated here
as the matrix [out, in·k·k], as airbench does. The orthogonalized update is then scaled to the norm
of the SGD update it replaces (grafting, Agarwal et al. 2020), so the lr means what it means for
SGD and a preset's lr schedule carries over. Every other parameter (BatchNorm, biases, the head)
steps as torch.optim.SGD with the same momentum would.
"""

from __future__ import annotations

import torch


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iterations towards U·Vᵀ of the matrix's SVD (Keller Jordan's quintic coefficients)."""
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
    """SGD with momentum whose groups marked `muon` step along the orthogonalized update."""

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool, weight_decay: float):
        super().__init__(groups, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      muon=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=decay) if decay else p.grad
                buffer = self.state[p].get("momentum_buffer")
                if buffer is None:
                    buffer = self.state[p]["momentum_buffer"] = grad.clone()
                else:
                    buffer.mul_(momentum).add_(grad)
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if group["muon"]:
                    direction = orthogonalize(update.reshape(len(update), -1).float()).view_as(update)
                    update = direction * (update.norm() / (direction.norm() + 1e-12))
                p.add_(update, alpha=-lr)


def muon_groups(model: torch.nn.Module) -> list[dict]:
    """Conv filter banks (4-D weights) outside the head go to Muon; everything else to SGD."""
    muon, rest = [], []
    for name, p in model.named_parameters():
        (muon if p.ndim == 4 and not name.startswith("head.") else rest).append(p)
    return [{"params": muon, "muon": True}, {"params": rest, "muon": False}]
