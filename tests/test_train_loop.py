"""benchmarks/train_loop.py: one rate per batch size, from fit's own loop on real images."""
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "train_loop.py"


def test_it_prints_a_median_and_every_repeat_for_each_batch_size(mnist_root):
    result = subprocess.run([sys.executable, str(SCRIPT), "--batch-sizes", "128", "256", "--images", "512",
                             "--repeats", "2"], capture_output=True, text=True, check=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "preset lean-8k-fast, 512 images, 2 repeats, sizes alternated"
    for line, size in zip(lines[1:], (128, 256), strict=True):
        match = re.fullmatch(rf"batch {size}: median ([\d,]+) img/s \(([\d,]+), ([\d,]+)\)", line)
        assert match and all(int(value.replace(",", "")) > 0 for value in match.groups())
