"""The study report: tables, figures, interval comparisons and observations, from finished runs.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice, as `report.md` and `index.html`, so both always show the same numbers.

  load.py      the finished runs of a study directory
  stats.py     Welch's and the paired t interval between two variants
  tables.py    tables and generated sentences, every number formatted once
  figures.py   test accuracy and generalization gap per epoch, bands over seeds
  best_run.py  the best run on the test set: confusion matrix, misclassified digits
  render.py    blocks -> markdown and HTML
  records.py   the records tables: every seed, each of the last K epochs
"""

from __future__ import annotations

import os
from pathlib import Path

from mnist_ops.errors import UserError
from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.study_report.best_run import analyse_best_run, has_test_predictions
from mnist_ops.study_report.figures import record_accuracy_gap, plot_band, record_test_accuracy
from mnist_ops.study_report.load import load_study
from mnist_ops.study_report.render import Block, Image, Table, render_html, render_markdown
from mnist_ops.study_report.tables import (accuracy_table, comparison_table, context_lines, diverged_note,
                                           generalization_table, interval_note, mean_last_test, observations,
                                           per_epoch_table, percent)


def build_report(study_dir: str | os.PathLike, data_root=None) -> list[Block]:
    """Draw the figures into the study directory; return the report's blocks."""
    study_dir = Path(study_dir)
    spec, loaded, info = load_study(study_dir)
    variants = [variant for variant in loaded if variant.runs]  # figures, comparisons: runs trained to the end
    if not variants:
        raise UserError(f"every finished run of {study_dir} diverged (the loss became NaN or infinite): lower "
                        "the lr in the spec and train the study again in another directory")
    best = max(variants, key=mean_last_test)
    best_run = max(best.runs, key=lambda run: run.last["test_accuracy"])
    if not (best_run.directory / "last.pt").is_file() and not has_test_predictions(best_run):  # before any figure
        raise UserError(f"{best_run.directory / 'last.pt'} is missing: the report evaluates the best run's "
                        "checkpoint (copies of studies, such as those in docs/, leave checkpoints out); rebuild "
                        "the report where the study ran")
    plot_band(variants, record_test_accuracy, study_dir / "test_accuracy.png",
              "Test accuracy (mean, min–max band over seeds)", "test accuracy (%)")
    plot_band(variants, record_accuracy_gap, study_dir / "gap.png", "Generalization gap (mean, min–max band over seeds)",
              "train − test accuracy (pp)")
    analysis = analyse_best_run(best_run, best.name, study_dir, data_root)
    classes = [str(index) for index in range(len(analysis.per_class))]
    return [
        ("heading", f"Study: {spec.name}"),
        ("list", context_lines(spec, loaded, info, analysis.test_images)),
        ("heading", "Accuracy"),
        ("table", accuracy_table(loaded, spec)),
        *([("paragraph", diverged_note(loaded))] if any(variant.diverged for variant in loaded) else []),
        ("paragraph", "Train accuracy is the running accuracy during each epoch, with dropout and augmentation "
                      "active (not in a variant's plain last epochs, if it has them), so it can sit below test "
                      "accuracy."),
        ("heading", "Generalization and speed"),
        ("table", generalization_table(loaded, spec)),
        ("paragraph", "Epochs are numbered from 0, as in each run's metrics.jsonl and console log."),
        ("image", Image("test_accuracy.png", "Test accuracy per epoch")),
        ("image", Image("gap.png", "Train − test accuracy per epoch")),
        *([("heading", "Each step against the one before"),
           ("table", comparison_table(variants)),
           ("paragraph", interval_note(variants, len(spec.seeds)))] if len(variants) > 1 else []),
        ("heading", "Test accuracy per epoch, every run"),
        ("table", per_epoch_table(variants)),
        ("heading", "Observations"),
        ("paragraph", observations(variants)),
        ("heading", f"Best variant: {best.name} (seed {analysis.seed}, last.pt)"),
        ("paragraph", f"Test accuracy {percent(analysis.accuracy)}%; per-class accuracy:"),
        ("table", Table(["Class", *classes], [["Accuracy %", *map(percent, analysis.per_class)]])),
        ("image", Image("confusion.png", "Confusion matrix")),
        ("image", Image("misclassified.png", "Misclassified test digits, true and predicted label")),
    ]


def write_report(study_dir: str | os.PathLike, data_root=None) -> Path:
    """Write report.md, index.html and the figures into the study directory; returns report.md."""
    study_dir = Path(study_dir)
    blocks = build_report(study_dir, data_root)
    atomic_write_bytes(study_dir / "report.md", render_markdown(blocks).encode())
    atomic_write_bytes(study_dir / "index.html", render_html(blocks).encode())
    return study_dir / "report.md"
