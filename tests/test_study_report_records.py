import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from fake_study import CURVES, write_fake_study
from mnist_ops.errors import UserError
from mnist_ops.study_report.records import pooled_markdown, records_markdown, seed_ranges
from mnist_ops.study_report.stats import share_interval

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
    for bar in ("nan", "101"):
        refused = subprocess.run([sys.executable, str(SCRIPT), "--bar", bar, str(fake_study)], capture_output=True,
                                 text=True)
        assert refused.returncode == 2
        assert f"--bar must be a percentage from 0 to 100, got {float(bar)}" in refused.stderr


def test_the_script_says_nothing_more_when_its_reader_leaves(fake_study):
    """`records.py ... | head` ended in a BrokenPipeError traceback (a review)."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(fake_study)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader is gone before the script prints
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 1 and stderr == ""


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


def test_pooled_studies_of_one_recipe_count_every_seed_with_an_exact_interval(tmp_path):
    first = write_fake_study(tmp_path / "first", {"bn": CURVES["bn"]})  # seeds 1-3: 1 and 2 hold 99.4%
    more = write_fake_study(tmp_path / "more", {"bn": [[98.9, 99.5, 99.6], [98.9, 99.41, 99.39]]}, seeds=(4, 5))
    line = pooled_markdown([first, more])
    low, high = share_interval(3, 5)
    last_two = [value for curve in CURVES["bn"] for value in curve[-2:]] + [99.5, 99.6, 99.41, 99.39]
    assert line == (f"**Pooled over 2 studies** (seed-lean-bn, seeds 1-5): held ≥ 99.4% in each of the last "
                    f"2 epochs on 3 of 5 seeds; test % in those epochs {statistics.mean(last_two):.2f} ± "
                    f"{statistics.stdev(last_two):.2f} (min 99.20). The chance that a new seed holds it: "
                    f"95% interval {low * 100:.1f}-{high * 100:.1f}% (Clopper-Pearson).")
    assert "on 2 of 5 seeds" in pooled_markdown([first, more], bar=99.45)  # seeds 2 and 4


def test_a_pool_whose_every_run_diverged_counts_them_all_as_misses(tmp_path):
    import shutil

    study = write_fake_study(tmp_path / "study", {"bn": CURVES["bn"]})
    for seed in (1, 2, 3):
        shutil.rmtree(study / "bn" / f"seed{seed}")
        (study / "bn" / f"seed{seed}").mkdir()
        (study / "bn" / f"seed{seed}" / "diverged.json").write_text(json.dumps({"seed": seed, "diverged": "nan"}))
    line = pooled_markdown([study])
    assert "on 0 of 3 seeds; every run diverged." in line and "interval 0.0-70.8%" in line


@pytest.mark.parametrize("successes, trials, low, high", [
    (14, 15, 0.6805, 0.9983), (0, 3, 0.0, 0.7076), (5, 5, 0.4782, 1.0), (1, 2, 0.0126, 0.9874)])
def test_the_share_interval_is_clopper_pearsons(successes, trials, low, high):
    """Values from the beta quantiles by hand: 5 of 5 gives a low end of 0.025 ** (1 / 5)."""
    assert share_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


def test_all_of_n_has_a_closed_form_low_end():
    assert share_interval(5, 5)[0] == pytest.approx(0.025 ** (1 / 5))


def test_pooling_two_recipes_or_one_seed_twice_is_refused(tmp_path):
    bn = write_fake_study(tmp_path / "bn", {"bn": CURVES["bn"]})
    plain = write_fake_study(tmp_path / "plain", {"plain": CURVES["plain"]}, seeds=(4, 5, 6))
    with pytest.raises(UserError, match=r"differ in model \('seed-lean-bn' against 'seed-lean-plain'\); "
                                        "pool only runs of one recipe"):
        pooled_markdown([bn, plain])
    again = write_fake_study(tmp_path / "again", {"bn": CURVES["bn"]}, seeds=(3, 4, 5))
    with pytest.raises(UserError, match="seed.s. 3 appear in more than one run"):
        pooled_markdown([bn, again])
    other_k = write_fake_study(tmp_path / "other_k", {"bn": CURVES["bn"]}, seeds=(7, 8, 9), last_k=3)
    with pytest.raises(UserError, match="judged on the same epochs"):
        pooled_markdown([bn, other_k])
    higher = write_fake_study(tmp_path / "higher", {"bn": CURVES["bn"]}, seeds=(13, 14, 15))
    spec = (higher / "spec.toml").read_text()
    assert "target_accuracy = 99.4" in spec
    (higher / "spec.toml").write_text(spec.replace("target_accuracy = 99.4", "target_accuracy = 99.5"))
    with pytest.raises(UserError, match=r"target 99.5%.*give the bar to count against with --bar"):
        pooled_markdown([bn, higher])
    assert "held ≥ 99.4% in each of the last 2 epochs on 4 of 6 seeds" in pooled_markdown([bn, higher], bar=99.4)
    both = write_fake_study(tmp_path / "both", seeds=(10, 11, 12))  # 'plain' and 'bn' in one study
    with pytest.raises(UserError, match="pool only runs of one recipe"):
        pooled_markdown([both])


def test_the_script_adds_the_pooled_line_with_pool(tmp_path):
    first = write_fake_study(tmp_path / "first", {"bn": CURVES["bn"]})
    more = write_fake_study(tmp_path / "more", {"bn": CURVES["bn"]}, seeds=(4, 5, 6))
    done = subprocess.run([sys.executable, str(SCRIPT), "--pool", str(first), str(more)], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout == "\n\n".join([records_markdown(first), records_markdown(more), pooled_markdown([first, more])]) + "\n"
    refused = subprocess.run([sys.executable, str(SCRIPT), "--pool", str(first), str(first)], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1


@pytest.mark.parametrize("seeds, text", [([3, 1, 2], "1-3"), ([1, 2, 3, 5, 11, 12], "1-3, 5, 11-12"), ([7], "7"),
                                         ([4, 9], "4, 9")])
def test_pooled_seeds_are_written_as_ranges(seeds, text):
    assert seed_ranges(seeds) == text


def test_two_studies_on_the_same_seeds_are_paired_seed_by_seed(tmp_path):
    from mnist_ops.study_report.records import paired_markdown
    from mnist_ops.study_report.stats import paired_interval

    plain = write_fake_study(tmp_path / "plain", {"plain": CURVES["plain"]})
    bn = write_fake_study(tmp_path / "bn", {"bn": CURVES["bn"]})
    markdown = paired_markdown(plain, bn, bar=99.4)
    first, second = ([min(curve[-2:]) for curve in CURVES[name]] for name in ("plain", "bn"))
    interval = paired_interval(first, second)
    assert markdown.startswith(f"**bn minus plain**, minimum test % over the last 2 epochs, seeds 1-3: "
                               f"{interval.difference:+.3f} points, paired 95% interval {interval.low:+.3f} to "
                               f"{interval.high:+.3f} over 3 seeds: a real difference. Held ≥ 99.4%: 0 and 2 of 3 seeds.")
    assert "| 3 | 98.10 | 99.20 | +1.10 |" in markdown  # plain's seed 3 ends 98.1, 98.4; bn's 99.2, 99.3


def test_a_pair_that_differs_by_the_same_amount_on_every_seed_gets_no_interval(tmp_path):
    from mnist_ops.study_report.records import paired_markdown

    plain = write_fake_study(tmp_path / "plain", {"plain": CURVES["plain"]})
    # the fake study's other variant (bn), given plain's curves 0.01 points higher
    shifted = write_fake_study(tmp_path / "shifted", {"bn": [[value + 0.01 for value in curve]
                                                         for curve in CURVES["plain"]]})
    markdown = paired_markdown(plain, shifted, bar=99.4)
    assert "seeds 1-3: +0.010 points on each of the 3 seeds: no spread, so no interval." in markdown.splitlines()[0], \
        markdown


def test_pairing_other_seeds_or_a_study_of_two_variants_is_refused_in_one_line(tmp_path):
    plain = write_fake_study(tmp_path / "plain", {"plain": CURVES["plain"]})
    later = write_fake_study(tmp_path / "later", {"bn": CURVES["bn"]}, seeds=(4, 5, 6))
    both = write_fake_study(tmp_path / "both")
    higher = write_fake_study(tmp_path / "higher", {"bn": CURVES["bn"]})
    spec = (higher / "spec.toml").read_text()
    (higher / "spec.toml").write_text(spec.replace("target_accuracy = 99.4", "target_accuracy = 99.5"))
    for studies, problem in [([plain, higher], "give the bar to count against with --bar"),
                             ([plain, later], "pair studies with the same finished seeds"),
                             ([plain, both], "holds 2 variants; pair studies of one variant each"),
                             ([plain], "--paired takes exactly two study directories")]:
        refused = subprocess.run([sys.executable, str(SCRIPT), "--paired", *map(str, studies)],
                                 capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1
        assert problem in refused.stderr


def test_a_run_shorter_than_last_k_is_shown_with_the_epochs_it_has(tmp_path):
    """A quick check of a long study (--epochs 1): its 2-epoch runs, last_k 5. The table drew 5 epoch columns' separator
    under 2 epoch columns, and the line said "the last 5 epochs"."""
    from mnist_ops.study_report.load import load_study
    from mnist_ops.study_report.tables import generalization_table

    study = write_fake_study(tmp_path / "study", curves={"bn": [[98.0, 99.5], [98.5, 99.6]]}, seeds=(1, 2), last_k=5)
    bn = block(records_markdown(study), "bn")
    assert "test % in the last 2 epochs of 2 seeds" in bn
    assert "| seed | epoch 0 | epoch 1 | min |\n|---:|---:|---:|---:|\n" in bn
    spec, variants, _ = load_study(study)
    header = generalization_table(variants, spec).header
    assert header[-1] == "Held ≥ 99.4% in each of the last 5 epochs (every epoch of a shorter run)"
