"""A model's train step on one thread: img/s at several input sizes, and where its time goes.

    OMP_NUM_THREADS=1 python benchmarks/step_profile.py [--model fast-8k] [--sizes 28 24 22 20] [--profile]

The engine's train step (`bench.make_step`: `engine.TrainStep`, bf16 autocast, channels_last, SGD) on one
random batch (--batch-size, default 128) per size; the sizes are alternated
over --repeats passes of --steps steps each, after 3 steps of warm-up per pass, and each size's line gives
every pass and the median. The model must take every size (fast-8k's global pooling does: `--train-crop`).
--profile adds torch.profiler's table for --steps steps at 28 x 28 after 10 of warm-up, sorted by self CPU
time: which ops the step spends its time in. No data is read.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_ops.bench import make_step
from mnist_ops.config import Config
from mnist_ops.errors import UserError
from mnist_ops.models import check_output, create_model

RECIPE = Config(optimizer="sgd", lr=0.01, momentum=0.9, precision="bf16", channels_last=True)


def batch(batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 1, size, size), torch.randint(0, 10, (batch_size,))


def rate(step, batch_size: int, size: int, steps: int) -> float:
    """img/s over `steps` train steps at size x size, after 3 of warm-up."""
    x, y = batch(batch_size, size)
    for _ in range(3):
        step(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return batch_size * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast-8k")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 24, 22, 20])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if min(args.sizes) < 1 or args.batch_size < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--sizes, --batch-size, --steps and --repeats must be at least 1")
    torch.manual_seed(0)
    try:
        model = create_model(args.model)
        for size in args.sizes:
            check_output(model, args.model, 10, (size, size))
    except UserError as error:
        parser.error(str(error))
    step = make_step(model, RECIPE.replace(batch_size=args.batch_size))
    args.sizes = list(dict.fromkeys(args.sizes))  # each size once, in the order given
    rates: dict[int, list[float]] = {size: [] for size in args.sizes}
    for repeat in range(args.repeats):
        for size in args.sizes if repeat % 2 == 0 else reversed(args.sizes):
            rates[size].append(rate(step, args.batch_size, size, args.steps))
    base = statistics.median(rates[args.sizes[0]])
    for size, values in rates.items():
        median = statistics.median(values)
        print(f"{size} x {size}: median {median:,.0f} img/s ({median / base:.2f}x the first size); "
              f"passes {', '.join(f'{value:,.0f}' for value in values)}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        x, y = batch(args.batch_size, 28)
        for _ in range(10):
            step(x, y)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(args.steps):
                step(x, y)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
