"""`mnist-ops bench`: the per-sample pipeline users would otherwise write vs ours, in one process.

(a) per-sample: a torch `Dataset` that turns one uint8 image at a time into a PIL image and
    augments it the way torchvision's RandomPerspective / RandomRotation do on PIL images
    (`Image.transform(PERSPECTIVE)`, `Image.rotate`), then ToTensor + Normalize, through a
    `DataLoader`; the model runs eager fp32.
(b) ours: uint8 tensors in memory, the whole batch augmented at once (`augment.py`), the
    preset's precision, memory format, model copies (`replicas.py`) and dropout layer.
Same model, augmentation and batch size on both sides; img/s is the median over repeats.
Below MIN_BATCHES batches or MIN_REPEATS repeats the numbers are mostly start-up and noise:
the command says so beside them.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mnist_ops.augment import elastic_augment, perspective_matrices, random_perspective_points
from mnist_ops.config import Config
from mnist_ops.data import Split
from mnist_ops.batches import fit_batches, iterate_batches, load_training_split, make_batch, rotation_fill_value
from mnist_ops.distill import load_teacher
from mnist_ops.engine import TrainStep, build_model, make_ema, make_optimizer, memory_format
from mnist_ops.errors import UserError
from mnist_ops.models import build_record
from mnist_ops.provenance import run_provenance
from mnist_ops.replicas import one_thread_per_replica

MIN_BATCHES, MIN_REPEATS = 20, 3  # the defaults are 60 and 3


class PerSampleDataset(Dataset):
    """One image at a time, through PIL, as a torchvision-style transform pipeline would."""

    def __init__(self, split: Split, mean: float, std: float, augment: str, interpolation: str = "nearest",
                 rotation_fill: str = "mean"):
        self.images, self.labels = split.images.numpy(), split.labels
        self.mean, self.std, self.augment, self.interpolation = mean, std, augment, interpolation
        self.fill_value = rotation_fill_value(rotation_fill, mean)
        self.fill = int(round(self.fill_value * 255))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        if self.augment == "elastic":  # no PIL transform bends strokes: the batched code on a batch of one
            tensor = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)[None, None]
            tensor = elastic_augment(tensor, fill=self.fill_value, mode=self.interpolation)[0]
            return (tensor - self.mean) / self.std, self.labels[index]
        image = Image.fromarray(self.images[index], mode="L")
        resample = Image.BILINEAR if self.interpolation == "bilinear" else Image.NEAREST
        if self.augment == "seed" and torch.rand(1).item() < 0.5:  # RandomPerspective(0.2, p=0.5)
            start, end = random_perspective_points(1, 28, 28, 0.2)
            coefficients = perspective_matrices(start, end).flatten()[:8].tolist()
            image = image.transform(image.size, Image.PERSPECTIVE, coefficients, resample, fillcolor=0)
        if self.augment in ("seed", "light"):  # RandomRotation(±15° or ±7°, fill = rotation_fill)
            degrees = 15.0 if self.augment == "seed" else 7.0
            angle = float(torch.empty(1).uniform_(-degrees, degrees))
            image = image.rotate(angle, resample, fillcolor=self.fill)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)  # ToTensor
        return (tensor - self.mean) / self.std, self.labels[index]  # Normalize


def per_sample_loader(split: Split, mean: float, std: float, augment: str, batch_size: int,
                      workers: int, interpolation: str = "nearest", rotation_fill: str = "mean") -> DataLoader:
    return DataLoader(PerSampleDataset(split, mean, std, augment, interpolation, rotation_fill), batch_size=batch_size, shuffle=True,
                      num_workers=workers, persistent_workers=False, drop_last=True)


def our_batches(split: Split, config: Config, mean: float, std: float, generator: torch.Generator) -> Iterator:
    return iterate_batches(split, config, mean, std, generator, drop_last=True)  # as the DataLoader side


def make_step(model: torch.nn.Module, config: Config, compile_model: bool = False, teacher=None) -> Callable:
    """The engine's train step for `model` under `config`'s recipe (lr, schedule aside: the lr stays at
    config.lr), with its EMA of the weights if the recipe has one; with `replicas` > 1, run it under
    one_thread_per_replica. `compile_model` runs the single-copy forward through torch.compile."""
    model = model.to(memory_format=memory_format(config)).train()
    forward = torch.compile(model) if compile_model else model
    return TrainStep(forward, make_optimizer(config, model), config,  # its replica threads end with the process
                     ema=make_ema(config, model), teacher=teacher)


def images_per_second(run: Callable[[], int], repeats: int) -> list[float]:
    """Run `run` (which returns how many images it processed) `repeats` times, after one warm-up."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return rates


def _take(iterator, count: int, consume: Callable = lambda x, y: None) -> int:
    images = 0
    for x, y in iterator:
        consume(x, y)
        images += len(y)
        count -= 1
        if count == 0:
            break
    return images


