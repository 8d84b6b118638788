"""The nets lean-2k was compared with on the validation split (docs/records.md), for `--model`:

    mnist-ops train --preset lean-2k --validation 10000 --precision bf16 --channels-last             # 99.20%
    mnist-ops train --preset lean-2k --model benchmarks/candidate_nets.py:compact_2k \\
        --validation 10000 --precision bf16 --channels-last                                          # 99.06%
    mnist-ops train --preset lean-8k --ema 0 --augment light --model benchmarks/candidate_nets.py:separable_8k \\
        --validation 10000 --precision bf16 --channels-last          # last 3 epochs 99.41, 99.46, 99.45%

(seed 1; the percentages are the last epoch's validation accuracy unless the last 3 are given.)
"""

import torch
from torch import nn

from mnist_ops.models import Classifier, compact_net, separable_net


def compact_2k(num_classes: int = 10) -> nn.Module:
    """lean-8k's layout (full 3x3 convs) at widths (4, 4, 8, 4, 6, 8, 8): 1,888 parameters."""
    return compact_net((4, 4, 8, 4, 6, 8, 8), None, num_classes)


def separable_8k(num_classes: int = 10) -> nn.Module:
    """lean-2k's layout (separable convs) at widths (12, 24, 32, 48, 48): 6,856 parameters."""
    return separable_net((12, 24, 32, 48, 48), num_classes)


def fast_8k(num_classes: int = 10) -> nn.Module:
    """The racing net, registered since as `fast-8k` (models.fast_8k, the same layers and initialisation):
    the records' commands that name benchmarks/candidate_nets.py:fast_8k still run it."""
    from mnist_ops.models import fast_8k as registered

    return registered(num_classes)


def pool_first_8k(num_classes: int = 10) -> nn.Module:
    """fast-8k with its first max-pool moved before the first BatchNorm and ReLU (conv1: conv, pool, bn, relu);
    the same 7,568 parameters.

    A ReLU commutes with a max-pool, and so does BatchNorm's affine map while its scale is positive, so
    the net computes nearly the same family of functions; only the first BatchNorm's statistics differ
    (taken over the pooled map). Its BatchNorm and ReLU run on a quarter of the pixels: 1.38x fast-8k's
    train step on one thread (12,472 and 12,017 against 8,856 and 8,981 img/s; bf16, channels_last,
    batch 128; a scratch script alternating the two, nothing else running; both nets with the
    out-of-place ReLUs conv_block had then: docs/benchmarks/followup-2026-11-26-night.log). For the 25-second
    race: on the validation split its lowest seed read 99.37% (docs/records.md), so it did not go to the test set.
    """
    from collections import OrderedDict

    from mnist_ops.models import fast_8k as registered

    layers = OrderedDict(registered(num_classes).named_children())
    first = layers.pop("conv1")
    layers.pop("pool1")
    layers["conv1"] = nn.Sequential(OrderedDict([("conv", first.conv), ("pool", nn.MaxPool2d(2, 2)),
                                                 ("bn", first.bn), ("relu", first.relu)]))
    layers.move_to_end("conv1", last=False)
    return Classifier(**layers)


class Crop(nn.Module):
    """Keep the centre of the image: `border` pixels off each side (MNIST digits sit in the centre 20x20)."""

    def __init__(self, border: int):
        super().__init__()
        if border < 1:
            raise ValueError(f"Crop needs a border of at least 1 pixel, got {border}")
        self.border = border

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.border:-self.border, self.border:-self.border]


def crop_8k(num_classes: int = 10) -> nn.Module:
    """fast_8k's layers on the centre 24x24 of the image: 24 -> 22 -> pool 11 -> 9 -> 7 -> 5 -> 3 -> GAP; 7,568 parameters.

    The net crops its own input, so a test image still gets one plain forward pass. 1.28x fast_8k's
    train step (19,061 against 15,416 and 14,334 img/s: levers.train_rate called on a scratch copy of the same
    layers, bf16, channels_last, 2 copies, batch 256, one process). For the 25-second race (docs/records.md).
    """
    return pooled_net(2, num_classes)


