"""The nets lean-2k was compared with on the validation split (docs/records.md), for `--model`:

    mnist-ops train --preset lean-2k --validation 10000 --precision bf16 --channels-last             # 99.20%
    mnist-ops train --preset lean-2k --model benchmarks/candidate_nets.py:compact_2k \\
        --validation 10000 --precision bf16 --channels-last                                          # 99.06%
    mnist-ops train --preset lean-8k --augment light --model benchmarks/candidate_nets.py:separable_8k \\
        --validation 10000 --precision bf16 --channels-last          # last 3 epochs 99.41, 99.46, 99.45%

(seed 1; the percentages are the last epoch's validation accuracy unless the last 3 are given.)
"""

from torch import nn

from mnist_ops.models import compact_net, separable_net


def compact_2k(num_classes: int = 10) -> nn.Module:
    """lean-8k's layout (full 3x3 convs) at widths (4, 4, 8, 4, 6, 8, 8): 1,888 parameters."""
    return compact_net((4, 4, 8, 4, 6, 8, 8), None, num_classes)


def separable_8k(num_classes: int = 10) -> nn.Module:
    """lean-2k's layout (separable convs) at widths (12, 24, 32, 48, 48): 6,856 parameters."""
    return separable_net((12, 24, 32, 48, 48), num_classes)
