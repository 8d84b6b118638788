"""Wall-clock seconds from process start to the first epoch at or above a test accuracy.

    python benchmarks/time_to_accuracy.py --preset lean-8k [--target 99.4] [-- extra train flags]

Starts `mnist-ops train` as a child process (data already fetched), reads its epoch lines as
they appear and stops it at the first epoch whose test accuracy reaches the target. The clock
starts before the child process is launched, so interpreter start-up and imports count.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

EPOCH_LINE = re.compile(r"epoch\s+(\d+):.*\| test loss [\d.]+ acc ([\d.]+)%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lean-8k")
    parser.add_argument("--target", type=float, default=99.4)
    parser.add_argument("extra", nargs="*", help="more `mnist-ops train` flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "mnist_ops", "train", "--preset", args.preset, "--no-progress",
                   "--out", f"{out}/run", *args.extra]
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            for line in child.stdout:
                match = EPOCH_LINE.search(line)
                if not match:
                    continue
                elapsed = time.perf_counter() - start
                epoch, accuracy = int(match.group(1)), float(match.group(2))
                print(f"{elapsed:7.1f}s  epoch {epoch:2d}  test accuracy {accuracy:.2f}%", flush=True)
                if accuracy >= args.target:
                    print(f"time to {args.target}%: {elapsed:.1f}s (epoch {epoch}, preset {args.preset})")
                    return 0
        finally:
            child.kill()
            child.wait()
    print(f"never reached {args.target}%")
    return 1


if __name__ == "__main__":
    sys.exit(main())
