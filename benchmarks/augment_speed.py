"""Augmentation speed: the batched warps of augment.py against a per-image PIL path.

    python benchmarks/augment_speed.py [--images 4096] [--batch 128] [--repeats 5] [--augment seed] [--json out.json]

(a) per image: `bench.PerSampleDataset`, which augments one PIL image at a time the way
    torchvision's RandomPerspective / RandomRotation do on PIL images, then ToTensor + Normalize;
(b) batched: `batches.make_batch`, which gathers a batch of uint8 images, warps the whole batch
    with one grid_sample per transform (augment.py) and normalizes it.
Both produce normalized float inputs with the same augmentation; no model runs. Each number is
the median img/s over repeats (mean ± std beside it), on the training images in their stored order.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_ops.batches import load_training_split, make_batch
from mnist_ops.bench import PerSampleDataset
from mnist_ops.presets import build_config
from mnist_ops.provenance import code_version, refuse_existing, write_results


def rates(run, images: int, repeats: int) -> list[float]:
    run()  # warm-up
    measured = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        measured.append(images / (time.perf_counter() - start))
    return measured


def describe(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.median(values):,.0f} img/s ({statistics.mean(values):,.0f} ± {spread:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--augment", default="seed", choices=("seed", "light"))  # elastic has no PIL path to compare with
    parser.add_argument("--json", default=None, help="also write the numbers to this new JSON file (never overwritten)")
    args = parser.parse_args()
    if args.json:
        refuse_existing(args.json)
    config = build_config("seed-regularized", None, {"augment": args.augment, "limit_train": args.images})
    train, mean, std = load_training_split(config)
    dataset = PerSampleDataset(train, mean, std, args.augment)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def per_image() -> None:
        for index in range(len(train)):
            dataset[index]

    def batched() -> None:
        for start in range(0, len(train), args.batch):
            make_batch(train, torch.arange(start, min(start + args.batch, len(train))), args.augment, mean, std,
                       generator)

    print(f"augment '{args.augment}', {len(train):,} images, batch {args.batch}, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, code {code_version()}")
    results = {"per_image": rates(per_image, len(train), args.repeats),
               "batched": rates(batched, len(train), args.repeats)}
    print(f"(a) per image, PIL:        {describe(results['per_image'])}")
    print(f"(b) batched, grid_sample:  {describe(results['batched'])}")
    ratio = statistics.median(results["batched"]) / statistics.median(results["per_image"])
    print(f"batched / per image: {ratio:.1f}x")
    if args.json:
        print(f"wrote {write_results(args.json, {'args': vars(args), 'img_per_s': results, 'ratio': ratio})}")


if __name__ == "__main__":
    main()
