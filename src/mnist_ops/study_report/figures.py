"""The study's figures: one line per variant (mean over seeds) with a min-max band over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from mnist_ops.study_report.load import VariantResult


def epoch_matrix(variant: VariantResult, value: Callable[[dict], float]) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers (from 0, as in metrics.jsonl) and a [runs, epochs] array of value(record),
    over the epochs every run has."""
    length = min(len(run.records) for run in variant.runs)
    epochs = np.array([record["epoch"] for record in variant.runs[0].records[:length]])
    values = np.array([[value(record) for record in run.records[:length]] for run in variant.runs])
    return epochs, values


def record_test_accuracy(record: dict) -> float:
    return record["test_accuracy"]


def record_accuracy_gap(record: dict) -> float:
    return record["train_accuracy"] - record["test_accuracy"]


def plot_band(variants: list[VariantResult], value: Callable[[dict], float], path: Path, title: str,
              ylabel: str) -> None:
    from matplotlib.figure import Figure

    from mnist_ops.report import integer_epoch_axis, save_figure

    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    all_epochs = []
    for variant in variants:
        epochs, values = epoch_matrix(variant, value)
        all_epochs += epochs.tolist()
        line, = axes.plot(epochs, values.mean(axis=0), "o-", markersize=3, label=variant.name)
        axes.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    axes.set(xlabel="epoch", ylabel=ylabel, title=title)
    integer_epoch_axis(axes, all_epochs)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save_figure(figure, path)
