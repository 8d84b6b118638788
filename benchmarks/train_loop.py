"""img/s of a preset's whole train loop (batches built and augmented in the background thread, the train
step, the copies' synchronization), for several batch sizes alternated in one process.

    python benchmarks/train_loop.py --preset lean-8k-fast --batch-sizes 256 512 [--images 15360] [--repeats 3]

Unlike `levers.py`, which steps on one pre-made batch, this runs `fit`'s loop (`batches.fit_batches`, and
`bench.make_step`'s train step: the model in the recipe's memory format, its EMA and teachers; the lr
stays at the recipe's, with no scheduler to step) over the first --images training images, so the
augmentation's share counts. The order of the sizes alternates between repeats; each line gives every
repeat and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_ops.batches import fit_batches, load_fit_data
from mnist_ops.bench import make_step
from mnist_ops.distill import load_teacher
from mnist_ops.engine import build_model
from mnist_ops.errors import UserError
from mnist_ops.presets import get_preset
from mnist_ops.replicas import one_thread_per_replica


def loop_rate(config, data, images: int) -> float:
    """img/s of one pass of fit's loop over the first `images` training images."""
    torch.manual_seed(config.seed)
    step = make_step(build_model(config), config, teacher=load_teacher(config, data.mean, data.std,
                                                                        torch.device("cpu")))
    generator = torch.Generator().manual_seed(config.seed)
    try:
        with one_thread_per_replica(config.replicas):
            start = time.perf_counter()
            for x, y in fit_batches(data.train.head(images), config, data.mean, data.std, generator):
                step(x, y)
            return images / (time.perf_counter() - start)
    finally:
        step.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lean-8k-fast")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--images", type=int, default=15_360)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if min(args.batch_sizes) < 1 or args.repeats < 1:
        parser.error("--batch-sizes and --repeats must be at least 1")
    try:
        base = get_preset(args.preset)
    except UserError as error:
        parser.error(str(error))
    data = load_fit_data(base)
    if not 0 < args.images <= len(data.train):
        parser.error(f"--images must be between 1 and {len(data.train):,} (the training images)")
    loop_rate(base, data, min(args.images, 4 * base.batch_size))  # warm-up: first-call costs fall on no size
    rates = {size: [] for size in args.batch_sizes}
    for repeat in range(args.repeats):
        for size in args.batch_sizes if repeat % 2 == 0 else reversed(args.batch_sizes):
            rates[size].append(loop_rate(base.replace(batch_size=size), data, args.images))
    print(f"preset {args.preset}, {args.images:,} images, {args.repeats} repeats, sizes alternated")
    for size, values in rates.items():
        print(f"batch {size}: median {statistics.median(values):,.0f} img/s "
              f"({', '.join(f'{value:,.0f}' for value in values)})")


if __name__ == "__main__":
    main()
