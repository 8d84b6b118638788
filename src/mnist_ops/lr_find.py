"""LR range test: torch-lr-finder's exponential ramp over our own training batches.

The batches are built as `fit()` builds them (gathered, augmented as a whole batch,
normalized with the full train split's mean and std). The model and optimizer are restored
to their initial state afterwards; the command writes a loss-vs-lr figure and a suggestion.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mnist_ops.config import RANGES, Config
from mnist_ops.data import Split, dataset_info
from mnist_ops.errors import UserError
from mnist_ops.fileio import atomic_write_json
from mnist_ops.models import first_line, raised_in_own_net

SKIP_START, SKIP_END = 10, 5  # torch-lr-finder's defaults for plotting and suggesting
FEW_ITERATIONS = 50  # a suggestion from fewer points than this comes with a warning
BLOW_UP = 1.25  # a smoothed loss this many times its lowest so far has blown up: the curve after it is not used
RESULT_FILES = ("lr_find.png", "lr_find.json")


class TrainBatches:
    """Iterable of (inputs, labels): one shuffled, augmented, normalized epoch per iteration."""

    def __init__(self, train: Split, config: Config, mean: float, std: float, generator: torch.Generator):
        self.train, self.config, self.mean, self.std, self.generator = train, config, mean, std, generator

    def __len__(self) -> int:
        return math.ceil(len(self.train) / self.config.batch_size)

    def __iter__(self):
        from mnist_ops.batches import iterate_batches

        return iterate_batches(self.train, self.config, self.mean, self.std, self.generator)


@dataclass(frozen=True)
class RangeTest:
    learning_rates: list[float]
    losses: list[float]  # exponentially smoothed, as torch-lr-finder records them
    suggested_lr: float | None  # None: the smoothed loss never fell
    diverged: bool


def kept_points(learning_rates: list[float], losses: list[float]) -> tuple[list[float], list[float]]:
    """The points the suggestion and the plot use: without the first and last few, where the curve is noisiest
    (the last ones, where it diverges, would flatten the rest of the plot)."""
    skip_start, skip_end = SKIP_START, SKIP_END
    if len(losses) < skip_start + skip_end + 2:
        skip_start, skip_end = 0, 0
    return learning_rates[skip_start:len(learning_rates) - skip_end], losses[skip_start:len(losses) - skip_end]


def suggest_lr(learning_rates: list[float], losses: list[float]) -> float | None:
    """The lr at the steepest descent of the smoothed loss (torch-lr-finder's 'steepest' rule) over
    `kept_points`, up to the loss's lowest point before it first blew up (rose to BLOW_UP times its lowest so far):
    a loss that jumps up and falls again has blown up, and its steep fall after the jump is no lr to train at (an
    audit's 2.85 trained to 40% where 0.1 reached 54%), even when that fall goes below the first low. None when the
    loss never falls there (the steepest point would be where it rose least)."""
    if len(losses) < 2:
        raise UserError("the range test stopped after fewer than 2 iterations; lower --start-lr")
    lrs, kept = kept_points(learning_rates, losses)
    values = np.asarray(kept, dtype=float)
    blown = np.flatnonzero(~(values <= BLOW_UP * np.fmin.accumulate(values)))  # NaN too: torch-lr-finder goes on
    kept = kept[:blown[0]] if blown.size else kept
    if not kept:
        return None
    lowest = int(np.argmin(kept))
    if lowest == 0:
        return None
    slopes = np.gradient(np.array(kept[:lowest + 1]))
    return float(lrs[int(slopes.argmin())]) if slopes.min() < 0 else None


def check_range(start_lr: float, end_lr: float, iterations: int) -> None:
    low, high = RANGES["lr"]  # the range a config's lr may take: a suggestion outside it could not be used
    if not low <= start_lr < end_lr <= high:
        raise UserError(f"need {low:g} <= --start-lr < --end-lr <= {high:g}, got {start_lr:g} and {end_lr:g}")
    if iterations < 2:
        raise UserError(f"--iterations must be >= 2, got {iterations}")


def few_iterations_warning(points: int, iterations: int) -> str | None:
    if points >= FEW_ITERATIONS:
        return None
    why = "the loss diverged early" if points < iterations else f"--iterations {iterations}"
    return (f"the suggestion comes from only {points} iterations ({why}): the smoothed loss is too short to "
            f"trust its steepest point; run with --iterations 100 or more" +
            (", or a lower --end-lr" if points < iterations else ""))


def range_test(config: Config, start_lr: float, end_lr: float, iterations: int, data_root=None,
               log: Callable[[str], None] = print, progress: bool = True) -> RangeTest:
    """Ramp the lr exponentially from start_lr to end_lr over `iterations` batches."""
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    from mnist_ops.batches import load_training_split
    from mnist_ops.engine import build_model, make_optimizer, resolve_device, seed_everything

    check_range(start_lr, end_lr, iterations)
    if config.distill_weight > 0:
        log("note: the range test ramps the lr on the labels' loss alone; the teacher is not used")
    unused = [f"{key} {value}" for key, value, plain in (
        ("precision", config.precision, "fp32"), ("channels_last", config.channels_last, False),
        ("replicas", config.replicas, 1), ("ema", config.ema, 0.0)) if value != plain]
    if unused:  # torch-lr-finder runs its own fp32 loop on one model
        log(f"note: the range test trains one fp32 copy of the model, without the recipe's {', '.join(unused)}; "
            "its lr suggestion is for that plain step")
    # a larger batch would hold them all, under a plot titled with the batch size asked for
    train, mean, std = load_training_split(config, data_root, whole="the range test steps on whole batches")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = build_model(config, len(dataset_info(config.dataset).classes), tuple(train.images.shape[1:])).to(device)
    optimizer = make_optimizer(config, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    batches = TrainBatches(train, config, mean, std, torch.Generator().manual_seed(config.seed))
    finder = LRFinder(model, optimizer, criterion, device=device)
    library_output = io.StringIO()  # it prints notebook hints ("see the graph with .plot()")
    try:
        with contextlib.redirect_stdout(library_output), _library_progress(progress):
            finder.range_test(TrainDataLoaderIter(batches), start_lr=start_lr, end_lr=end_lr, num_iter=iterations,
                              step_mode="exp")
    except Exception as error:
        if isinstance(error, UserError) or not raised_in_own_net(error, model):
            raise  # a failure of a built-in net, or outside the net: a bug here, whose traceback is wanted
        raise UserError(f"model {config.model} raised {first_line(error)} while training in the range test; fix its "
                        "forward() (it must run in train mode on any batch size)") from None
    finder.reset()  # model and optimizer back to their initial state
    diverged = "diverged" in library_output.getvalue()
    learning_rates, losses = finder.history["lr"], finder.history["loss"]
    log(f"lr range test: {len(losses)} of {iterations} iterations, lr {start_lr:g} -> {learning_rates[-1]:.3g}"
        + (" (stopped early: the loss diverged)" if diverged else ""))
    warning = few_iterations_warning(len(losses), iterations)
    if warning:
        log(f"warning: {warning}")
    return RangeTest(learning_rates, losses, suggest_lr(learning_rates, losses), diverged)


@contextlib.contextmanager
def _library_progress(enabled: bool):
    """torch-lr-finder draws its own tqdm bar; --no-progress turns it off."""
    import functools

    from torch_lr_finder import lr_finder as library

    original = library.tqdm
    if not enabled:
        library.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        library.tqdm = original


def check_out_dir(out: Path, force: bool) -> None:
    """An earlier range test's results are not overwritten unless asked (`--force`)."""
    existing = [name for name in RESULT_FILES if (out / name).exists()]
    if existing and not force:
        raise UserError(f"{out} already holds {', '.join(existing)} from an earlier range test; pass another --out, "
                        "or --force to overwrite")


def plot_range_test(result: RangeTest, path: str | os.PathLike, title: str, preset_lr: float | None = None) -> None:
    from matplotlib.figure import Figure

    from mnist_ops.report import save_figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    lrs, losses = kept_points(result.learning_rates, result.losses)
    axes.plot(lrs, losses, label="smoothed training loss")
    if result.suggested_lr is not None:
        suggested = result.learning_rates.index(result.suggested_lr)
        axes.scatter([result.suggested_lr], [result.losses[suggested]], s=60, color="red", zorder=3,
                     label=f"steepest descent: lr {result.suggested_lr:.3g}")
    if max(losses) > 2 * losses[0]:  # a diverging loss would flatten the rest to a line: it leaves at the top
        axes.set_ylim(min(losses) * 0.95, 2 * losses[0])
    if preset_lr is not None:
        axes.axvline(preset_lr, color="gray", linestyle="--", label=f"preset lr {preset_lr:g}")
    axes.set_xscale("log")
    axes.set(xlabel="learning rate", ylabel="loss", title=title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    save_figure(figure, path)


def lr_find(config: Config, start_lr: float, end_lr: float, iterations: int, out_dir: str | os.PathLike,
            data_root=None, log: Callable[[str], None] = print, progress: bool = True, force: bool = False) -> RangeTest:
    """Run the range test; write lr_find.png and lr_find.json into out_dir (refusing earlier ones unless force)."""
    from mnist_ops.provenance import run_provenance

    check_range(start_lr, end_lr, iterations)
    out = Path(out_dir)
    check_out_dir(out, force)
    result = range_test(config, start_lr, end_lr, iterations, data_root, log, progress)
    title = f"LR range test: {config.preset} ({config.model}, {config.optimizer}, batch {config.batch_size})"
    plot_range_test(result, out / "lr_find.png", title, preset_lr=config.lr)
    record = {"preset": config.preset, "start_lr": start_lr, "end_lr": end_lr, "iterations": iterations,
              "suggested_lr": result.suggested_lr, "diverged": result.diverged,
              "warning": few_iterations_warning(len(result.losses), iterations), "provenance": run_provenance(),
              "learning_rates": result.learning_rates, "losses": result.losses}
    atomic_write_json(out / "lr_find.json", record)
    if result.suggested_lr is None:
        log(f"no suggested lr: the smoothed loss never fell between lr {start_lr:g} and {end_lr:g} (the preset uses "
            f"{config.lr:g}); run with a lower --start-lr; wrote {out / 'lr_find.png'}")
    else:
        log(f"suggested lr {result.suggested_lr:.3g} (steepest descent of the smoothed loss; the preset uses "
            f"{config.lr:g}); wrote {out / 'lr_find.png'}")
    return result
