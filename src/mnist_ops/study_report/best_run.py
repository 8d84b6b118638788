"""The best variant's best run, evaluated on the test set: confusion matrix and misclassified digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_ops.study_report.load import Run

GALLERY_SIZE = 40


@dataclass(frozen=True)
class BestRunAnalysis:
    variant: str
    seed: int
    accuracy: float
    per_class: list[float]
    test_images: int


def analyse_best_run(run: Run, variant: str, study_dir: Path, data_root=None) -> BestRunAnalysis:
    """Evaluate the run's last.pt on the test set; draw confusion.png and misclassified.png into study_dir."""
    from mnist_ops.analysis import confusion_matrix, per_class_accuracy
    from mnist_ops.data import dataset_info, load_split
    from mnist_ops.report import plot_confusion_matrix, plot_digit_gallery
    from mnist_ops.batches import normalize
    from mnist_ops.engine import evaluate, load_checkpoint, model_from_checkpoint, resolve_device

    checkpoint = load_checkpoint(run.directory / "last.pt")
    dataset = checkpoint["config"].get("dataset", "mnist")
    test = load_split(dataset, "test", data_root)
    device = resolve_device("cpu")
    model = model_from_checkpoint(checkpoint).to(device)
    result = evaluate(model, normalize(test.images, checkpoint["mean"], checkpoint["std"]), test.labels, device)
    classes = dataset_info(dataset).classes
    matrix = confusion_matrix(test.labels, result.predictions, len(classes))
    title = f"{variant}, seed {run.seed}: test accuracy {result.accuracy:.2f}%"
    plot_confusion_matrix(matrix, classes, study_dir / "confusion.png", title=title)
    wrong = (result.predictions != test.labels).nonzero().flatten()[:GALLERY_SIZE]
    captions = [f"true {int(test.labels[i])}, pred {int(result.predictions[i])}" for i in wrong]
    plot_digit_gallery(test.images[wrong], captions, study_dir / "misclassified.png",
                       title=f"First {len(wrong)} misclassified test digits ({variant}, seed {run.seed})")
    return BestRunAnalysis(variant, run.seed, result.accuracy, per_class_accuracy(matrix), len(test))
