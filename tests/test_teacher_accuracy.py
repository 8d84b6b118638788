"""benchmarks/teacher_accuracy.py on a real checkpoint: each teacher's accuracy, their average's, the refusals."""
import re
import subprocess
import sys
from pathlib import Path

import torch

from mnist_ops.batches import normalize
from mnist_ops.engine import evaluate, load_checkpoint, model_from_checkpoint

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "teacher_accuracy.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_it_reports_each_teacher_and_their_average_as_evaluate_reads_them(digit_checkpoint, mnist_test):
    result = run("--precision", "fp32", str(digit_checkpoint), str(digit_checkpoint))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[2].startswith("the average of 2: test accuracy")
    checkpoint = load_checkpoint(digit_checkpoint)
    expected = evaluate(model_from_checkpoint(checkpoint), normalize(mnist_test.images, checkpoint["mean"],
                                                                     checkpoint["std"]),
                        mnist_test.labels, torch.device("cpu")).accuracy
    for line in lines:  # the average of one net with itself is that net
        assert float(re.search(r"test accuracy ([0-9.]+)%", line).group(1)) == round(expected, 2)


def test_it_refuses_a_teacher_that_trained_on_the_validation_images(digit_checkpoint):
    result = run("--validation", "5000", str(digit_checkpoint))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "held out no training images, this run validates on 5,000" in result.stderr.strip()
