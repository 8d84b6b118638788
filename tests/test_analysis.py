import pytest
import torch

from mnist_ops.analysis import (confusion_matrix, format_receptive_field, model_summary, per_class_accuracy,
                                receptive_field)
from mnist_ops.models import create_model


def test_seed_regularized_receptive_field_matches_the_seed_table():
    rows = receptive_field(create_model("seed-regularized"))
    assert [r.receptive_field for r in rows] == [3, 5, 7, 8, 8, 12, 16, 20, 24, 28]
    assert [r.kernel for r in rows] == [3, 3, 3, 2, 1, 3, 3, 3, 3, 3]
    assert [r.stride for r in rows] == [1, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    assert [r.input_size for r in rows] == [28, 26, 24, 22, 11, 11, 9, 7, 5, 3]
    assert [r.output_size for r in rows] == [26, 24, 22, 11, 11, 9, 7, 5, 3, 1]
    table = format_receptive_field(rows)
    assert "28*28" in table and "MaxPool2d" in table


def test_receptive_field_follows_padding_and_dilation():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Conv2d(1, 1, 3, dilation=2),
                                torch.nn.MaxPool2d(2), torch.nn.Conv2d(1, 1, 3))
    rows = receptive_field(model, 28)
    assert [(r.output_size, r.receptive_field) for r in rows] == [(28, 3), (24, 7), (12, 8), (10, 12)]


class OutOfOrder(torch.nn.Module):
    """Its 5x5 conv is defined first and runs second; its 3x3 conv is called twice."""

    def __init__(self):
        super().__init__()
        self.late = torch.nn.Conv2d(4, 4, 5)
        self.early = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.twice = torch.nn.Conv2d(4, 4, 3, padding="same")

    def forward(self, x):
        return self.twice(self.twice(self.late(self.early(x))))


def test_receptive_field_follows_the_forward_pass_not_the_definitions():
    rows = receptive_field(OutOfOrder(), 28)
    assert [(r.input_size, r.output_size, r.receptive_field) for r in rows] == \
        [(28, 14, 3), (14, 10, 11), (10, 10, 15), (10, 10, 19)]
    assert rows[2].padding == "same" and "same" in format_receptive_field(rows)


class FunctionalPool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.nn.functional.max_pool2d(self.conv1(x), 2))


def test_a_pool_called_as_a_function_is_a_row_read_from_the_sizes():
    """conv, F.max_pool2d(2), conv: the table said 5*5 for the second conv, whose field is 8*8, and showed it a
    16*16 input after a 32*32 output (an audit)."""
    rows = receptive_field(FunctionalPool(), 32)
    assert [(r.input_sizes, r.output_sizes, r.kernels, r.strides, r.fields) for r in rows] == [
        ((32, 32), (32, 32), (3, 3), (1, 1), (3, 3)), ((32, 32), (16, 16), (2, 2), (2, 2), (4, 4)),
        ((16, 16), (16, 16), (3, 3), (1, 1), (8, 8))]
    assert "a step outside modules; read as a pool" in format_receptive_field(rows)


class OddPools(torch.nn.Module):
    """Valid 3x3 convs, each followed by a 2x2 max pool on a map of odd side (13 -> 6, 11 -> 5): as a function,
    or as modules (the reference)."""

    def __init__(self, modules: bool):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 2, 3),
                                              torch.nn.Conv2d(2, 2, 3))
        self.pool = torch.nn.MaxPool2d(2) if modules else (lambda x: torch.nn.functional.max_pool2d(x, 2))

    def forward(self, x):
        return self.conv3(self.pool(self.conv2(self.pool(self.conv1(x)))))


def test_a_functional_pool_on_an_odd_map_counts_as_the_module_does():
    """F.max_pool2d(x, 2) on 11 -> 5 rounds down: the table took only exact divisions as pools and dropped
    this one, reading 12*12 for the last conv against 18*18 (a review)."""
    functional, modules = receptive_field(OddPools(False), 28), receptive_field(OddPools(True), 28)
    assert [(r.output_sizes, r.fields) for r in functional] == [(r.output_sizes, r.fields) for r in modules]
    assert modules[-1].fields == (18, 18) and functional[1].layer.startswith("(a step outside")


class PoolFirst(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(torch.nn.functional.max_pool2d(x, 2))


def test_a_functional_pool_before_the_first_layer_is_counted():
    """The first layer's input was taken for the image: a pool of 2 before a 3x3 conv read 3*3, not 6*6."""
    rows = receptive_field(PoolFirst(), 28)
    assert [(r.input_sizes, r.output_sizes, r.fields) for r in rows] == [
        ((28, 28), (14, 14), (2, 2)), ((14, 14), (12, 12), (6, 6))]


class Upsampled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(torch.nn.functional.interpolate(x, scale_factor=2))


def test_a_net_that_resizes_its_input_otherwise_counts_from_what_it_made():
    assert [(r.input_size, r.receptive_field) for r in receptive_field(Upsampled(), 28)] == [(56, 3)]


class FunctionalConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 1, 3, 3))

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight)


def test_a_net_whose_convs_the_table_cannot_see_is_not_said_to_see_the_whole_input():
    """A conv called as F.conv2d (or scripted) runs unseen, and the table said "every output sees the whole input"
    (a review)."""
    net = torch.nn.Sequential(FunctionalConv(), torch.nn.Flatten(), torch.nn.Linear(2 * 26 * 26, 10))
    assert format_receptive_field(receptive_field(net, 28)) == (
        "no conv or pooling module ran in the forward pass (one scripted, or called as F.conv2d, is not seen)")


