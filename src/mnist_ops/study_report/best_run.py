"""The best variant's best run, evaluated on the test set: confusion matrix and misclassified digits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mnist_ops.study import DONE_FILE, PREDICTIONS_FILE
from mnist_ops.study_report.load import Run

GALLERY_SIZE = 40


@dataclass(frozen=True)
class BestRunAnalysis:
    variant: str
    seed: int
    accuracy: float
    per_class: list[float]
    test_images: int


def checkpoint_predictions(run_directory: Path, data_root=None):
    """(test split, the class the run's last.pt predicts for each image, dataset name), evaluated as the
    run evaluated its epochs (engine.evaluate_checkpoint), so they agree with its last test accuracy."""
    from mnist_ops.data import load_split
    from mnist_ops.engine import evaluate_checkpoint, load_checkpoint, resolve_device

    checkpoint = load_checkpoint(run_directory / "last.pt")
    dataset = checkpoint["config"].get("dataset", "mnist")
    test = load_split(dataset, "test", data_root)
    result = evaluate_checkpoint(checkpoint, test.images, test.labels, resolve_device("cpu"))
    return test, result.predictions, dataset


def has_test_predictions(run: Run) -> bool:
    """A run of a study on a storage recorded its predictions (PREDICTIONS_FILE): no checkpoint needed."""
    return (run.directory / PREDICTIONS_FILE).is_file()


def _test_predictions(run: Run, data_root):
    if not has_test_predictions(run):
        return checkpoint_predictions(run.directory, data_root)
    import torch

    from mnist_ops.data import load_split

    dataset = json.loads((run.directory / DONE_FILE).read_text())["config"].get("dataset", "mnist")
    predictions = torch.tensor(json.loads((run.directory / PREDICTIONS_FILE).read_text()))
    return load_split(dataset, "test", data_root), predictions, dataset


def analyse_best_run(run: Run, variant: str, study_dir: Path, data_root=None) -> BestRunAnalysis:
    """The run's last.pt on the test set (or the predictions recorded for it); draw confusion.png and
    misclassified.png into study_dir."""
    from mnist_ops.analysis import confusion_matrix, per_class_accuracy
    from mnist_ops.data import dataset_info
    from mnist_ops.report import plot_confusion_matrix, plot_digit_gallery

    test, predictions, dataset = _test_predictions(run, data_root)
    accuracy = (predictions == test.labels).double().mean().item() * 100
    classes = dataset_info(dataset).classes
    matrix = confusion_matrix(test.labels, predictions, len(classes))
    title = f"{variant}, seed {run.seed}: test accuracy {accuracy:.2f}%"
    plot_confusion_matrix(matrix, classes, study_dir / "confusion.png", title=title)
    wrong = (predictions != test.labels).nonzero().flatten()[:GALLERY_SIZE]
    captions = [f"true {int(test.labels[i])}, pred {int(predictions[i])}" for i in wrong]
    plot_digit_gallery(test.images[wrong], captions, study_dir / "misclassified.png",
                       title=f"First {len(wrong)} misclassified test digits ({variant}, seed {run.seed})")
    return BestRunAnalysis(variant, run.seed, accuracy, per_class_accuracy(matrix), len(test))
