"""Inspection: layer summary (torchinfo), receptive-field table, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnist_ops.errors import UserError
from mnist_ops.models import GlobalAvgPool, first_line


@dataclass(frozen=True)
class ReceptiveFieldRow:
    """One conv or pool call, per axis (rows, columns): a square layer on a square map has equal pairs."""
    layer: str
    kernels: tuple[int, int]
    padding: object  # as the module holds it: 0, 1, (1, 2), "same"
    strides: tuple[int, int]
    input_sizes: tuple[int, int]
    output_sizes: tuple[int, int]
    fields: tuple[int, int]
    jumps: tuple[int, int]  # distance in input pixels between adjacent output pixels

    kernel = property(lambda self: self.kernels[0])  # the rows axis: all there is to a square net's table
    stride = property(lambda self: self.strides[0])
    input_size = property(lambda self: self.input_sizes[0])
    output_size = property(lambda self: self.output_sizes[0])
    receptive_field = property(lambda self: self.fields[0])


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def device_of(model: nn.Module) -> torch.device:
    """Where the model's tensors are. torchinfo moves a model to the device it is given, in place: given
    "cpu", it would leave a model that trains on a GPU on the CPU."""
    return next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device


def _torchinfo(model: nn.Module, **options):
    """torchinfo's summary of `model`; a net it cannot trace (a layer that returns a dataclass...) is a UserError
    naming why, not torchinfo's traceback."""
    from torchinfo import summary

    try:
        return summary(model, verbose=0, device=device_of(model), mode="eval", **options)
    except Exception as error:  # torchinfo wraps what the net raised under its hooks in a RuntimeError
        reason = first_line(error.__cause__ or error)
        reason = reason if len(reason) <= 120 else reason[:117] + "..."  # it may print a whole tensor
        raise UserError(f"torchinfo cannot trace this model's layers ({reason}); layers that take and return "
                        "tensors (or tuples, lists, dicts of them) it can follow") from None


def _forward_layers(model: nn.Module, input_size: int | tuple[int, int]):
    """torchinfo's record of the layers the forward pass runs, in the order it runs them (a module called twice
    is there twice), with the shapes each got and gave, for one image of `input_size` (rows, columns)."""
    with torch.random.fork_rng(devices=[]):  # torchinfo draws its example input from torch's generator:
        # leave that generator as it was, so a run repeats the runs recorded before this table had names
        return _torchinfo(model, input_size=(1, 1, *_pair(input_size))).summary_list


def _name(layer) -> str:
    """torchinfo's name for a layer ('Conv2d: 1-1': type, depth, index at that depth): the layer table and the
    receptive-field table name layers alike."""
    return f"{layer.class_name}: {layer.depth}-{layer.depth_index}"


