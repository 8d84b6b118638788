"""What a train step with replicas spends besides forward and backward, in milliseconds per step.

    python benchmarks/replica_sync.py [--model benchmarks/candidate_nets.py:fast_8k] [--optimizer muon] [--steps 200]

Times, on the preset lean-8k-fast's recipe (bf16, channels_last, 2 copies, batch 256): the copies'
forward and backward, the optimizer step, and `ThreadReplicas.synchronize`, which averages the
BatchNorm statistics and copies the first copy's weights into the others. For comparison it also
times that copy done as `load_state_dict(first.state_dict())`, as synchronize did before. Medians
over the steps after 20 warm-up steps, on one random batch; no data is read.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_ops.bench import make_step
from mnist_ops.engine import build_model
from mnist_ops.presets import build_config
from mnist_ops.replicas import one_thread_per_replica


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="benchmarks/candidate_nets.py:fast_8k")
    parser.add_argument("--optimizer", default="muon")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if args.steps <= 20:
        parser.error("--steps must be above the 20 warm-up steps")
    config = build_config("lean-8k-fast").replace(model=args.model, optimizer=args.optimizer)
    step = make_step(build_model(config, log=lambda line: None), config)  # bench's step: the lr stays at its peak
    model, optimizer, replicas = step.model, step.optimizer, step.replicas
    x = torch.randn(config.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (config.batch_size,))
    times: dict[str, list[float]] = {"forward and backward": [], "optimizer step": [], "synchronize": [],
                                     "(the copy as load_state_dict)": []}
    with one_thread_per_replica(config.replicas):
        for number in range(args.steps):
            start = time.perf_counter()
            replicas.forward_backward(x, y)
            backward = time.perf_counter()
            optimizer.step()
            stepped = time.perf_counter()
            replicas.synchronize()
            synchronized = time.perf_counter()
            for other in replicas.models[1:]:
                other.load_state_dict(model.state_dict())
            copied = time.perf_counter()
            if number >= 20:
                for key, seconds in zip(times, (backward - start, stepped - backward, synchronized - stepped,
                                                copied - synchronized)):
                    times[key].append(seconds * 1000)
    step.close()
    print(f"{config.model}, {config.optimizer}, batch {config.batch_size}, {config.replicas} copies:")
    for key, values in times.items():
        print(f"  {key}: {statistics.median(values):.3f} ms per step")


if __name__ == "__main__":
    main()
