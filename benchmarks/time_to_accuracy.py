"""Wall-clock seconds from process start to the first epoch at or above a test accuracy.

    python benchmarks/time_to_accuracy.py --preset lean-8k-fast [--seeds 1 2 3] [--target 99.4]
    python benchmarks/time_to_accuracy.py --preset lean-8k-fast --pipeline per-sample
    python benchmarks/time_to_accuracy.py --preset lean-8k -- --precision bf16   (more train flags after --)

Starts a training process per seed (data already fetched), reads its epoch lines as they appear
and stops it at the first epoch whose test accuracy reaches the target. The clock starts before
the process is launched, so interpreter start-up, imports and data loading count.

--pipeline ours        `mnist-ops train`: tensors in memory, batched augmentation, the preset's precision.
--pipeline per-sample  the same model and recipe (optimizer, schedule, epochs, batch size, augmentation)
                       through the per-sample PIL `Dataset` + `DataLoader` of `mnist-ops bench`, eager fp32,
                       evaluated the way a typical repository does (eval mode, no_grad, batches of 1000).
                       Its DataLoader drops the last partial batch (60,000 = 234 x 256 + 96), as bench's
                       does; precision, channels_last, replicas and fast_dropout do not apply to it.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time

EPOCH_LINE = re.compile(r"epoch\s+(\d+):.*\| test loss [\d.]+ acc ([\d.]+)%")


def per_sample_training(train_flags: list[str]) -> None:
    """The child process of --pipeline per-sample: prints epoch lines in `mnist-ops train`'s format."""
    import torch
    import torch.nn.functional as F  # the evaluation below, written as a typical repository does

    from mnist_ops.batches import load_fit_data, normalize
    from mnist_ops.bench import per_sample_loader
    from mnist_ops.cli import build_parser, train_config
    from mnist_ops.distill import load_teacher
    from mnist_ops.engine import (TrainStep, build_model, make_optimizer, make_scheduler, recompute_batchnorm,
                                  seed_everything)
    from mnist_ops.train import epoch_config

    config = train_config(build_parser().parse_args(["train", *train_flags]))
    config = config.replace(precision="fp32", channels_last=False, replicas=1, fast_dropout=False)  # eager fp32
    data = load_fit_data(config)
    train, test, mean, std = data.train, data.evaluation, data.mean, data.std
    test_inputs = normalize(test.images, mean, std)
    seed_everything(config.seed)
    model = build_model(config)
    def loader_for(augment: str):
        return per_sample_loader(train, mean, std, augment, config.batch_size, workers=2,
                                 interpolation=config.interpolation, rotation_fill=config.rotation_fill)

    loader = loader_for(config.augment)
    plain_loader = loader_for("none") if config.plain_epochs else loader  # the last epochs, as fit trains them
    optimizer = make_optimizer(config, model)
    step = TrainStep(model, optimizer, config, make_scheduler(config, optimizer, len(loader)),
                     teacher=load_teacher(config, mean, std, torch.device("cpu")))
    for epoch in range(config.epochs):
        for x, y in (plain_loader if epoch_config(config, epoch).augment != config.augment else loader):
            step(x, y)
        if config.precise_bn:  # as fit does, so the recipe is the same
            recompute_batchnorm(model, normalize(train.images[:config.precise_bn], mean, std), torch.device("cpu"),
                                config.batch_size)
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(test.labels), 1000):
                logits = model(test_inputs[start:start + 1000])
                labels = test.labels[start:start + 1000]
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(dim=1) == labels).sum().item()
        print(f"epoch {epoch:2d}: per-sample pipeline | test loss {loss_sum / len(test.labels):.4f} "
              f"acc {correct / len(test.labels) * 100:.2f}%", flush=True)


def time_to_target(command: list[str], target: float) -> tuple[float, int] | None:
    """(seconds, epoch) at the first epoch line at or above `target`, or None."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            match = EPOCH_LINE.search(line)
            if not match:
                continue
            elapsed = time.perf_counter() - start
            epoch, accuracy = int(match.group(1)), float(match.group(2))
            print(f"{elapsed:7.1f}s  epoch {epoch:2d}  test accuracy {accuracy:.2f}%", flush=True)
            if accuracy >= target:
                return elapsed, epoch
        if child.wait() != 0:
            raise SystemExit(f"the training process failed with exit code {child.returncode}")
    finally:
        child.kill()
        child.wait()
    return None


def median_over_all(results: list) -> str:
    """The median over every seed, a seed that never reached the target counting as the slowest: the
    median of the seeds that reached it alone would flatter a recipe that misses some."""
    times = sorted(math.inf if result is None else result[0] for result in results)
    median = statistics.median(times)
    return f"median over all {len(times)}, a miss counting as never: " + (f"{median:.1f}s" if median < math.inf
                                                                        else "never")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lean-8k-fast")
    parser.add_argument("--target", type=float, default=99.4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--pipeline", choices=("ours", "per-sample"), default="ours")
    parser.add_argument("--child-per-sample", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="more `mnist-ops train` flags, after --")
    args = parser.parse_args()
    if args.child_per_sample:
        from mnist_ops.errors import UserError

        try:
            per_sample_training(["--preset", args.preset, *args.extra])
        except UserError as error:  # one line, as mnist-ops train gives it
            print(f"time_to_accuracy: {error}", file=sys.stderr)
            return 2
        return 0
    results = []
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            flags = ["--preset", args.preset, "--seed", str(seed), *args.extra]
            if args.pipeline == "ours":
                command = [sys.executable, "-m", "mnist_ops", "train", *flags, "--no-progress",
                           "--out", f"{out}/seed{seed}"]
            else:
                command = [sys.executable, __file__, "--child-per-sample", "--preset", args.preset, "--",
                           "--seed", str(seed), *args.extra]
            result = time_to_target(command, args.target)
            if result is None:
                print(f"seed {seed}: never reached {args.target}%")
                results.append(None)
                continue
            print(f"seed {seed}: time to {args.target}%: {result[0]:.1f}s (epoch {result[1]}, "
                  f"preset {args.preset}, pipeline {args.pipeline})", flush=True)
            results.append(result)
    reached = [result[0] for result in results if result is not None]
    if len(args.seeds) > 1 and reached:
        print(f"{len(reached)} of {len(results)} seeds reached {args.target}%: median {statistics.median(reached):.1f}s, "
              f"min {min(reached):.1f}s, max {max(reached):.1f}s; {median_over_all(results)}")
    return 0 if len(reached) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
