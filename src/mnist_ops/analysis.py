"""Inspection: layer summary (torchinfo), receptive-field table, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mnist_ops.models import GlobalAvgPool


@dataclass(frozen=True)
class ReceptiveFieldRow:
    layer: str
    kernel: int
    padding: int
    stride: int
    input_size: int
    output_size: int
    receptive_field: int
    jump: int  # distance in input pixels between adjacent output pixels


def _pair_first(value) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's tensors are. torchinfo moves a model to the device it is given, in place: given
    "cpu", it would leave a model that trains on a GPU on the CPU."""
    return next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device


def layer_names(model: nn.Module, input_size: int = 28) -> dict[int, str]:
    """torchinfo's name for each layer the forward pass runs ('Conv2d: 1-1': type, depth, index at that
    depth), keyed by id(module): the layer table and the receptive-field table name layers alike."""
    from torchinfo import summary

    with torch.random.fork_rng(devices=[]):  # torchinfo draws its example input from torch's generator:
        # leave that generator as it was, so a run repeats the runs recorded before this table had names
        stats = summary(model, input_size=(1, 1, input_size, input_size), verbose=0, device=device_of(model),
                        mode="eval")
    return {id(layer.module): f"{layer.class_name}: {layer.depth}-{layer.depth_index}" for layer in stats.summary_list}


def receptive_field(model: nn.Module, input_size: int = 28) -> list[ReceptiveFieldRow]:
    """One row per conv/pool layer, computed from the layers themselves, in forward order."""
    names = layer_names(model, input_size)
    rows = []
    size, field, jump = input_size, 1, 1
    for name, module in model.named_modules():
        if isinstance(module, GlobalAvgPool):  # a kernel as large as the map it gets
            kernel, stride, padding, dilation = size, size, 0, 1
        elif isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel = _pair_first(module.kernel_size)
            stride = _pair_first(module.stride)
            padding = _pair_first(module.padding)
            dilation = _pair_first(getattr(module, "dilation", 1))
        else:
            continue
        effective = dilation * (kernel - 1) + 1
        output = (size + 2 * padding - effective) // stride + 1
        field += (effective - 1) * jump
        rows.append(ReceptiveFieldRow(names.get(id(module), f"{type(module).__name__} ({name})"), kernel, padding,
                                      stride, size, output, field, jump))
        size, jump = output, jump * stride
    return rows


def format_receptive_field(rows: list[ReceptiveFieldRow]) -> str:
    header = ["#", "Layer", "Kernel", "Padding", "Stride", "Input", "Output", "Receptive field"]
    body = [[str(i), row.layer, f"{row.kernel}*{row.kernel}", str(row.padding) if row.padding else "NO",
             str(row.stride), f"{row.input_size}*{row.input_size}", f"{row.output_size}*{row.output_size}",
             f"{row.receptive_field}*{row.receptive_field}"] for i, row in enumerate(rows)]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]

    def render(line: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(width) for cell, width in zip(line, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(header), separator, *map(render, body)])


def model_summary(model: nn.Module, input_size: tuple[int, ...] = (1, 1, 28, 28)) -> str:
    """torchinfo's layer table: type, output shape, parameters, totals and size estimates; the
    mult-adds line in millions (torchinfo prints its unit enum there under Python 3.11)."""
    from torchinfo import summary

    stats = summary(model, input_size=input_size, col_names=("output_size", "num_params"),
                    depth=3, verbose=0, device=device_of(model), mode="eval")
    lines = [f"Total mult-adds (millions): {stats.total_mult_adds / 1e6:.2f}" if line.startswith("Total mult-adds")
             else line for line in str(stats).splitlines()]
    return "\n".join(lines)


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> list[float]:
    totals = matrix.sum(dim=1).clamp(min=1)
    return (matrix.diagonal().double() / totals * 100).tolist()


def format_confusion(matrix: torch.Tensor, classes: tuple[str, ...]) -> str:
    """Rows: true class, columns: predicted class index. A row is labelled by its index, plus its
    name where the name is not the index itself (Fashion-MNIST's '0 T-shirt/top', MNIST's '0')."""
    labels = [name if name == str(index) else f"{index} {name}" for index, name in enumerate(classes)]
    width = max(len("true \\ predicted") + 1, max(len(label) for label in labels) + 1)
    lines = ["true \\ predicted".ljust(width) + "".join(str(i).rjust(6) for i in range(len(classes)))]
    for label, row in zip(labels, matrix.tolist()):
        lines.append(label.ljust(width) + "".join(str(v).rjust(6) for v in row))
    return "\n".join(lines)