def run_bench(config: Config, batches: int = 60, repeats: int = 3, workers: int = 2,
              data_root=None, log: Callable[[str], None] = print) -> dict:
    """Measure (a) and (b): data only, train step only, end to end. Returns the numbers."""
    if config.train_crop:  # the per-sample side and the train-step row would see whole images, ours crops
        raise UserError(f"bench compares whole-image pipelines, and train_crop = {config.train_crop}; set train_crop = 0")
    torch.manual_seed(config.seed)
    train, mean, std = load_training_split(config, data_root, whole="bench measures whole batches")
    generator = torch.Generator().manual_seed(config.seed)
    loader = per_sample_loader(train, mean, std, config.augment, config.batch_size, workers, config.interpolation,
                               config.rotation_fill)
    x, y = make_batch(train, torch.arange(config.batch_size), "none", mean, std, generator)

    plain = config.replace(precision="fp32", channels_last=False, replicas=1, fast_dropout=False)
    torch.manual_seed(config.seed)
    cpu = torch.device("cpu")
    step_a = make_step(build_model(plain), plain, teacher=load_teacher(plain, mean, std, cpu))
    torch.manual_seed(config.seed)
    step_b_model = build_model(config)
    step_b = make_step(step_b_model, config, teacher=load_teacher(config, mean, std, cpu, memory_format(config)))

    def as_in_fit(run: Callable[[], int]) -> Callable[[], int]:
        """(b) runs as fit() does: with replicas, one thread per copy and for making batches (end to end,
        the next batch is made in a background thread while the copies train)."""
        def measured() -> int:
            with one_thread_per_replica(config.replicas):
                return run()
        return measured

    measures = {
        "data": (lambda: _take(iter(loader), batches),
                 as_in_fit(lambda: _take(our_batches(train, config, mean, std, generator), batches))),
        "train step": (lambda: train_steps(step_a, x, y, batches),
                       as_in_fit(lambda: train_steps(step_b, x, y, batches))),
        "end to end": (lambda: _take(iter(loader), batches, step_a),
                       as_in_fit(lambda: _take(fit_batches(train, config, mean, std, generator, drop_last=True),
                                               batches, step_b))),
    }
    ours = (f"{config.precision}, channels_last={config.channels_last}, replicas={config.replicas}, "
            f"fast_dropout={config.fast_dropout}" + (", 1 thread per copy" if config.replicas > 1 else ""))
    # the whole recipe, not just the keys bench prints: --optimizer and --ema change what (b) measures
    results = {"preset": config.preset, "model": config.model, "batch_size": config.batch_size,
               "augment": config.augment, "interpolation": config.interpolation, "ours": ours,
               "config": config.to_dict(), "model_source": build_record(step_b_model),
               "per_sample": f"DataLoader num_workers={workers}, fp32 eager", "batches": batches,
               "repeats": repeats, "provenance": run_provenance(), "measures": {}}
    provenance = results["provenance"]
    log(f"bench {config.preset}: model {config.model}, batch {config.batch_size}, augment {config.augment} "
        f"({config.interpolation}), "
        f"{batches} batches x {repeats} repeat(s), {provenance['threads']} thread(s), torch {provenance['torch']}, "
        f"code {provenance['code_version']}")
    too_few = too_few_warning(batches, repeats)
    if too_few:
        results["warning"] = too_few
        log(f"warning: {too_few}")
    log(f"(a) per-sample: {results['per_sample']}   (b) ours: {results['ours']}")
    log(f"each cell: median img/s over the {repeats} repeat(s), then (mean±std) over them; "
        "(b)/(a) is the ratio of the medians")
    log(f"{'measure':<12} {'(a) img/s':>20} {'(b) img/s':>20} {'(b)/(a)':>8}")
    for name, (run_a, run_b) in measures.items():
        rates_a, rates_b = images_per_second(run_a, repeats), images_per_second(run_b, repeats)
        ratio = statistics.median(rates_b) / statistics.median(rates_a)
        results["measures"][name] = {"per_sample": rates_a, "ours": rates_b, "ratio": ratio}
        log(f"{name:<12} {_spread(rates_a):>20} {_spread(rates_b):>20} {ratio:>7.2f}x")
    log(f"end-to-end speedup: {results['measures']['end to end']['ratio']:.2f}x")
    return results


def too_few_warning(batches: int, repeats: int) -> str | None:
    """Why numbers from so few batches or repeats should not be quoted, or None."""
    if batches >= MIN_BATCHES and repeats >= MIN_REPEATS:
        return None
    return (f"{batches} batches x {repeats} repeat(s) is below {MIN_BATCHES} x {MIN_REPEATS}: start-up costs and "
            f"noise dominate and the ratios are not reproducible; quote only runs with --batches >= {MIN_BATCHES} "
            f"--repeats >= {MIN_REPEATS}")


def train_steps(step: Callable, x: torch.Tensor, y: torch.Tensor, count: int) -> int:
    for _ in range(count):
        step(x, y)
    return count * len(y)


def _spread(rates: list[float]) -> str:
    deviation = statistics.stdev(rates) if len(rates) > 1 else 0.0
    return f"{statistics.median(rates):.0f} ({statistics.mean(rates):.0f}±{deviation:.0f})"


