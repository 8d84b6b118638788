"""Where a training process's first seconds go: `import torch`, mnist_ops' own imports, loading MNIST.

    python benchmarks/startup.py [--preset lean-8k-fast] [--repeats 3]

Each repeat is a fresh interpreter (so no import is cached in the process), one after the other; each line
gives every repeat and the median. The race (`benchmarks/time_to_accuracy.py`) counts these seconds, as
its clock starts before the process. Needs `mnist-ops data fetch` first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

# Run in the child: the three phases a `mnist-ops train` process goes through before its first step.
CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
from mnist_ops.batches import load_fit_data
from mnist_ops.presets import get_preset
from mnist_ops.train import fit
after_ours = time.perf_counter()
load_fit_data(get_preset(sys.argv[1]))
after_data = time.perf_counter()
print(json.dumps({"import torch": after_torch - start, "import mnist_ops": after_ours - after_torch,
                  "load MNIST": after_data - after_ours}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lean-8k-fast")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from mnist_ops.errors import UserError
    from mnist_ops.presets import get_preset

    try:
        get_preset(args.preset)
    except UserError as error:
        parser.error(str(error))
    phases: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        child = subprocess.run([sys.executable, "-c", CHILD, args.preset], capture_output=True, text=True)
        if child.returncode != 0:
            lines = child.stderr.strip().splitlines() or ["no output"]
            parser.exit(2, f"startup.py: error: the child process failed: {lines[-1]}\n")
        for phase, seconds in json.loads(child.stdout).items():
            phases.setdefault(phase, []).append(seconds)
    print(f"preset {args.preset}, {args.repeats} fresh interpreter{'s' * (args.repeats > 1)}")
    for phase, values in phases.items():
        print(f"{phase}: median {statistics.median(values):.2f} s ({', '.join(f'{value:.2f}' for value in values)})")


if __name__ == "__main__":
    main()
