"""TensorBoard event files beside a run's metrics.jsonl (`--tensorboard`, extra `mnist-ops[tensorboard]`).

Per epoch: train/test loss and accuracy, lr and img/s as scalars, and a figure of misclassified
test digits; once: the model graph. `tensorboard --logdir RUN_OR_STUDY_DIR` shows them; a study's
runs sit in `<study>/<variant>/seed<N>/`, so TensorBoard overlays every variant and seed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from mnist_ops.errors import UserError, install_hint

GALLERY_SIZE = 16  # misclassified digits in each epoch's figure


def scalar_tags(record: dict) -> dict[str, str]:
    """metrics.jsonl field -> TensorBoard tag: `loss/train`, `loss/test` (or `loss/val`), `accuracy/...`,
    `lr`, `images_per_second/train`; losses and accuracies of every split share one chart."""
    tags = {"lr": "lr", "train_images_per_second": "images_per_second/train"}
    for field in record:
        split, _, metric = field.partition("_")
        if metric in ("loss", "accuracy"):
            tags[field] = f"{metric}/{split}"
    return tags


class Board:
    def __init__(self, writer):
        self.writer = writer

    def epoch(self, record: dict, images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
              split: str = "test") -> None:
        """One epoch's scalars (a metrics.jsonl record) and its misclassified digits of the evaluated split
        ("test", or "validation" with a held-out split), uint8 [N, H, W]."""
        from matplotlib.figure import Figure

        step = record["epoch"]
        for field, tag in scalar_tags(record).items():
            self.writer.add_scalar(tag, record[field], step)
        wrong = (predictions != labels).nonzero().flatten()[:GALLERY_SIZE]
        columns = 8
        figure = Figure(figsize=(columns * 1.2, max(1, -(-len(wrong) // columns)) * 1.35 + 0.4))
        grid = figure.subplots(max(1, -(-len(wrong) // columns)), columns, squeeze=False)
        for axes, index in zip(grid.flat, [*wrong.tolist(), *[None] * grid.size]):
            axes.axis("off")
            if index is not None:
                axes.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
                axes.set_title(f"true {int(labels[index])}, pred {int(predictions[index])}", fontsize=8)
        figure.suptitle(f"epoch {step}: {int((predictions != labels).sum())} misclassified {split} images "
                        f"(first {len(wrong)})")
        self.writer.add_figure("misclassified", figure, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open(run_dir: str | os.PathLike, model: nn.Module, example_input: torch.Tensor,
         log=print) -> Board:  # noqa: A001 (the module's verb: tensorboard.open)
    """A Board writing into `run_dir`, with the model's graph traced on `example_input` in eval mode
    (so BatchNorm statistics and the random state stay as they were)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"--tensorboard needs the tensorboard package: {install_hint('tensorboard')}") from None
    writer = SummaryWriter(log_dir=str(Path(run_dir)))
    training = model.training
    try:
        model.eval()
        with warnings.catch_warnings():  # add_graph traces with torch.jit.trace, deprecated in torch 2.13
            warnings.simplefilter("ignore", DeprecationWarning)
            writer.add_graph(model, example_input)
    except Exception as error:  # a model torch.jit.trace cannot follow still gets its scalars and figures
        log(f"tensorboard: no model graph ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
    finally:
        model.train(training)
    return Board(writer)