SLIDING = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
ADAPTIVE = (GlobalAvgPool, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # a window fitted to the map they get


def _pool_factor(before: int, after: int) -> int:
    """The window f of a pool (kernel = stride = f, as F.max_pool2d(x, f)) that takes a side of `before` to
    `after`, in floor mode (11 -> 5 is a pool of 2) or else ceil mode; 0 if no such pool does."""
    for factor in range(2, before + 1):
        if before // factor == after or -(-before // factor) == after:
            return factor
    return 0


def receptive_field(model: nn.Module, input_size: int | tuple[int, int] = 28) -> list[ReceptiveFieldRow]:
    """One row per conv or pool call, in the order the forward pass makes them, with the sizes it saw (so a
    layer defined out of order, used twice, with padding "same" or ceil_mode, reads as it runs). `input_size`:
    the side of a square image, or (rows, columns)."""
    rows = []
    image = _pair(input_size)
    fields, jumps = [1, 1], [1, 1]
    # a map's size -> the fields and jumps of the latest map of that size: what a layer of that input reads
    maps = {image: ([1, 1], [1, 1])}
    for layer in _forward_layers(model, input_size):
        module = layer.module
        if not isinstance(module, SLIDING + ADAPTIVE) or len(layer.input_size) != 4 or len(layer.output_size) != 4:
            continue
        sizes_in, sizes_out = tuple(layer.input_size[2:]), tuple(layer.output_size[2:])
        if sizes_in in maps:  # the map it reads: the last layer's, or an earlier branch's (multi-resolution nets)
            fields, jumps = list(maps[sizes_in][0]), list(maps[sizes_in][1])
        else:  # a step between layers (F.max_pool2d...) shrank the map: the image, or the last layer's output
            before = rows[-1].output_sizes if rows else image
            factors = tuple(_pool_factor(b, i) for b, i in zip(before, sizes_in))
            if all(factors):  # read as the pool of that size most such steps are
                for axis in (0, 1):
                    fields[axis] += (factors[axis] - 1) * jumps[axis]
                rows.append(ReceptiveFieldRow("(a step outside modules; read as a pool)", factors, 0, factors, before,
                                              sizes_in, tuple(fields), tuple(jumps)))
                jumps = [jumps[axis] * factors[axis] for axis in (0, 1)]
            elif not rows:  # the net resized its input some other way (padded, upsampled): count from what it made
                fields, jumps = [1, 1], [1, 1]
        if isinstance(module, ADAPTIVE):  # torch's windows: [floor(i n / m), ceil((i + 1) n / m)) of n for output i of m
            kernels = tuple(max(-(-(i + 1) * size // out) - i * size // out for i in range(out))
                            for size, out in zip(sizes_in, sizes_out))
            strides = tuple(max(1, size // out) for size, out in zip(sizes_in, sizes_out))  # exact when m divides n
            dilations, padding = (1, 1), 0
        else:
            kernels, strides = _pair(module.kernel_size), _pair(module.stride)
            dilations, padding = _pair(getattr(module, "dilation", 1)), module.padding
        for axis in (0, 1):
            fields[axis] += (dilations[axis] * (kernels[axis] - 1)) * jumps[axis]
        rows.append(ReceptiveFieldRow(_name(layer), kernels, padding, strides, sizes_in, sizes_out, tuple(fields),
                                      tuple(jumps)))
        jumps = [jumps[axis] * strides[axis] for axis in (0, 1)]
        maps[sizes_out] = (list(fields), list(jumps))
    return rows


def format_receptive_field(rows: list[ReceptiveFieldRow]) -> str:
    if not rows:
        # an MLP's outputs see the whole input; a conv scripted or called as a function (F.conv2d) is not seen at all
        return "no conv or pooling module ran in the forward pass (one scripted, or called as F.conv2d, is not seen)"

    def pair(values) -> str:
        return f"{values[0]}*{values[1]}"

    def padding(value) -> str:
        if isinstance(value, (tuple, list)):
            value = value[0] if len(set(value)) == 1 else "*".join(map(str, value))
        return "NO" if value in (0, "valid") else str(value)

    header = ["#", "Layer", "Kernel", "Padding", "Stride", "Input", "Output", "Receptive field"]
    body = [[str(i), row.layer, pair(row.kernels), padding(row.padding), str(row.stride) if len(set(row.strides)) == 1
             else pair(row.strides), pair(row.input_sizes), pair(row.output_sizes), pair(row.fields)]
            for i, row in enumerate(rows)]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]

    def render(line: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(width) for cell, width in zip(line, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(header), separator, *map(render, body)])


def model_summary(model: nn.Module, input_size: tuple[int, ...] = (1, 1, 28, 28)) -> str:
    """torchinfo's layer table: type, output shape, parameters, totals and size estimates; the
    mult-adds line in millions (torchinfo prints its unit enum there under Python 3.11)."""
    stats = _torchinfo(model, input_size=input_size, col_names=("output_size", "num_params"), depth=3)
    lines = [f"Total mult-adds (millions): {stats.total_mult_adds / 1e6:.2f}" if line.startswith("Total mult-adds")
             else line for line in str(stats).splitlines()]
    return "\n".join(lines)


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> list[float | None]:
    """Per true class, the share predicted right (%); None for a class with no images, which has no accuracy."""
    totals = matrix.sum(dim=1)
    shares = (matrix.diagonal().double() / totals.clamp(min=1) * 100).tolist()
    return [share if total else None for share, total in zip(shares, totals.tolist())]


def format_confusion(matrix: torch.Tensor, classes: tuple[str, ...]) -> str:
    """Rows: true class, columns: predicted class index. A row is labelled by its index, plus its
    name where the name is not the index itself (Fashion-MNIST's '0 T-shirt/top', MNIST's '0')."""
    labels = [name if name == str(index) else f"{index} {name}" for index, name in enumerate(classes)]
    width = max(len("true \\ predicted") + 1, max(len(label) for label in labels) + 1)
    lines = ["true \\ predicted".ljust(width) + "".join(str(i).rjust(6) for i in range(len(classes)))]
    for label, row in zip(labels, matrix.tolist()):
        lines.append(label.ljust(width) + "".join(str(v).rjust(6) for v in row))
    return "\n".join(lines)
