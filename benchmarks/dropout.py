"""Why `--fast-dropout` exists: the cost of dropout masks on CPU.

    python benchmarks/dropout.py [--repeats 20]

1. Profiles seed-regularized's bf16 channels_last train step (batch 128) with torch.profiler and
   prints the share of CPU time spent in `aten::bernoulli_` (drawing dropout masks).
2. Times forward + backward of one dropout layer on a [128, 16, 26, 26] bf16 channels_last
   tensor: `F.dropout` against `models.FastDropout`, median over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mnist_ops.bench import make_step
from mnist_ops.config import Config
from mnist_ops.models import FastDropout, create_model
from mnist_ops.provenance import code_version


def bernoulli_share(steps: int = 5) -> float:
    torch.manual_seed(0)
    config = Config(model="seed-regularized", dropout=0.05, lr=0.01, precision="bf16", channels_last=True)
    step = make_step(create_model("seed-regularized", dropout=0.05), config)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for _ in range(2):
        step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step(x, y)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return sum(event.self_cpu_time_total for event in events if event.key == "aten::bernoulli_") / total


def layer_milliseconds(layer, repeats: int) -> float:
    x = torch.randn(128, 16, 26, 26).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    layer(x).sum().backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        layer(x).sum().backward()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, code {code_version()}")
    print(f"seed-regularized bf16 channels_last train step: {bernoulli_share():.0%} of CPU time in aten::bernoulli_")
    torch_ms = layer_milliseconds(lambda x: F.dropout(x, 0.05, training=True), args.repeats)
    fast_ms = layer_milliseconds(FastDropout(0.05).train(), args.repeats)
    print(f"dropout forward + backward, [128, 16, 26, 26] bf16 channels_last: F.dropout {torch_ms:.2f} ms, "
          f"FastDropout {fast_ms:.2f} ms ({torch_ms / fast_ms:.2f}x)")


if __name__ == "__main__":
    main()
