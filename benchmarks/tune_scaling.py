"""Scaling of `mnist-ops tune`: one worker pinned to one core vs two workers pinned to a core each.

Both sides run the same search (same spec, same trial count, no pruner, a space that does not
change the work per trial), so every trial trains the same images for the same epochs. The two
workers are two `mnist-ops tune` commands on one shared storage, each under `taskset -c CORE`,
as two machines would be. Trials per hour come from the storage: first trial start to last trial
end; the wall clock of the whole command (start-up and report included) is printed beside it.

    python benchmarks/tune_scaling.py                       # the measurement: run it on an idle machine
    python benchmarks/tune_scaling.py --trials 2 --limit-train 1000 --validation 500   # a quick check

Prints one line per side and the ratio; --json writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name = "scaling"
preset = "{preset}"
trials = {trials}
validation = {validation}

[base]
epochs = {epochs}
limit_train = {limit_train}
device = "cpu"
ema = 0.0  # as measured in docs/tune.md, before lean-8k took an EMA of the weights

[space.lr]
type = "float"
low = 0.02
high = 0.2
log = true

[space.momentum]
type = "float"
low = 0.8
high = 0.95

[pruner]
kind = "none"

[objective]
last_k = 1
"""


def tune_command(spec: Path, out: Path, core: int, storage: str | None, data_root: str | None) -> list[str]:
    command = ["taskset", "-c", str(core), sys.executable, "-m", "mnist_ops", "tune", "--spec", str(spec),
               "--out", str(out)]
    if storage:
        command += ["--storage", storage]
    if data_root:
        command += ["--data-root", data_root]
    return command


def trial_span_hours(url: str) -> tuple[int, float]:
    """Finished trials and the hours from the first trial's start to the last one's end."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="scaling", storage=url)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    start = min(trial.datetime_start for trial in trials)
    end = max(trial.datetime_complete for trial in trials)
    return len(trials), (end - start).total_seconds() / 3600


def run_side(commands: list[list[str]], url: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for command in commands]
    for process in processes:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(process.args)} failed:\n{output}")
    wall = time.perf_counter() - started
    trials, hours = trial_span_hours(url)
    return {"workers": len(commands), "trials": trials, "trial_span_seconds": round(hours * 3600, 1),
            "trials_per_hour": round(trials / hours, 1), "wall_seconds": round(wall, 1),
            "commands": [" ".join(command) for command in commands]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lean-8k")
    parser.add_argument("--trials", type=int, default=8, help="trials on each side (default 8)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=20_000, help="training images per trial (default 20,000)")
    parser.add_argument("--validation", type=int, default=5_000, help="held-out images (default 5,000)")
    parser.add_argument("--cores", type=int, nargs=2, default=(0, 1), help="the two cores (default 0 1)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin workers to cores")

    work = Path(tempfile.mkdtemp(prefix="tune-scaling-"))
    try:
        spec = work / "scaling.toml"
        spec.write_text(SPEC.format(preset=args.preset, trials=args.trials, validation=args.validation,
                                    epochs=args.epochs, limit_train=args.limit_train))
        one_url = f"sqlite:///{work / 'one' / 'optuna.db'}"
        one = run_side([tune_command(spec, work / "one", args.cores[0], None, args.data_root)], one_url)
        two_url = f"sqlite:///{work / 'two.db'}"
        two = run_side([tune_command(spec, work / f"two-{core}", core, two_url, args.data_root)
                        for core in args.cores], two_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for side in (one, two):
        print(f"{side['workers']} worker(s): {side['trials']} trials in {side['trial_span_seconds']:.0f} s "
              f"= {side['trials_per_hour']:.1f} trials/hour (wall clock {side['wall_seconds']:.0f} s)")
    ratio = two["trials_per_hour"] / one["trials_per_hour"]
    print(f"ratio (2 workers / 1 worker, trials per hour): {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"one": one, "two": two, "ratio": round(ratio, 3),
                                               "load_average_at_end": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