def pooled_net(border: int, num_classes: int = 10) -> nn.Module:
    """fast-8k (models.fast_8k) on the image less `border` pixels a side: the same layers, built in the same
    order, with the global average pool sized to the smaller map; 7,568 parameters."""
    from collections import OrderedDict

    from mnist_ops.models import Classifier, fast_8k as registered

    layers = OrderedDict(registered(num_classes).named_children())
    side = ((28 - 2 * border - 2) // 2) - 8  # the map after conv1, the pool and four unpadded 3x3 convs
    layers["gap"] = nn.AvgPool2d(side)
    return Classifier(**({"crop": Crop(border)} if border else {}), **layers)


def separable_1k(num_classes: int = 10) -> nn.Module:
    """lean-2k's layout (separable convs) at widths (6, 8, 10, 12, 12): 986 parameters, for the < 1,000 stretch."""
    return separable_net((6, 8, 10, 12, 12), num_classes)


def separable_1k_narrow_start(num_classes: int = 10) -> nn.Module:
    """lean-2k's layout at widths (4, 8, 10, 12, 14): 978 parameters, for the < 1,000 stretch.

    separable_1k's budget moved from the first conv (which sees one channel) to the last block, so
    the head gets 14 features instead of 12.
    """
    return separable_net((4, 8, 10, 12, 14), num_classes)


def dilated_1k(num_classes: int = 10) -> nn.Module:
    """separable_1k (986 parameters) with its last two depthwise convs dilated by 2: the same weights
    see further. 28 -> 26 -> 24 -> pool 12 -> 10 -> 6 -> 2 -> GAP; receptive field 26 against 18.
    """
    from collections import OrderedDict

    from mnist_ops.models import Classifier, conv_block, separable_block

    def dilated(cin: int, cout: int) -> nn.Sequential:  # models.separable_block, its depthwise conv dilated
        return nn.Sequential(OrderedDict([
            ("depthwise", nn.Conv2d(cin, cin, 3, dilation=2, groups=cin, bias=False)),
            ("pointwise", nn.Conv2d(cin, cout, 1, bias=False)), ("bn", nn.BatchNorm2d(cout)), ("relu", nn.ReLU()),
        ]))

    return Classifier(
        conv1=conv_block(1, 6, batch_norm=True, dropout=None, bias=False), conv2=separable_block(6, 8),
        pool1=nn.MaxPool2d(2, 2),
        conv3=separable_block(8, 10), conv4=dilated(10, 12), conv5=dilated(12, 12),
        gap=nn.AvgPool2d(2),
        head=nn.Conv2d(12, num_classes, 1, bias=False),
    )


def wide_5k(num_classes: int = 10) -> nn.Module:
    """lean-5k's layout with a wider first and last conv, (8, 8, 12, 6, 10, 12, 14): 4,996 parameters.

    lean-5k's remaining budget (4,590 -> 4,999) spent where a channel is cheapest in parameters (the
    first conv, at full resolution) and where it widens what the head sees (the last conv).
    Compared with lean-5k on the validation split (benchmarks/compare_on_validation.py; docs/records.md):
    no better, so lean-5k keeps its net.
    """
    return compact_net((8, 8, 12, 6, 10, 12, 14), None, num_classes)


def wide_8k(num_classes: int = 10) -> nn.Module:
    """lean-8k's layout with a wider first and last conv, (10, 10, 16, 8, 12, 16, 17): 7,946 parameters.

    The same idea as wide_5k for lean-8k's remaining budget (7,588 -> 7,999). Best on the validation split
    (docs/records.md), but on the test set it held 99.5% on 8 of 10 seeds (docs/wide-8k-ema), so dropped.
    """
    return compact_net((10, 10, 16, 8, 12, 16, 17), None, num_classes)


def fast_5k(num_classes: int = 10) -> nn.Module:
    """fast-8k's layout (models.early_pool_net) at widths (8, 10, 12, 12, 12): 4,692 parameters, for lean-5k
    (docs/records.md, "The race's net for the lean-5k record")."""
    from mnist_ops.models import early_pool_net

    return early_pool_net((8, 10, 12, 12, 12), num_classes)
