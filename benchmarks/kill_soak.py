"""Soak: kill `mnist-ops train` many times, resume it each time, and check it ends as the
uninterrupted run. The test (tests/test_faults.py) does the same cycle with 4 kills.

    python benchmarks/kill_soak.py --kills 100 [--cycles 3] [--seed 1] [--json out.json]

Kills alternate between a random moment of the run and the moment a checkpoint or metrics temp
file appears (a kill in the middle of a write). After every kill best.pt and last.pt must load;
at the end metrics.jsonl (timing fields aside) and the final weights must equal the uninterrupted
run's, and no temp file may be left. Prints a tally per cycle and in all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_faults import RUN, command, kill_and_resume, learned  # noqa: E402  (the test's own cycle)

from mnist_ops.data import default_root  # noqa: E402
from mnist_ops.engine import load_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="kills per cycle (default 100)")
    parser.add_argument("--cycles", type=int, default=1, help="runs killed and resumed to the end (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the kill moments")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MNIST_OPS_DATA": str(default_root())}
    totals = {"cycles": 0, "kills": 0, "during_a_write": 0, "after_an_epoch": 0, "equal_to_uninterrupted": 0,
              "temp_files_left": 0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        straight = Path(workdir) / "straight"
        begun = time.monotonic()
        subprocess.run(command("train", *RUN, "--out", str(straight)), env=env, check=True, capture_output=True)
        run_seconds = time.monotonic() - begun
        reference = load_checkpoint(straight / "last.pt")["model"]
        for cycle in range(args.cycles):
            out = Path(workdir) / f"killed{cycle}"
            tally = kill_and_resume(out, args.kills, args.seed + cycle, env, run_seconds)
            weights = load_checkpoint(out / "last.pt")["model"]
            equal = learned(out) == learned(straight) and all(torch.equal(reference[k], weights[k]) for k in weights)
            left = len(list(out.glob(".*.tmp")))
            print(f"cycle {cycle}: {tally}, equal to the uninterrupted run: {equal}, temp files left: {left}",
                  flush=True)
            totals["cycles"] += 1
            totals["equal_to_uninterrupted"] += equal
            totals["temp_files_left"] += left
            for key in ("kills", "during_a_write", "after_an_epoch"):
                totals[key] += tally[key]
    totals["seconds"] = round(time.perf_counter() - started, 1)
    totals["run"] = " ".join(RUN)
    print(json.dumps(totals))
    if args.json:
        Path(args.json).write_text(json.dumps(totals, indent=2) + "\n")


if __name__ == "__main__":
    main()