class TwoResolutions(torch.nn.Module):
    """A stem, then a pooled branch and a full-size branch, the full-size one called first: HRNet's pattern."""

    def __init__(self):
        super().__init__()
        self.stem, self.pool = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.MaxPool2d(2)
        self.high, self.low = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        stem = self.stem(x)
        low_input = self.pool(stem)
        return self.high(stem).mean() + self.low(low_input).mean()


def test_a_layer_reads_the_latest_map_of_its_size_not_an_invented_pool():
    """A review found the low branch given an inferred pool after the high branch, and a field of 18 for 8."""
    rows = receptive_field(TwoResolutions(), 28)
    assert [(r.input_sizes[0], r.output_sizes[0], r.fields[0]) for r in rows] == [  # stem, pool, high, low
        (28, 28, 3), (28, 14, 4), (28, 28, 5), (14, 14, 8)]
    assert "read as a pool" not in format_receptive_field(rows)


def test_receptive_field_of_non_square_kernels_ceil_pools_adaptive_pools_and_no_convs():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, (1, 5)), torch.nn.MaxPool2d(3, 2, ceil_mode=True),
                                torch.nn.AdaptiveAvgPool2d(1))
    rows = receptive_field(model, 28)
    assert [(r.kernels, r.output_sizes, r.fields) for r in rows] == [
        ((1, 5), (28, 24), (1, 5)), ((3, 3), (14, 12), (3, 7)), ((14, 12), (1, 1), (29, 29))]
    assert "28*24" in format_receptive_field(rows)
    enlarging = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=9), torch.nn.AdaptiveAvgPool2d(7))  # 3 -> 7
    assert [(r.kernels, r.strides) for r in receptive_field(enlarging, 28)][1] == ((2, 2), (1, 1))  # windows of 1-2
    uneven = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(7))  # 12 -> 7: windows of at most 3, as torch's
    assert receptive_field(uneven, 12)[0].kernels == (3, 3)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert receptive_field(mlp) == [] and "no conv or pooling module ran" in format_receptive_field([])


def test_model_summary_reports_totals():
    text = model_summary(create_model("seed-regularized"))
    assert "Total params: 511,386" in text and "BatchNorm2d" in text and "Params size (MB)" in text


def test_confusion_matrix_and_per_class_accuracy():
    targets = torch.tensor([0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0])
    matrix = confusion_matrix(targets, predictions, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert per_class_accuracy(matrix) == [50.0, 100.0, 0.0]
    # a class with no images has no accuracy (it read 0.00%, like a class never predicted right)
    assert per_class_accuracy(confusion_matrix(targets, predictions, num_classes=4)) == [50.0, 100.0, 0.0, None]


def test_summary_states_mult_adds_in_millions():
    model = create_model("lean-8k")
    from torchinfo import summary

    macs = summary(model, input_size=(1, 1, 28, 28), verbose=0, device="cpu", mode="eval").total_mult_adds
    text = model_summary(model)
    assert f"Total mult-adds (millions): {macs / 1e6:.2f}" in text and "Units." not in text


def test_receptive_field_rows_use_the_layer_table_names():
    model = create_model("lean-8k", dropout=0.0)
    table = model_summary(model)
    rows = receptive_field(model)
    assert [row.layer.split(":")[0] for row in rows] == ["Conv2d"] * 3 + ["MaxPool2d"] + ["Conv2d"] * 4 + \
        ["AvgPool2d", "Conv2d"]
    for row in rows:  # each row named as the layer table names that layer ('Conv2d: 2-1': depth 2, index 1)
        assert f"─{row.layer} " in table, row.layer


def test_confusion_rows_are_labelled_once_and_named_only_where_a_name_adds_something():
    from mnist_ops.analysis import format_confusion

    matrix = torch.tensor([[5, 1], [0, 7]])
    digits = format_confusion(matrix, ("0", "1")).splitlines()
    assert [line.split() for line in digits[1:]] == [["0", "5", "1"], ["1", "0", "7"]]
    named = format_confusion(matrix, ("T-shirt/top", "Trouser")).splitlines()
    assert named[1].split() == ["0", "T-shirt/top", "5", "1"]
    assert len({line.index(line.split()[-1]) + len(line.split()[-1]) for line in named}) == 1  # columns align


def test_the_receptive_field_table_leaves_torch_generator_alone():
    """fit builds this table before training: drawing from torch's generator there would change every
    run's results against the runs recorded before (the layer names come from a torchinfo pass)."""
    from mnist_ops.analysis import receptive_field
    from mnist_ops.models import create_model

    model = create_model("lean-8k", dropout=0.0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    receptive_field(model)
    assert torch.equal(torch.rand(3), expected)


def test_the_tables_leave_the_model_on_its_device():
    # torchinfo moves a model to the device it is given; given "cpu", it moved a model training on a GPU back to
    # the CPU in place, and the first train step failed. The meta device stands in for a GPU here: moving a
    # model off it raises, and its parameters must still be there afterwards.
    model = create_model("lean-8k").to("meta")
    assert "Total params: 7,588" in model_summary(model)
    assert [row.layer for row in receptive_field(model)][0].startswith("Conv2d")
    assert {parameter.device.type for parameter in model.parameters()} == {"meta"}


@pytest.mark.parametrize("size, last_input", [(28, 5), (36, 9)])
def test_a_global_average_pool_is_a_row_whose_kernel_is_the_map_it_gets(size, last_input):
    rows = receptive_field(create_model("fast-8k"), size)
    gap = rows[-2]
    assert gap.layer.startswith("GlobalAvgPool")
    assert (gap.kernel, gap.input_size, gap.output_size) == (last_input, last_input, 1)
    assert rows[-1].input_size == 1  # the 1x1 head
