"""A data set of one's own for the tests: four IDX files of random images, labels cycling through the classes."""
from pathlib import Path

import torch

from mnist_ops.idx import write_idx


def write_idx_dataset(directory: Path, counts: tuple[int, int], size: tuple[int, int] = (28, 28), classes: int = 3,
                      emnist_names: bool = False) -> Path:
    """`counts` train and test images of `size` (rows, columns), label i % `classes`, in `directory` (made if
    needed). MNIST's file names, or EMNIST's, whose images are stored transposed as EMNIST stores them."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for split, count in zip(("train", "test"), counts):
        images = torch.randint(0, 256, (count, *size), dtype=torch.uint8, generator=generator)
        labels = (torch.arange(count) % classes).to(torch.uint8)
        if emnist_names:
            write_idx(directory / f"emnist-digits-{split}-images-idx3-ubyte", images.transpose(1, 2).contiguous())
            write_idx(directory / f"emnist-digits-{split}-labels-idx1-ubyte", labels)
        else:
            prefix = "train" if split == "train" else "t10k"
            write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
            write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
    return directory
