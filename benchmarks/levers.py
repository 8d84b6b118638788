"""Measure the CPU speed levers on one model, in one process, so ratios are comparable.

    python benchmarks/levers.py --model lean-8k --dropout 0 [--steps 40] [--repeats 5] [--json out.json]

Train-step img/s for: fp32 eager, bf16 autocast, channels_last, both, torch.compile (+bf16),
FastDropout (models.py), oneDNN's bf16 math for fp32 convolutions, batch size, thread count, two model copies in two
threads (`replicas.py`; needs dropout 0 in training); evaluation img/s for: batch
size, BatchNorm folded into the convs (`train.fold_batchnorm`, torch.fx `fuse`), bf16. Each number is the median over repeats (mean ± std beside it) on
the same pre-made batch, so only the lever differs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_ops.bench import make_step, train_steps
from mnist_ops.config import Config
from mnist_ops.engine import autocast_context, build_model, fold_batchnorm
from mnist_ops.models import DEFAULT_DROPOUT, create_model
from mnist_ops.provenance import code_version, refuse_existing, write_results
from mnist_ops.replicas import one_thread_per_replica

CPU = torch.device("cpu")


def timed(run, repeats: int) -> list[float]:
    run()  # warm-up (and compilation, for torch.compile)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def train_rate(model_name: str, dropout: float, batch: int, steps: int, repeats: int, precision="fp32",
               channels_last=False, compile_model=False, onednn_bf16_conv=False, replicas=1,
               fast_dropout=False) -> list[float]:
    torch.manual_seed(0)
    config = Config(model=model_name, dropout=dropout, lr=0.01, precision=precision, channels_last=channels_last,
                    replicas=replicas, fast_dropout=fast_dropout)
    step = make_step(build_model(config), config, compile_model)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    before = torch.backends.mkldnn.conv.fp32_precision
    torch.backends.mkldnn.conv.fp32_precision = "bf16" if onednn_bf16_conv else "ieee"
    try:
        with one_thread_per_replica(replicas):
            return [steps * batch / s for s in timed(lambda: train_steps(step, x, y, steps), repeats)]
    finally:
        torch.backends.mkldnn.conv.fp32_precision = before


@torch.no_grad()
def eval_rate(model_name: str, batch: int, repeats: int, total: int = 10_000, folded=False,
              precision="fp32") -> list[float]:
    torch.manual_seed(0)
    model = create_model(model_name).eval()
    if folded:
        model = fold_batchnorm(model)
    x = torch.randn(total, 1, 28, 28)

    def run():
        for start in range(0, total, batch):
            with autocast_context(CPU, precision):
                model(x[start:start + batch])

    return [total / s for s in timed(run, repeats)]


def row(name: str, rates: list[float], baseline: float) -> tuple[str, str]:
    median = statistics.median(rates)
    spread = statistics.stdev(rates) if len(rates) > 1 else 0.0
    return name, f"| {name} | {median:,.0f} | {statistics.mean(rates):,.0f} ± {spread:,.0f} | {median / baseline:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lean-8k")
    parser.add_argument("--dropout", type=float, default=DEFAULT_DROPOUT,
                        help="the preset's dropout (lean-8k: 0, seed-regularized: 0.05)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--json", default=None, help="also write the numbers to this new JSON file (never overwritten)")
    args = parser.parse_args()
    if args.json:
        refuse_existing(args.json)
    b, n, r, d = args.batch, args.steps, args.repeats, args.dropout
    train_cases = {
        "fp32 eager": dict(),
        "bf16 autocast": dict(precision="bf16"),
        "channels_last fp32": dict(channels_last=True),
        "channels_last + bf16": dict(channels_last=True, precision="bf16"),
        "fast dropout fp32": dict(fast_dropout=True),
        "channels_last + bf16 + fast dropout": dict(channels_last=True, precision="bf16", fast_dropout=True),
        "fp32 with oneDNN bf16 conv math": dict(onednn_bf16_conv=True),
        "channels_last + fp32 with oneDNN bf16 conv math": dict(channels_last=True, onednn_bf16_conv=True),
    }
    if not args.skip_compile:
        train_cases["torch.compile fp32"] = dict(compile_model=True)
        train_cases["torch.compile + bf16"] = dict(compile_model=True, precision="bf16")
    results: dict[str, list[float]] = {}
    print(f"model {args.model}, dropout {d}, batch {b}, {n} steps x {r} repeats, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, code {code_version()}")
    for name, options in train_cases.items():
        results[f"train: {name}"] = train_rate(args.model, d, b, n, r, **options)
    for size in (64, 256, 512):
        steps = max(1, n * b // size)
        results[f"train: fp32 eager, batch {size}"] = train_rate(args.model, d, size, steps, r)
        results[f"train: bf16 autocast, batch {size}"] = train_rate(args.model, d, size, steps, r, precision="bf16")
        results[f"train: channels_last + bf16, batch {size}"] = train_rate(args.model, d, size, steps, r,
                                                                          precision="bf16", channels_last=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results["train: fp32 eager, 1 thread"] = train_rate(args.model, d, b, n, r)
    results["train: channels_last + bf16, 1 thread"] = train_rate(args.model, d, b, n, r, precision="bf16",
                                                                  channels_last=True)
    torch.set_num_threads(threads)
    for size in (b, 2 * b):  # two model copies, one thread each, each on half the batch (replicas.py)
        results[f"train: channels_last + bf16, batch {size}, 2 replicas x 1 thread"] = train_rate(
            args.model, d, size, max(1, n * b // size), r, precision="bf16", channels_last=True, replicas=2)
    for size in (1000, 10_000):
        results[f"eval: fp32, batch {size}"] = eval_rate(args.model, size, r)
    results["eval: fp32, batch 1000, BN folded"] = eval_rate(args.model, 1000, r, folded=True)
    results["eval: bf16, batch 1000"] = eval_rate(args.model, 1000, r, precision="bf16")
    results["eval: bf16, batch 1000, BN folded"] = eval_rate(args.model, 1000, r, folded=True, precision="bf16")

    print("| lever | img/s (median) | mean ± std | vs fp32 eager |")
    print("|---|---:|---:|---:|")
    train_base = statistics.median(results["train: fp32 eager"])
    eval_base = statistics.median(results["eval: fp32, batch 1000"])
    for name, rates in results.items():
        print(row(name, rates, train_base if name.startswith("train") else eval_base)[1])
    if args.json:
        print(f"wrote {write_results(args.json, {'args': vars(args), 'img_per_s': results})}")


if __name__ == "__main__":
    main()
