"""Plots and written summaries of runs. Figures are drawn without pyplot's global state."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_ops.fileio import atomic_write_bytes


FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def figure_format(path: str | os.PathLike) -> str:
    """The image format the path's suffix names; a suffix we cannot write is a UserError."""
    from mnist_ops.errors import UserError

    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise UserError(f"cannot write a figure to {path}: use one of the suffixes {', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[suffix]


def save_figure(figure, path: str | os.PathLike) -> None:
    """Render in the format the suffix names (PNG, JPEG, SVG, PDF) in memory, then write atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format=figure_format(path), dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def integer_epoch_axis(axes, epochs: list[int]) -> None:
    """Whole-number epoch ticks (epochs counted from 0, as in metrics.jsonl); a single epoch is
    centred in a one-epoch-wide axis instead of matplotlib's fractional -0.04..0.04."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs and min(epochs) == max(epochs):
        axes.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)


def plot_curves(records: list[dict], path: str | os.PathLike, title: str = "", train_note: str = "",
                evaluated_note: str = "") -> Path:
    """Train vs test (or validation) loss and accuracy per epoch, as the seed's train_test plot.
    Epochs are numbered from 0, as in metrics.jsonl and the console. The notes say in the legend how the two were
    measured, where they differ (`curve_notes`)."""
    from matplotlib.figure import Figure

    name = "val" if "val_loss" in records[0] else "test"
    label = {"val": "validation", "test": "test"}[name] + (f" ({evaluated_note})" if evaluated_note else "")
    train_label = "train" + (f" ({train_note})" if train_note else "")
    epochs = [record["epoch"] for record in records]
    figure = Figure(figsize=(11, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [r["train_loss"] for r in records], "o-", label=train_label)
    loss_axes.plot(epochs, [r[f"{name}_loss"] for r in records], "o-", label=label)
    loss_axes.set(xlabel="epoch", ylabel="loss (per sample)", title="Loss")
    accuracy_axes.plot(epochs, [r["train_accuracy"] for r in records], "o-", label=train_label)
    accuracy_axes.plot(epochs, [r[f"{name}_accuracy"] for r in records], "o-", label=label)
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for axes in (loss_axes, accuracy_axes):
        integer_epoch_axis(axes, epochs)
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    save_figure(figure, path)
    return Path(path)


def curve_notes(config) -> tuple[str, str]:
    """How a run's train and test numbers were measured, where a reader could take them for the same model and loss
    (a class's audit: an EMA run's first epoch plotted 32.5% train against 9.8% test, unexplained): the train
    numbers are running means over the epoch's batches of the trained weights (dropout on, where the net has it), with
    its augmentation, label smoothing and teachers' term; the test ones come after the epoch, of the EMA where there is one."""
    train = ["during the epoch"]
    if config.augment != "none":
        train.append("augmented" + (f" but for the last {config.plain_epochs}" if config.plain_epochs else ""))
    if config.label_smoothing:
        train.append("loss with label smoothing")
    if config.teacher and config.distill_weight:
        train.append("loss with the teachers' term")
    return ", ".join(train), "after the epoch" + (", EMA of the weights" if config.ema else "")


def plot_confusion_matrix(matrix, classes, path: str | os.PathLike, title: str = "") -> Path:
    """counts[true, predicted] as a heat map with every count written in its cell."""
    from matplotlib.figure import Figure

    counts = matrix.tolist()
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.subplots()
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    largest = max(max(row) for row in counts) or 1
    for true, row in enumerate(counts):
        for predicted, count in enumerate(row):
            color = "white" if count > largest / 2 else "black"
            axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=color)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes)
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (test set)")
    save_figure(figure, path)
    return Path(path)


def plot_digit_gallery(images, captions: list[str], path: str | os.PathLike, title: str = "",
                       columns: int = 8) -> Path:
    """uint8 digits [N, H, W] in a grid, each with its caption above it."""
    from matplotlib.figure import Figure

    count = max(len(captions), 1)
    rows = (count + columns - 1) // columns
    figure = Figure(figsize=(columns * 1.2, rows * 1.35 + 0.4))
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        axes.axis("off")
        if index < len(captions):
            axes.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
            axes.set_title(captions[index], fontsize=8)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)
    return Path(path)


AUGMENTATION_TITLES = {
    "seed": "augment 'seed': perspective (p 0.5), then rotation ±15°",
    "light": "augment 'light': rotation ±7°",
    "elastic": "augment 'elastic': rotation ±15° and an elastic distortion (alpha 34, sigma 4)",
    "none": "augment 'none': the preset trains on the digits unchanged",
}


PREVIEW_MAX, PREVIEW_COLUMNS = 100, 10


def plot_augmentation_preview(config, count: int, seed: int, path: str | os.PathLike, data_root=None) -> Path:
    """The same `count` random training digits (at most PREVIEW_MAX) before and after the config's
    augmentation, drawn as the training loop draws it (the rotation's fill as the config says). Rows of up to
    PREVIEW_COLUMNS digits come in pairs: before, then after."""
    import torch
    from matplotlib.figure import Figure

    from mnist_ops.augment import augment_batch
    from mnist_ops.batches import rotation_fill_value
    from mnist_ops.data import load_split, pixel_stats
    from mnist_ops.errors import UserError

    if not 1 <= count <= PREVIEW_MAX:
        raise UserError(f"--count must be in [1, {PREVIEW_MAX}], got {count}")
    figure_format(path)  # an unwritable suffix fails before the data loads
    train = load_split(config.dataset, "train", data_root)
    mean, _ = pixel_stats(train.images)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train), generator=generator)[:count]
    before = train.images[index].unsqueeze(1).float().div(255.0)
    after = augment_batch(config.augment, before.clone(), fill=rotation_fill_value(config.rotation_fill, mean),
                          generator=generator,
                          interpolation=config.interpolation)
    columns = min(count, PREVIEW_COLUMNS)
    pairs = (count + columns - 1) // columns
    figure = Figure(figsize=(max(columns, 2) * 1.1, pairs * 2.3 + 0.3))
    grid = figure.subplots(2 * pairs, columns, squeeze=False)
    for pair in range(pairs):
        for row, (images, label) in enumerate(((before, "before"), (after, "after"))):
            line = grid[2 * pair + row]
            for column, axes in enumerate(line):
                number = pair * columns + column
                if number >= count:
                    axes.axis("off")
                    continue
                axes.imshow(images[number, 0].numpy(), cmap="gray_r", vmin=0.0, vmax=1.0)
                axes.set_xticks([])
                axes.set_yticks([])
            line[0].set_ylabel(label)
    what = AUGMENTATION_TITLES.get(config.augment, f"augment '{config.augment}'")
    what += f", {config.interpolation}" if config.augment != "none" and config.interpolation != "nearest" else ""
    figure.suptitle(f"{config.preset}: {what}", fontsize=9)
    save_figure(figure, path)
    return Path(path)
