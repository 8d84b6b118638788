"""Models, registered by name (as timm does) and built by name with `create_model`.

Every model is a plain `nn.Sequential` of layers in forward order, ending in logits
[N, 10]; the receptive-field table is computed by walking those layers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mnist_ops.errors import UserError

DEFAULT_DROPOUT = 0.05  # the value the reference repository's models use

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = builder
        return builder
    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    if name not in _REGISTRY:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    return _REGISTRY[name](dropout=dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


class FastDropout(nn.Module):
    """Dropout whose mask comes from random bytes of a numpy PCG64 generator, seeded by one draw
    from torch's generator (so `torch.manual_seed` still fixes every mask).

    torch's CPU dropout draws each element from one serial generator: masks take 42% of
    seed-regularized's bf16 channels_last train step, and one layer's forward + backward on a
    [128, 16, 26, 26] bf16 tensor takes 5.86 ms against 2.49 ms here (`python benchmarks/dropout.py`,
    docs/speed.md). The drop probability is rounded to a multiple of 1/65536 and
    kept values are scaled by 1 / (keep probability), so the layer stays unbiased.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536)  # a uint16 below it drops the element
        self.scale = 65536 / (65536 - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        import numpy as np

        seed = int(torch.randint(0, 2**62, (1,)).item())
        bits = np.frombuffer(np.random.default_rng(seed).bytes(2 * x.numel()), dtype=np.uint16)
        keep = torch.from_numpy(bits >= self.threshold)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            n, c, h, w = x.shape
            keep = keep.view(n, h, w, c).permute(0, 3, 1, 2)  # the mask in x's own layout
        else:
            keep = keep.view(x.shape)
        return x * keep.to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout in `model` by FastDropout with the same p; returns how many."""
    replaced = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, FastDropout(child.p))
                replaced += 1
    return replaced


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, *, batch_norm: bool,
               dropout: float, bias: bool = True, order: str = "bn-relu-drop", padding: int = 0) -> list[nn.Module]:
    """Conv, then BatchNorm / ReLU / Dropout in the given order (absent ones left out)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)]
    parts = {
        "bn": [nn.BatchNorm2d(out_channels)] if batch_norm else [],
        "relu": [nn.ReLU()],
        "drop": [nn.Dropout(dropout)] if dropout > 0 else [],
    }
    for part in order.split("-"):
        layers += parts[part]
    return layers


class Classifier(nn.Sequential):
    """Layers in forward order; the output is flattened to logits [N, classes]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(1)


# ----------------------------------------------------------------------- the seed's nets

def _seed_net(batch_norm: bool, dropout: float) -> Classifier:
    def block(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
        return conv_block(cin, cout, k, batch_norm=batch_norm, dropout=dropout)

    return Classifier(
        *block(1, 32), *block(32, 64), *block(64, 128),
        nn.MaxPool2d(2, 2),
        *block(128, 16, 1), *block(16, 32), *block(32, 64), *block(64, 128), *block(128, 256),
        nn.Conv2d(256, 10, 3),
    )


@register_model("seed-baseline")
def seed_baseline(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """The seed's previous step: 9 convs, no BatchNorm, no Dropout (509,946 parameters)."""
    return _seed_net(batch_norm=False, dropout=0.0)


@register_model("seed-regularized")
def seed_regularized(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """The seed's network: Conv -> BatchNorm -> ReLU -> Dropout blocks (511,386 parameters)."""
    return _seed_net(batch_norm=True, dropout=dropout)


# ------------------------------------------------------------------- the 7,758 lean net

def _lean_net(dropout: float, batch_norm: bool = True) -> Classifier:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return conv_block(cin, cout, batch_norm=batch_norm, dropout=dropout, bias=not batch_norm,
                          order="bn-drop-relu")

    return Classifier(
        *block(1, 10), *block(10, 10), *block(10, 10), *block(10, 10),
        nn.MaxPool2d(2, 2),
        *block(10, 10), *block(10, 16), *block(16, 16),
        nn.AvgPool2d(4),
        nn.Conv2d(16, 10, 1, bias=False),
    )


@register_model("seed-lean")
def seed_lean(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """The reference repository's 7,758-parameter net: 7 bias-free convs + BN + Dropout + ReLU, GAP, 1x1."""
    return _lean_net(dropout)


# The same lean net without its regularizers: the rungs of the regularization study.
@register_model("seed-lean-plain")
def seed_lean_plain(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """seed-lean without BatchNorm and Dropout (convs get biases instead of BN shifts).

    He (kaiming-normal) init: with PyTorch's default init this 8-conv net without BatchNorm
    stays at chance (11.7% after 156 SGD steps at lr 0.05 or 0.01; He init: 66.1%), and the
    study would measure "BatchNorm makes it trainable" instead of what it regularizes.
    """
    model = _lean_net(dropout=0.0, batch_norm=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


@register_model("seed-lean-bn")
def seed_lean_bn(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """seed-lean with BatchNorm but no Dropout."""
    return _lean_net(dropout=0.0)


# ------------------------------------------------------------- the < 8k challenge nets

def _compact_net(widths: tuple[int, ...], dropout: float) -> Classifier:
    """Three 3x3 convs, max-pool, a 1x1 squeeze, three 3x3 convs, global average pool, 1x1 to logits.

    widths = (c1, c2, c3, squeeze, c4, c5, c6); every conv is bias-free and followed by BN, ReLU, Dropout.
    28 -> 26 -> 24 -> 22 -> pool 11 -> 11 -> 9 -> 7 -> 5 -> GAP 1; receptive field 28.
    """
    c1, c2, c3, squeeze, c4, c5, c6 = widths

    def block(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
        return conv_block(cin, cout, k, batch_norm=True, dropout=dropout, bias=False)

    return Classifier(
        *block(1, c1), *block(c1, c2), *block(c2, c3),
        nn.MaxPool2d(2, 2),
        *block(c3, squeeze, 1), *block(squeeze, c4), *block(c4, c5), *block(c5, c6),
        nn.AvgPool2d(5),
        nn.Conv2d(c6, 10, 1, bias=False),
    )


@register_model("lean-8k")
def lean_8k(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """7,588 parameters: the < 8,000 challenge net."""
    return _compact_net((8, 10, 16, 8, 12, 16, 16), dropout)


@register_model("lean-5k")
def lean_5k(dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """The < 5,000 stretch net."""
    return _compact_net((6, 8, 12, 6, 10, 12, 12), dropout)
