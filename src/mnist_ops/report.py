"""Plots and written summaries of runs. Figures are drawn without pyplot's global state."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_ops.idx import atomic_write_bytes


def save_figure(figure, path: str | os.PathLike) -> None:
    """Render to PNG in memory, then write atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(records: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Train vs test loss and accuracy per epoch, as the seed's train_test plot."""
    from matplotlib.figure import Figure

    epochs = [record["epoch"] for record in records]
    figure = Figure(figsize=(11, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    loss_axes.plot(epochs, [r["test_loss"] for r in records], "o-", label="test")
    loss_axes.set(xlabel="epoch", ylabel="loss (per sample)", title="Loss")
    accuracy_axes.plot(epochs, [r["train_accuracy"] for r in records], "o-", label="train")
    accuracy_axes.plot(epochs, [r["test_accuracy"] for r in records], "o-", label="test")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    save_figure(figure, path)
    return Path(path)
