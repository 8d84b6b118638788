"""What preprocessing's speck rule (preprocess.SPECK_SHARE) changes on MNIST's 10,000 test digits.

    python benchmarks/speck_rule.py --checkpoint RUN

Preprocesses every test digit with the rule and with it off (SPECK_SHARE = 0), and prints how many digits
come out different and the checkpoint's accuracy on each version (and on the raw 28x28 digits).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import mnist_ops.preprocess as preprocess
from mnist_ops.data import load_split
from mnist_ops.predict import TorchPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    args = parser.parse_args()
    split = load_split("mnist", "test")
    images, labels = split.images.numpy(), split.labels.numpy()
    predictor = TorchPredictor(args.checkpoint)
    share, versions = preprocess.SPECK_SHARE, {}
    for name, value in (("with the rule", share), ("without it", 0.0)):
        preprocess.SPECK_SHARE = value
        versions[name] = np.stack([preprocess.mnist_pixels(Image.fromarray(digit)) for digit in images])
    preprocess.SPECK_SHARE = share
    changed = np.array([not np.array_equal(a, b) for a, b in zip(*versions.values())])
    print(f"SPECK_SHARE = {share}: {changed.sum()} of {len(images)} test digits preprocess differently")
    print(f"raw 28x28 digits: {(predictor.probabilities(images).argmax(1) == labels).mean() * 100:.2f}%")
    for name, pixels in versions.items():
        predicted = predictor.probabilities(pixels).argmax(1)
        print(f"preprocessed {name}: {(predicted == labels).mean() * 100:.2f}%, "
              f"{(predicted[changed] == labels[changed]).sum()} of the {changed.sum()} changed digits right")


if __name__ == "__main__":
    main()
