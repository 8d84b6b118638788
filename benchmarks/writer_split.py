"""How much a validation split's writers are also training writers, measured without labels of writers.

    OMP_NUM_THREADS=1 python benchmarks/writer_split.py [--count 10000]

MNIST's files say nothing of who wrote each digit, and its test digits come from other writers than its
training digits. A held-out image whose writer also wrote training images has a close look-alike among
them. So this holds out `--count` training images in several ways and, for each, runs a 1-nearest-neighbour
classifier (pixel distance) on the held-out images against the rest of the training set: its error, and the
median distance to the nearest training image. Ways: random (stratified by class, as `--validation`), the
last N in file order (`--validation-from last`), and each block of N consecutive images. The test set
is measured the same way against the training set minus the random hold-out, as the yardstick: nothing
here picks a recipe.
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_ops.batches import last_holdout, stratified_holdout
from mnist_ops.data import load_split


def nearest_neighbour(queries: torch.Tensor, query_labels: torch.Tensor, reference: torch.Tensor,
                      reference_labels: torch.Tensor) -> tuple[float, float]:
    """(1-NN error %, median distance to the nearest reference image), pixels scaled to 0..1."""
    norms = (reference * reference).sum(1)
    wrong, distances = 0, []
    for start in range(0, len(queries), 1000):
        chunk = queries[start:start + 1000]
        squared = norms[None, :] - 2 * chunk @ reference.T  # + |q|^2, the same for every reference image
        best, index = squared.min(1)
        wrong += int((reference_labels[index] != query_labels[start:start + 1000]).sum())
        distances.append((best + (chunk * chunk).sum(1)).clamp(min=0).sqrt())
    return 100 * wrong / len(queries), float(torch.cat(distances).median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="images held out (default 10000)")
    args = parser.parse_args()
    train, test = load_split("mnist", "train"), load_split("mnist", "test")
    images = train.images.reshape(len(train), -1).float() / 255
    labels = train.labels.long()
    holdouts = {"random (stratified)": stratified_holdout(train.labels, args.count),
                f"last {args.count:,}": last_holdout(train.labels, args.count)}
    for start in range(0, len(train) - args.count + 1, args.count):
        block = torch.arange(start, start + args.count)
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[block] = False
        holdouts[f"block {start:,}-{start + args.count:,}"] = (keep.nonzero().flatten(), block)
    print(f"{'held out':<22} {'1-NN error':>10} {'median distance':>16}")
    for name, (kept, held) in holdouts.items():
        started = time.perf_counter()
        error, distance = nearest_neighbour(images[held], labels[held], images[kept], labels[kept])
        print(f"{name:<22} {error:>9.2f}% {distance:>16.3f}   ({time.perf_counter() - started:.0f} s)", flush=True)
    kept, _ = holdouts["random (stratified)"]
    test_images, test_labels = test.images.reshape(len(test), -1).float() / 255, test.labels.long()
    for name, part in (("test set", slice(None)), ("test 0-5,000", slice(0, 5000)), ("test 5,000-10,000", slice(5000, None))):
        error, distance = nearest_neighbour(test_images[part], test_labels[part], images[kept], labels[kept])
        print(f"{name:<22} {error:>9.2f}% {distance:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
