"""Soak the fuzz properties: the same tests/test_*.py::test_fuzz_* tests, with many more examples.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_soak.py [--examples 5000] [--seed N] [-k idx]

The test suite runs each property on 100 fixed examples (the "mnist-ops" profile in
tests/conftest.py, so CI is repeatable). This runs the "soak" profile instead: `--examples`
fresh random examples per property (or a fixed draw with `--seed`), no example database.
It is a script, not a test. A failure prints the falsifying example and a
`@reproduce_failure(...)` line to paste onto the test while fixing it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property (default 5000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed, to repeat a soak exactly")
    parser.add_argument("-k", dest="select", default="", help="only the properties whose name matches, e.g. idx")
    args = parser.parse_args()
    select = "fuzz" + (f" and ({args.select})" if args.select else "")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-profile=soak",
               "--hypothesis-show-statistics", "-k", select, "tests"]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    env = {**os.environ, "MNIST_OPS_SOAK_EXAMPLES": str(args.examples)}
    print(" ".join(command), flush=True)
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
