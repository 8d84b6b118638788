"""What the search for slanted ruled lines (preprocess._slant) costs per picture.

    python benchmarks/preprocess_speed.py [--repeats 5]

Times `preprocess.mnist_pixels` on a 280x280 canvas (the draw page's) and on 4096x4096 photos (the largest this tool
decodes): a digit on white paper, on level ruled lines, on lines slanted by 3 degrees, and under pixel noise; each
with the slanted search and with it turned off, alternating, and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

import mnist_ops.preprocess as preprocess


def digit(shape: tuple[int, int], at: tuple[int, int], side: int) -> np.ndarray:
    """A dark ring and stem (a 9 of sorts) on white, `side` pixels tall."""
    page = np.full(shape, 255, np.uint8)
    rows, columns = np.mgrid[0:side, 0:side // 2]
    ring = np.abs(np.hypot(rows - side / 4, columns - side / 4) - side / 5) < side / 20
    stem = (columns > side * 0.4) & (columns < side * 0.48) & (rows > side / 4)
    page[at[0]:at[0] + side, at[1]:at[1] + side // 2][ring | stem] = 0
    return page


def ruled(shape: tuple[int, int], degrees: float) -> np.ndarray:
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    height = rows - np.tan(np.radians(degrees)) * columns - 20
    return np.where(np.abs(height - 100 * np.round(height / 100)) < 3, 150, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    big = (4096, 4096)
    page = digit(big, (500, 600), 2000)
    noise = np.random.default_rng(0).integers(0, 120, big)
    pictures = {"canvas 280, a digit": digit((280, 280), (40, 90), 200), "4096, a digit": page,
                "4096, level lines": np.minimum(ruled(big, 0.0), page),
                "4096, lines at 3 degrees": np.minimum(ruled(big, 3.0), page),
                "4096, a digit under noise": np.clip(page.astype(int) - noise, 0, 255).astype(np.uint8)}
    search = preprocess._slant
    print(f"median of {args.repeats} (ms): with the slanted search | without | ratio")
    for name, picture in pictures.items():
        image = Image.fromarray(picture)
        seconds = {True: [], False: []}
        for _ in range(args.repeats):
            for on in (True, False):
                preprocess._slant = search if on else (lambda mask_rows: None)
                start = time.perf_counter()
                preprocess.mnist_pixels(image)
                seconds[on].append(time.perf_counter() - start)
        preprocess._slant = search
        with_it, without = (float(np.median(seconds[on])) * 1000 for on in (True, False))
        print(f"{name:28s} {with_it:8.1f} | {without:8.1f} | {with_it / without:.2f}x")


if __name__ == "__main__":
    main()
