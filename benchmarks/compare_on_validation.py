"""Compare recipes on the validation split over several seeds, never reading the test set.

Each arm is a name and `mnist-ops train` flags; every arm trains every seed with `--validation N`,
one thread per run, `--jobs` runs at a time. Then one table: per seed, the minimum validation
accuracy over the last K epochs (what a record is judged on), and per arm its mean over seeds; then
each arm against the first with a paired 95% t interval over the seeds.
A finished run (its NAME-seedS.done marker) is read, not retrained, and a stopped one is resumed
(`mnist-ops train --resume`), so a stopped comparison picks up where it was. A run found under an
arm's name must have trained that arm's recipe (its config.toml against the flags given, the device
aside): one that differs stops the comparison with one line naming the keys, so an arm renamed or
edited between invocations never mixes two recipes in one row. `--report-only` trains nothing.

    python benchmarks/compare_on_validation.py --out /work/runs/val-5k --seeds 1 2 3 4 \\
        --arm lean-5k="--preset lean-5k --ema 0" --arm lean-5k-ema="--preset lean-5k --ema 0.999" \\
        -- --precision bf16 --channels-last

(Flags after `--` go to every arm; `--report-only` prints the table from finished runs; `--by-epoch` adds each
arm's mean over the seeds after every epoch; `--bar 99.4` adds
each arm's first epoch at or above that validation accuracy, per seed: how early a race recipe gets there.) A study
(`mnist-ops study`) judges on the test set, so it cannot do this; `mnist-ops tune` searches a space
rather than comparing fixed arms.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mnist_ops.fileio import read_jsonl


class RunFailed(Exception):
    """A training run exited non-zero (its log's last line says why), or is missing under --report-only."""


def recipe_differences(directory: Path, flags: list[str], seed: int, validation: int) -> list[str]:
    """The config keys on which the run in `directory` differs from what `flags` ask for (none: same recipe).
    A key the run's config.toml lacks was added to Config later: that run had its default."""
    from mnist_ops.cli import build_parser, train_config
    from mnist_ops.config import changed_keys, stored_table
    from mnist_ops.fileio import read_toml

    arguments = build_parser().parse_args(["train", *flags, "--seed", str(seed), "--validation", str(validation)])
    asked = train_config(arguments).to_dict()
    ran = stored_table(read_toml(directory / "config.toml"))
    return [f"{key} ({ran.get(key)!r}, the arm asks {asked[key]!r})" for key in changed_keys(ran, asked, {"device"})]


def check_recipe(directory: Path, flags: list[str], seed: int, validation: int) -> None:
    """RunFailed if a run already in `directory` trained another recipe than `flags` make."""
    from mnist_ops.errors import UserError

    if not (directory / "config.toml").is_file():
        return
    try:
        differ = recipe_differences(directory, flags, seed, validation)
    except UserError as error:
        raise RunFailed(f"{directory.name}: the arm's flags do not make a config: {error}") from None
    if differ:
        raise RunFailed(f"{directory} trained another recipe than its arm's flags: {', '.join(differ)}; "
                        "give the arm a new name or use another --out")


def train(directory: Path, flags: list[str], seed: int, validation: int, report_only: bool) -> Path:
    marker = directory.parent / f"{directory.name}.done"
    if marker.is_file():
        return directory
    if report_only:
        raise RunFailed(f"{directory} is not finished ({marker.name} is missing): run without --report-only to train it")
    if (directory / "config.toml").is_file():  # stopped part-way: train's own resume goes on from its last.pt
        command = [sys.executable, "-m", "mnist_ops", "train", "--resume", str(directory), "--no-progress"]
    else:
        command = [sys.executable, "-m", "mnist_ops", "train", *flags, "--seed", str(seed),
                   "--validation", str(validation), "--out", str(directory), "--no-progress"]
    directory.parent.mkdir(parents=True, exist_ok=True)
    log_path = directory.parent / f"{directory.name}.log"
    with open(log_path, "a") as log:  # a resumed run's log goes on
        print("$", shlex.join(command), flush=True)
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    if code != 0:
        last = log_path.read_text().strip().splitlines()[-1:] or [""]
        raise RunFailed(f"{directory.name} failed (exit {code}): {last[0]}")
    marker.touch()
    return directory


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=FLAGS")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--validation", type=int, default=10000)
    parser.add_argument("--last-k", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true", help="print the table of finished runs, train nothing")
    parser.add_argument("--bar", type=float, help="also print each run's first epoch (from 0) at or above this "
                                                  "validation accuracy (%%)")
    parser.add_argument("--by-epoch", action="store_true", help="also print each arm's mean validation accuracy "
                                                                "over the seeds after every epoch")
    args = parser.parse_args(argv)
    if any("=" not in arm for arm in args.arm):
        parser.error("each --arm is NAME=FLAGS, e.g. --arm lean-5k-ema=\"--preset lean-5k --ema 0.999\"")
    arms = dict(arm.split("=", 1) for arm in args.arm)
    if len(arms) < len(args.arm) or len(set(args.seeds)) < len(args.seeds):
        parser.error("each arm name and each seed may be given once")
    if min(args.validation, args.last_k, args.jobs) < 1:
        parser.error("--validation, --last-k and --jobs must be at least 1")

    runs = [(name, seed) for seed in args.seeds for name in arms]  # seed-major: every arm advances together
    try:  # every run already there is checked before any trains: a refusal costs no training
        for name, seed in runs:
            check_recipe(args.out / f"{name}-seed{seed}", shlex.split(arms[name]) + common, seed, args.validation)
    except RunFailed as error:
        print(f"compare_on_validation: {error}", file=sys.stderr)
        sys.exit(2)
    with ThreadPoolExecutor(args.jobs) as pool:
        try:
            directories = list(pool.map(
                lambda run: train(args.out / f"{run[0]}-seed{run[1]}", shlex.split(arms[run[0]]) + common,
                                  run[1], args.validation, args.report_only), runs))
        except RunFailed as error:
            pool.shutdown(cancel_futures=True)
            print(f"compare_on_validation: {error}", file=sys.stderr)
            sys.exit(2)

    lows, curves = {name: {} for name in arms}, {name: {} for name in arms}
    for (name, seed), directory in zip(runs, directories):
        curves[name][seed] = [record["val_accuracy"] for record in read_jsonl(directory / "metrics.jsonl")]
        lows[name][seed] = min(curves[name][seed][-args.last_k:])
    shortest = min(len(curve) for arm in curves.values() for curve in arm.values())
    over = (f"the last {args.last_k} epochs" if shortest >= args.last_k else  # said "last 5" of 2 epochs (a review)
            f"the last {args.last_k} epochs, or all of a run's {shortest} where it has fewer")
    print(f"\nminimum validation accuracy (%) over {over}, {args.validation:,} held-out images")
    print("| arm | " + " | ".join(f"seed {seed}" for seed in args.seeds) + " | mean | min |")
    print("|---|" + "---:|" * (len(args.seeds) + 2))
    for name, by_seed in lows.items():
        values = [by_seed[seed] for seed in args.seeds]
        print(f"| {name} | " + " | ".join(f"{value:.2f}" for value in values)
              + f" | {statistics.mean(values):.3f} | {min(values):.2f} |")
    print(paired_lines(lows, args.seeds))
    if args.bar is not None:
        print(crossing_lines(curves, args.seeds, args.bar))
    if args.by_epoch:
        print(epoch_means_table(curves, args.seeds))


def epoch_means_table(curves: dict[str, dict[int, list[float]]], seeds: list[int]) -> str:
    """Per arm, the mean over the seeds of the validation accuracy after each epoch (the epochs all seeds ran)."""
    epochs = min(len(by_seed[seed]) for by_seed in curves.values() for seed in seeds)
    lines = [f"\nmean validation accuracy (%) over {len(seeds)} seeds after each epoch",
             "| arm | " + " | ".join(str(epoch) for epoch in range(epochs)) + " |", "|---|" + "---:|" * epochs]
    for name, by_seed in curves.items():
        means = [statistics.mean(by_seed[seed][epoch] for seed in seeds) for epoch in range(epochs)]
        lines.append(f"| {name} | " + " | ".join(f"{mean:.2f}" for mean in means) + " |")
    return "\n".join(lines)


def crossing_lines(curves: dict[str, dict[int, list[float]]], seeds: list[int], bar: float) -> str:
    """Per arm, each seed's first epoch (from 0) at or above `bar`, and their mean over the seeds that got there."""
    lines = [f"\nfirst epoch (from 0) at or above {bar:.2f}% validation accuracy:"]
    for name, by_seed in curves.items():
        firsts = [next((epoch for epoch, value in enumerate(by_seed[seed]) if value >= bar), None) for seed in seeds]
        reached = [first for first in firsts if first is not None]
        mean = f"mean {statistics.mean(reached):.3f} over {len(reached)} of {len(seeds)} seeds" if reached else "none"
        lines.append(f"- {name}: " + ", ".join("never" if first is None else str(first) for first in firsts)
                     + f" ({mean})")
    return "\n".join(lines)


def paired_lines(lows: dict[str, dict[int, float]], seeds: list[int]) -> str:
    """Each arm against the first, seed by seed: the mean difference and its paired 95% t interval. Both arms
    of a seed start from the same weights and draw the same batches, so the seed's luck largely cancels."""
    from mnist_ops.study_report.stats import paired_interval

    names = list(lows)
    base = [lows[names[0]][seed] for seed in seeds]
    lines = [f"\neach arm minus {names[0]}, seed by seed (points; paired t, 95%):"]
    for name in names[1:]:
        interval = paired_interval(base, [lows[name][seed] for seed in seeds])
        if interval is None:
            lines.append(f"- {name}: one seed, no interval")
            continue
        if interval.without_spread:
            lines.append(f"- {name}: {interval.without_spread_phrase(len(seeds))}")
            continue
        lines.append(f"- {name}: {interval.difference:+.3f}, from {interval.low:+.3f} to {interval.high:+.3f} "
                     f"over {len(seeds)} seeds: {interval.verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more (a traceback before: a review)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
