import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from fake_study import CURVES, write_fake_study
from mnist_ops.errors import UserError
from mnist_ops.study_report.records import records_markdown

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "records.py"


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    return write_fake_study(tmp_path_factory.mktemp("fake") / "study")


def block(markdown, variant):
    return next(part for part in markdown.split("\n\n**") if part.lstrip("*").startswith(f"{variant}**"))


def test_every_seed_and_each_of_the_last_k_epochs_with_the_seeds_that_held_the_bar(fake_study):
    markdown = records_markdown(fake_study)
    bn = block(markdown, "bn")
    last_two = [value for curve in CURVES["bn"] for value in curve[-2:]]
    assert (f"test % in the last 2 epochs of 3 seeds: {statistics.mean(last_two):.2f} ± "
            f"{statistics.stdev(last_two):.2f} (min {min(last_two):.2f})") in bn
    assert "held ≥ 99.4% on 2 of 3 seeds" in bn  # seed 3 ends 99.2, 99.3
    assert "| seed | epoch 1 | epoch 2 | min |" in bn
    for seed, curve in enumerate(CURVES["bn"], start=1):
        assert f"| {seed} | {curve[1]:.2f} | {curve[2]:.2f} | {min(curve[1:]):.2f} |" in bn
    assert "held ≥ 99.4% on 0 of 3 seeds" in block(markdown, "plain")


def test_another_bar_counts_the_seeds_against_it(fake_study):
    # plain's last two epochs: (97.8, 98.0), (98.0, 98.2), (98.1, 98.4)
    assert "held ≥ 98.0% on 2 of 3 seeds" in block(records_markdown(fake_study, bar=98.0), "plain")


def test_runs_ending_at_different_epochs_are_refused(tmp_path):
    curves = {"plain": CURVES["plain"][:2] + [CURVES["plain"][2] + [98.5]], "bn": CURVES["bn"]}
    study = write_fake_study(tmp_path / "study", curves)
    with pytest.raises(UserError, match="the runs of plain end at different epochs; finish the study first"):
        records_markdown(study)


def test_the_script_prints_the_tables_or_one_line_and_exit_2(fake_study, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(fake_study)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == records_markdown(fake_study) + "\n"
    failed = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1


def test_a_diverged_seed_counts_against_the_bar_and_is_named(tmp_path):
    import json
    import shutil

    study = write_fake_study(tmp_path / "study")
    shutil.rmtree(study / "bn" / "seed1")  # seed 1 held 99.4%; now it diverged instead
    (study / "bn" / "seed1").mkdir()
    (study / "bn" / "seed1" / "diverged.json").write_text(json.dumps({"seed": 1, "diverged": "loss nan at epoch 2"}))
    bn = block(records_markdown(study), "bn")
    assert "test % in the last 2 epochs of 2 seeds" in bn
    assert "held ≥ 99.4% on 1 of 3 seeds. Seed 1 diverged: loss nan at epoch 2." in bn
    assert "| 1 |" not in bn and "| 2 |" in bn
