"""Training data as tensors: the splits a run trains and evaluates on, and its batches.

Images stay uint8 in memory; a batch is gathered by index, augmented as a whole batch
(`augment.py`) and normalized with the training images' pixel mean and std.

With `validation = N` the run holds out N training images (stratified by class, the same
images whatever the run's seed) and evaluates on them: the test set is not even loaded.
That is what tuning uses, so that no recipe is picked on test accuracy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import torch

from mnist_ops.augment import augment_batch
from mnist_ops.config import Config
from mnist_ops.data import Split, load_split, pixel_stats, train_pixel_stats
from mnist_ops.errors import UserError

HOLDOUT_SEED = 20240601  # fixes which images are held out; independent of the run's seed


def stratified_holdout(labels: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices), both sorted; each class gives its share of `count`
    (largest remainder rounding), drawn with a fixed generator."""
    if not 0 < count < len(labels):
        raise UserError(f"validation = {count} must be between 1 and {len(labels) - 1} (the training images); "
                        "hold out fewer")
    generator = torch.Generator().manual_seed(HOLDOUT_SEED)
    classes, sizes = labels.unique(return_counts=True)
    exact = sizes.double() * count / len(labels)
    shares = exact.floor().long()
    for index in torch.argsort(exact - shares, descending=True, stable=True)[:count - int(shares.sum())]:
        shares[index] += 1
    held = []
    for label, share in zip(classes.tolist(), shares.tolist()):
        members = (labels == label).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:share]])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out


def last_holdout(labels: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): the last `count` images in file order are held out. A file sorted by class
    would hold out whole classes: refused."""
    if not 0 < count < len(labels):
        raise UserError(f"validation = {count} must be between 1 and {len(labels) - 1} (the training images); "
                        "hold out fewer")
    cut = len(labels) - count
    classes = set(labels.unique().tolist())
    for part, name in ((labels[:cut], "trains on"), (labels[cut:], "holds out")):
        missing = sorted(classes - set(part.unique().tolist()))
        if missing:
            raise UserError(f"validation_from = \"last\" {name} no image of class(es) {', '.join(map(str, missing))}: "
                            "the training file is in class order, not in the order it was written; use "
                            "validation_from = \"random\" (stratified)")
    return torch.arange(cut), torch.arange(cut, len(labels))


@dataclass
class FitData:
    train: Split
    evaluation: Split | None  # test or validation images; None when not asked for
    evaluation_name: str  # "test" or "val": the prefix of the metrics keys
    mean: float  # pixel statistics of the training images (before limit_train, as the seed computes them)
    std: float


def load_fit_data(config: Config, data_root=None, with_evaluation: bool = True) -> FitData:
    full = load_split(config.dataset, "train", data_root)
    evaluation, name = None, "test"
    if config.validation:
        holdout = stratified_holdout if config.validation_from == "random" else last_holdout
        train_index, held_out = holdout(full.labels, config.validation)
        train, name = full.subset(train_index), "val"
        if with_evaluation:
            evaluation = full.subset(held_out)
    else:
        train = full
        if with_evaluation:
            evaluation = load_split(config.dataset, "test", data_root)
    # the full train split's statistics are cached by file (data.train_pixel_stats); a holdout's are computed
    mean, std = pixel_stats(train.images) if config.validation else train_pixel_stats(config.dataset, full.images,
                                                                                         data_root)
    if not std > 0:  # normalizing divides by it: every loss would be NaN, which reads like a too-high lr
        raise UserError(f"dataset {config.dataset}: every training pixel has the same value (pixel std 0), so "
                        "there is nothing to learn; check the train images file")
    return FitData(train.head(config.limit_train) if config.limit_train else train, evaluation, name, mean, std)


def load_training_split(config: Config, data_root=None, whole: str = "it works on whole batches"
                        ) -> tuple[Split, float, float]:
    """The images a run trains on and their pixel mean/std (for bench and lr-find), refusing a batch_size larger than
    all of them: `whole` says why the command needs whole batches."""
    data = load_fit_data(config, data_root, with_evaluation=False)
    if config.batch_size > len(data.train):
        raise UserError(f"batch_size {config.batch_size} is more than the {len(data.train):,} training images, and "
                        f"{whole}; lower --batch-size")
    return data.train, data.mean, data.std


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, 1, H, W], standardized with the dataset's mean and std."""
    return images.unsqueeze(1).float().div_(255.0).sub_(mean).div_(std)


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A size x size window of each image [N, C, H, W], at its own uniformly drawn position."""
    n, _, height, width = images.shape
    top = torch.randint(0, height - size + 1, (n,), generator=generator)
    left = torch.randint(0, width - size + 1, (n,), generator=generator)
    offsets = torch.arange(size)
    rows, columns = (top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]
    # [N, H, W, C] indexed by (sample, row, column): [N, size, size, C], back to [N, C, size, size]
    return images.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, columns].permute(0, 3, 1, 2)


def rotation_fill_value(rotation_fill: str, mean: float) -> float:
    """The [0, 1] pixel value that fills what a rotation uncovers: the config's rotation_fill, "mean" or "zero"."""
    return mean if rotation_fill == "mean" else 0.0


def make_batch(train: Split, index: torch.Tensor, augment: str, mean: float, std: float,
               generator: torch.Generator, interpolation: str = "nearest",
               crop: int = 0, rotation_fill: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Gather a batch of uint8 images, augment the whole batch at once, normalize; with `crop`, then take a
    random crop x crop window of each image."""
    x = train.images[index].unsqueeze(1).float().div_(255.0)
    x = augment_batch(augment, x, fill=rotation_fill_value(rotation_fill, mean), generator=generator,
                      interpolation=interpolation, normalize=(mean, std))
    if crop:
        x = random_crop(x, crop, generator)
    return x, train.labels[index]


def iterate_batches(train: Split, config: Config, mean: float, std: float, generator: torch.Generator,
                    drop_last: bool = False):
    """One shuffled epoch of (inputs, labels) batches, built by `make_batch`."""
    order = torch.randperm(len(train), generator=generator)
    end = len(order) - len(order) % config.batch_size if drop_last else len(order)
    for start in range(0, end, config.batch_size):
        yield make_batch(train, order[start:start + config.batch_size], config.augment, mean, std, generator,
                         config.interpolation, config.train_crop, config.rotation_fill)


def fit_batches(train: Split, config: Config, mean: float, std: float, generator: torch.Generator,
                drop_last: bool = False) -> Iterator:
    """The batches fit() trains on: `iterate_batches`, built one ahead in a background thread with replicas."""
    return prefetched(iterate_batches(train, config, mean, std, generator, drop_last), enabled=config.replicas > 1)


def prefetched(batches: Iterator, enabled: bool = True) -> Iterator:
    """Yield `batches`, building the next one in a background thread (one intra-op thread) while the
    caller trains on the current one. The batches and the random draws behind them are the same,
    in the same order: one thread at a time advances the iterator. A caller that stops early leaves
    one batch more drawn than the plain loop would (fit always runs its epochs to the end).

    Used with replicas, where the main thread only waits while the copies compute: it overlaps
    the augmentation with the train step instead of running it between steps.
    """
    if not enabled:
        yield from batches
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch",
                            initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch
