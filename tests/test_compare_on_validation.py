"""benchmarks/compare_on_validation.py over finished runs (no training): the table and the refusals."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_ops.presets import PRESETS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "compare_on_validation.py"
CURVES = {("a", 1): [99.0, 99.3, 99.5, 99.4], ("a", 2): [99.1, 99.2, 99.6, 99.7],
          ("b", 1): [98.0, 99.45, 99.46, 99.47], ("b", 2): [98.5, 99.1, 99.2, 99.3]}


def finished_runs(out: Path) -> Path:
    for (arm, seed), curve in CURVES.items():
        run = out / f"{arm}-seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i, "val_accuracy": value}) + "\n"
                                                   for i, value in enumerate(curve)))
        (out / f"{arm}-seed{seed}.done").touch()
    return out


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_table_holds_each_seeds_minimum_over_the_last_k_epochs_and_their_mean(tmp_path):
    out = finished_runs(tmp_path / "cmp")
    done = compare("--report-only", "--out", str(out), "--seeds", "1", "2", "--arm", "a=--x", "--arm", "b=--y")
    assert done.returncode == 0, done.stderr
    assert "| a | 99.30 | 99.20 | 99.250 | 99.20 |" in done.stdout  # min of (99.3, 99.5, 99.4), (99.2, 99.6, 99.7)
    assert "| b | 99.45 | 99.10 | 99.275 | 99.10 |" in done.stdout
    # b - a per seed: +0.15 and -0.10; mean +0.025, paired t (1 df, 12.706) * sd 0.1768 / sqrt 2 = 1.588
    assert ("- b: +0.025, from -1.563 to +1.613 over 2 seeds: not told apart from no difference"
            in done.stdout), done.stdout
    two = compare("--report-only", "--last-k", "2", "--out", str(out), "--seeds", "1", "--arm", "a=--x")
    assert two.returncode == 0 and "| a | 99.40 | 99.400 | 99.40 |" in two.stdout
    assert "over the last 2 epochs, 10,000 held-out images" in two.stdout
    more = compare("--report-only", "--last-k", "5", "--out", str(out), "--seeds", "1", "--arm", "a=--x")
    assert "over the last 5 epochs, or all of a run's 4 where it has fewer" in more.stdout  # once "the last 5"
    assert "| a | 99.00 | 99.000 | 99.00 |" in more.stdout


def test_the_script_says_nothing_more_when_its_reader_leaves(tmp_path):
    """`compare_on_validation.py ... | head` ended in a BrokenPipeError traceback (a review)."""
    out = finished_runs(tmp_path / "cmp")
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--report-only", "--out", str(out), "--seeds", "1", "2",
                                "--arm", "a=--x"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader is gone before the script prints
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 1 and stderr == ""


def test_by_epoch_prints_each_arms_mean_over_the_seeds_after_every_epoch(tmp_path):
    out = finished_runs(tmp_path / "cmp")
    done = compare("--report-only", "--by-epoch", "--out", str(out), "--seeds", "1", "2", "--arm", "a=--x",
                   "--arm", "b=--y")
    assert done.returncode == 0, done.stderr
    assert "| arm | 0 | 1 | 2 | 3 |" in done.stdout
    assert "| a | 99.05 | 99.25 | 99.55 | 99.55 |" in done.stdout  # (99.0 + 99.1) / 2, ...
    assert "| b | 98.25 | 99.28 | 99.33 | 99.38 |" in done.stdout  # 99.275 and 99.385 as floats print so


def test_the_same_difference_on_every_seed_gets_no_interval(tmp_path):
    out = finished_runs(tmp_path / "cmp")
    for seed, curve in ((1, [99.0, 99.31, 99.51, 99.41]), (2, [99.1, 99.21, 99.61, 99.71])):  # a + 0.01 everywhere
        (out / f"c-seed{seed}").mkdir()
        (out / f"c-seed{seed}" / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": i, "val_accuracy": value}) + "\n" for i, value in enumerate(curve)))
        (out / f"c-seed{seed}.done").touch()
    done = compare("--report-only", "--out", str(out), "--seeds", "1", "2", "--arm", "a=--x", "--arm", "c=--z")
    assert done.returncode == 0, done.stderr
    assert "- c: +0.010 points on each of the 2 seeds: no spread, so no interval" in done.stdout, done.stdout


def test_a_missing_or_failed_run_is_one_line_and_exit_2(tmp_path):
    out = finished_runs(tmp_path / "cmp")
    missing = compare("--report-only", "--out", str(out), "--seeds", "3", "--arm", "a=--x")
    assert missing.returncode == 2 and "a-seed3 is not finished" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    failed = compare("--out", str(tmp_path / "new"), "--seeds", "1", "--arm", "bad=--preset nope")  # refused at once
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip() == ("compare_on_validation: bad-seed1 failed (exit 2): mnist-ops: error: unknown "
                                     "preset 'nope'; choose one of: " + ", ".join(sorted(PRESETS)))
    assert not (tmp_path / "new" / "bad-seed1.done").exists()


@pytest.mark.parametrize("flags, problem", [
    (["--arm", "a"], "each --arm is NAME=FLAGS"),
    (["--arm", "a=--x", "--arm", "a=--y"], "each arm name and each seed may be given once"),
    (["--arm", "a=--x", "--seeds", "1", "1"], "each arm name and each seed may be given once"),
    (["--arm", "a=--x", "--last-k", "0"], "must be at least 1"),
    (["--arm", "a=--x", "--validation", "0"], "must be at least 1"),
])
def test_bad_arguments_are_refused_by_argparse_with_exit_2(tmp_path, flags, problem):
    refused = compare("--out", str(tmp_path / "cmp"), *flags)
    assert refused.returncode == 2 and problem in refused.stderr and not (tmp_path / "cmp").exists()


def test_a_run_of_another_recipe_under_an_arms_name_is_refused(tmp_path):
    """An arm edited between invocations would mix two recipes in one row: its old runs are checked."""
    from mnist_ops.config import to_toml
    from mnist_ops.presets import build_config

    out = finished_runs(tmp_path / "cmp")
    for seed in (1, 2):
        config = build_config("lean-5k", None, {"ema": 0.999, "seed": seed, "validation": 10000, "device": "cpu"})
        stored = {key: value for key, value in config.to_dict().items() if key != "interpolation"}  # older code's file
        (out / f"a-seed{seed}" / "config.toml").write_text(to_toml(stored))
    same = compare("--report-only", "--out", str(out), "--seeds", "1", "2", "--arm", "a=--preset lean-5k --ema 0.999")
    assert same.returncode == 0, same.stderr
    assert "| a | 99.30 | 99.20 | 99.250 | 99.20 |" in same.stdout
    edited = compare("--report-only", "--out", str(out), "--seeds", "1", "--arm", "a=--preset lean-5k --ema 0")
    assert edited.returncode == 2 and edited.stderr.count("\n") == 1
    assert "a-seed1 trained another recipe than its arm's flags: ema (0.999, the arm asks 0.0)" in edited.stderr
    newer = compare("--report-only", "--out", str(out), "--seeds", "1", "--arm",
                    "a=--preset lean-5k --ema 0.999 --interpolation bilinear")
    assert newer.returncode == 2 and "interpolation ('nearest', the arm asks 'bilinear')" in newer.stderr
    # Checked before anything trains: the new arm's seed 1 (listed first) is never started.
    first = compare("--out", str(out), "--seeds", "1", "--arm", "fresh=--preset lean-5k --epochs 1 --limit-train 100",
                    "--arm", "a=--preset lean-5k --ema 0")
    assert first.returncode == 2 and "a-seed1 trained another recipe" in first.stderr
    assert not (out / "fresh-seed1").exists() and "$" not in first.stdout


def test_bar_prints_each_seeds_first_epoch_at_or_above_it_and_their_mean(tmp_path):
    out = finished_runs(tmp_path / "cmp")
    done = compare("--report-only", "--out", str(out), "--seeds", "1", "2", "--arm", "a=--x", "--arm", "b=--y",
                   "--bar", "99.45")
    assert done.returncode == 0, done.stderr
    assert "- a: 2, 2 (mean 2.000 over 2 of 2 seeds)" in done.stdout, done.stdout  # 99.5 and 99.6 at epoch 2
    assert "- b: 1, never (mean 1.000 over 1 of 2 seeds)" in done.stdout  # 99.45 at epoch 1; seed 2 tops at 99.3
    assert "first epoch" not in compare("--report-only", "--out", str(out), "--seeds", "1", "--arm", "a=--x").stdout
