"""benchmarks/train_loop.py: one rate per batch size, from fit's own loop on real images."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_scripts import exit_code_of_main

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "train_loop.py"


def test_it_prints_a_median_and_every_repeat_for_each_batch_size(mnist_root):
    result = subprocess.run([sys.executable, str(SCRIPT), "--batch-sizes", "128", "256", "--images", "512",
                             "--repeats", "2"], capture_output=True, text=True, check=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "preset lean-8k-fast, 512 images, 2 repeats, sizes alternated"
    for line, size in zip(lines[1:], (128, 256), strict=True):
        match = re.fullmatch(rf"batch {size}: median ([\d,]+) img/s \(([\d,]+), ([\d,]+)\)", line)
        assert match and all(int(value.replace(",", "")) > 0 for value in match.groups())


@pytest.mark.parametrize("flags, message", [
    (["--images", "0"], "--images must be between 1 and 60,000"),
    (["--images", "60001"], "--images must be between 1 and 60,000"),
    (["--batch-sizes", "0"], "--batch-sizes and --repeats must be at least 1"),
    (["--repeats", "0"], "--batch-sizes and --repeats must be at least 1"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_flags_end_in_an_argparse_error_and_exit_2(mnist_root, monkeypatch, capsys, flags, message):
    assert exit_code_of_main("train_loop", flags, monkeypatch) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("train_loop.py: error: ") and message in last
