"""benchmarks/startup.py: the seconds before a run's first step, phase by phase, from fresh interpreters."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_scripts import exit_code_of_main

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "startup.py"


def test_it_prints_each_phase_with_every_repeat_and_the_median(mnist_root):
    result = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "2"], capture_output=True, text=True,
                            check=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "preset lean-8k-fast, 2 fresh interpreters"
    for line, phase in zip(lines[1:], ("import torch", "import mnist_ops", "load MNIST"), strict=True):
        match = re.fullmatch(rf"{phase}: median ([\d.]+) s \(([\d.]+), ([\d.]+)\)", line)
        assert match and all(float(value) >= 0 for value in match.groups())  # our imports may round to 0.00
    assert float(lines[1].split("median ")[1].split(" s")[0]) > 0  # torch's import never does


@pytest.mark.parametrize("flags, message", [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_flags_end_in_an_argparse_error_and_exit_2(monkeypatch, capsys, flags, message):
    assert exit_code_of_main("startup", flags, monkeypatch) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("startup.py: error: ") and message in last


def test_a_missing_data_set_ends_in_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MNIST_OPS_DATA", str(tmp_path / "empty"))
    assert exit_code_of_main("startup", [], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("startup.py: error: the child process failed: ")
    assert "mnist-ops data fetch" in err[0]
