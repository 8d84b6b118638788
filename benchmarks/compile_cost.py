"""torch.compile for the race, with its compile time counted: is it worth it against two eager copies?

    python benchmarks/compile_cost.py [--model benchmarks/candidate_nets.py:fast_8k] [--steps 60]

On the race's step (bf16 autocast, channels_last, batch 256, Muon, a random batch; no data read):
(a) two eager copies, one thread each (`replicas = 2`, what lean-8k-fast runs);
(b) one copy through torch.compile on both threads.
For each: the seconds of the first step (for (b), compilation), then the img/s of `--steps` more
steps. Prints the seconds a 5-epoch race (5 x 60,000 images) would spend in these steps, compilation
included; the last partial batch and the evaluation would compile again, which is not counted.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_ops.bench import make_step
from mnist_ops.engine import build_model
from mnist_ops.presets import build_config
from mnist_ops.replicas import one_thread_per_replica

RACE_IMAGES = 5 * 60_000


def measure(config, compile_model: bool, steps: int) -> tuple[float, float]:
    """(seconds of the first step, img/s of the next `steps`)."""
    torch.manual_seed(0)
    step = make_step(build_model(config, log=lambda line: None), config, compile_model)
    x = torch.randn(config.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (config.batch_size,))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # both cases on 2 cores, whatever the machine has (the copies: one each)
    with one_thread_per_replica(config.replicas):
        start = time.perf_counter()
        step(x, y)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        rate = steps * config.batch_size / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    step.close()
    return first, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="benchmarks/candidate_nets.py:fast_8k")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    race = build_config("lean-8k-fast").replace(model=args.model, optimizer="muon")
    cases = {"(a) eager, 2 copies, 1 thread each": (race, False),
             "(b) torch.compile, 1 copy, 2 threads": (race.replace(replicas=1), True)}
    for name, (config, compile_model) in cases.items():
        first, rate = measure(config, compile_model, args.steps)
        print(f"{name}: first step {first:.2f} s, then {rate:,.0f} img/s; "
              f"5 epochs of these steps: {first + RACE_IMAGES / rate:.1f} s")


if __name__ == "__main__":
    main()
