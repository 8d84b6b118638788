from pathlib import Path

from mnist_ops.study import parse_spec
from mnist_ops.study_report.load import Run, VariantResult
from mnist_ops.study_report.tables import (context_lines, describe_first_epoch, generalization_table, interval_note,
                                           observations, per_epoch_table, plural, signed)


def record(epoch, train, test):
    return {"epoch": epoch, "train_accuracy": train, "test_accuracy": test, "train_loss": 0.03, "test_loss": 0.02}


def variant(name, *curves):
    """curves: per seed, a list of (train, test) accuracy pairs per epoch."""
    runs = [Run(seed, [record(e, tr, te) for e, (tr, te) in enumerate(curve)], {"seconds": 60.0}, Path("."))
            for seed, curve in enumerate(curves, start=1)]
    return VariantResult(name, {}, runs)  # a config of its own: a test may set keys


def test_observations_say_so_when_no_variant_overfits_with_a_positive_distance():
    text = observations([variant("a", [(99.0, 99.5)], [(99.0, 99.5)]),
                         variant("b", [(80.0, 89.31)], [(80.0, 89.31)])])
    assert "No variant overfits at the end" in text
    assert "stays below mean test accuracy in every variant, by at least 0.50 pp (a)." in text
    assert "-0.50" not in text and "overfits most" not in text and "In " not in text


def test_observations_count_the_runs_whose_own_gap_the_means_hide():
    """An audit's study: one seed's train accuracy ended 4.63 pp above its test accuracy, and the sentence said
    train stayed below test "in every variant, by at least 0.25 pp", from the means."""
    text = observations([variant("a", [(71.0, 66.37)], [(60.0, 70.0)], [(60.0, 70.0)])])
    assert "on average over its seeds" in text and "by at least 5.12 pp (a)" in text  # 63.67 against 68.79
    assert "In 1 of the 3 runs train accuracy did end above test accuracy, by up to 4.63 pp." in text


def test_a_loss_gap_with_label_smoothing_in_the_train_loss_is_not_shown():
    """Label smoothing 0.02 puts a floor of about 0.14 under the train loss, which the test loss (cross-entropy) does
    not have: the gap column read -0.16 for a net that fit well, and the sentence quoted it."""
    smoothed = variant("smoothed", [(99.9, 98.4)])
    smoothed.config.update(label_smoothing=0.02)
    spec = parse_spec({"name": "s", "seeds": 1, "variant": [{"name": "a", "preset": "lean-8k"}]}, "s.toml")
    table = generalization_table([smoothed, variant("plain", [(99.0, 98.75)])], spec)
    assert [row[2] for row in table.rows] == ["n/a (label smoothing in the train loss)", "-0.0100"]
    text = observations([smoothed, variant("plain", [(99.0, 98.75)])])
    assert "smoothed overfits most: at the end its mean train accuracy exceeds its mean test accuracy by 1.50 pp, " in text


def test_observations_name_the_variant_that_overfits_most():
    text = observations([variant("a", [(99.9, 98.4)]), variant("b", [(99.0, 98.75)])])
    assert "a overfits most: at the end its mean train accuracy exceeds its mean test accuracy by 1.50 pp" in text
    assert "against +0.25 pp for b" in text
    assert "with a single seed there is no spread" in text


def test_a_variant_at_chance_is_said_not_to_learn_and_is_left_out_of_the_overfitting_sentence():
    # a 1-epoch look at an EMA recipe: the trained weights fit 35%, the lagging average tests at chance
    text = observations([variant("rotation", [(35.0, 9.6)]), variant("plain", [(36.0, 10.5)]),
                         variant("seed", [(90.0, 95.0)])])
    assert "rotation did not learn: its mean last test accuracy is 9.60%" in text
    assert "plain did not learn" in text and "overfits most" not in text  # once "rotation overfits most ... 25.40 pp"
    assert "No variant overfits at the end" in text and "by at least 5.00 pp (seed)" in text
    only_chance = observations([variant("rotation", [(35.0, 9.6)])])
    assert "overfit" not in only_chance and "rotation did not learn" in only_chance


def test_per_epoch_table_is_headed_by_the_epochs_of_metrics_jsonl():
    table = per_epoch_table([variant("a", [(90, 97.0), (95, 98.0)], [(90, 97.5), (95, 98.25)])])
    assert table.header == ["Variant", "Seed", "0", "1"]
    assert table.rows == [["a", "1", "97.00", "98.00"], ["a", "2", "97.50", "98.25"]]
    shorter = per_epoch_table([variant("a", [(90, 97.0), (95, 98.0), (96, 98.5)]), variant("b", [(90, 96.0)])])
    assert shorter.header == ["Variant", "Seed", "0", "1", "2"]
    assert shorter.rows == [["a", "1", "97.00", "98.00", "98.50"], ["b", "1", "96.00", "", ""]]  # not ragged


def test_the_last_epochs_column_pools_every_seeds_last_k_epochs():
    spec = parse_spec({"name": "s", "seeds": 2, "last_k": 2, "target_accuracy": 99.4,
                       "variant": [{"name": "a", "preset": "lean-8k"}]}, "s.toml")
    runs = variant("a", [(0, 99.9), (0, 99.4), (0, 99.6)], [(0, 99.0), (0, 99.5), (0, 99.3)])
    table = generalization_table([runs], spec)
    assert table.header[-2] == "Test % in the last 2 epochs, every seed (mean ± std, min)"
    # 99.4, 99.6, 99.5, 99.3: mean 99.45, sample std 0.129; epoch 0 (99.9) is not among the last 2
    assert table.rows[0][-2] == "99.45 ± 0.13 (min 99.30)"
    assert table.rows[0][-1] == "1/2 seeds"


def test_first_epoch_at_a_threshold_is_averaged_over_the_seeds_that_reached_it():
    runs = variant("a", [(0, 98.0), (0, 99.1)], [(0, 99.2), (0, 99.3)], [(0, 97.0), (0, 98.0)]).runs
    assert describe_first_epoch(runs, 99.0) == "0.5 (1 of 3 never)"
    assert describe_first_epoch(runs, 99.9) == "never"


def test_plural_and_signed():
    assert [plural(1, "epoch"), plural(3, "epoch"), plural(1200, "run")] == ["1 epoch", "3 epochs", "1,200 runs"]
    assert [signed(-0.0001), signed(0.52), signed(-0.02), signed(-0.0003, 4)] == ["+0.00", "+0.52", "-0.02", "-0.0003"]


def test_context_lines_say_1_epoch_and_the_code_version():
    spec = parse_spec({"name": "s", "seeds": 1, "variant": [{"name": "a", "preset": "seed-lean", "epochs": 1}]},
                      "s.toml")
    one = VariantResult("a", spec.variants[0].config.to_dict(), variant("a", [(90, 97.0)]).runs)
    info = {"command": "mnist-ops study x", "machine": {"code_version": "v0.1-3-gabc1234"},
            "invocations": [{"seconds": 90.0, "completed": True}]}
    lines = context_lines(spec, [one], info, 10_000)
    recipe = next(line for line in lines if line.startswith("Recipe:"))
    assert recipe.endswith("batch 128, 1 epoch (numbered from 0)")
    assert "Code: v0.1-3-gabc1234" in lines
    assert lines[-1] == "Total time: 1.0 min of training over 1 run (1.5 min wall clock over 1 invocation(s))"


def test_machine_and_code_lines_come_from_each_runs_environment():
    spec = parse_spec({"name": "s", "seeds": 3, "variant": [{"name": "a", "preset": "seed-lean", "epochs": 1}]},
                      "s.toml")
    runs = variant("a", [(90, 97.0)], [(90, 97.0)], [(90, 97.0)]).runs
    runs = [Run(run.seed, run.records, run.summary, run.directory, environment)
            for run, environment in zip(runs, [{"code_version": "0.1.0 (aaa)", "threads": 1, "torch": "2.13.0"},
                                               {"code_version": "0.1.0 (bbb)", "threads": 1, "torch": "2.13.0"},
                                               {}])]  # the third recorded nothing: study.json's machine stands in
    info = {"machine": {"cpu": "AMD EPYC", "cores": 2, "code_version": "0.1.0 (bbb)", "threads": 1,
                        "torch": "2.13.0"}, "invocations": []}
    lines = context_lines(spec, [VariantResult("a", spec.variants[0].config.to_dict(), runs)], info, 10_000)
    assert "Machine: AMD EPYC (2 cores), torch 2.13.0, 1 thread per run" in lines
    assert "Code: 0.1.0 (aaa) (1 run), 0.1.0 (bbb) (2 runs)" in lines
    info["machine"]["threads"] = 2  # the report built where two threads ran, the runs' own record says 1
    runs[2] = Run(3, runs[2].records, runs[2].summary, runs[2].directory, {"threads": 2})
    lines = context_lines(spec, [VariantResult("a", spec.variants[0].config.to_dict(), runs)], info, 10_000)
    assert any(line.endswith("threads per run: 1 (2 runs), 2 (1 run)") for line in lines)


def test_the_interval_note_counts_the_finished_seeds_not_the_planned_ones():
    three, two = variant("a", [(90, 97)], [(90, 97)], [(90, 97)]), variant("b", [(90, 97)], [(90, 97)])
    assert "over 3 seeds per variant, which" in interval_note([three, three], planned=3)
    assert ("over 2 to 3 seeds per variant (the study plans 3; to finish it, run `mnist-ops study --spec spec.toml "
            "--out .` in the study's directory, with its --storage if it ran on one)") in \
        interval_note([three, two], planned=3)
    one = variant("c", [(90, 97)])
    assert interval_note([one, one], planned=3).startswith("With 1 seed per variant (the study plans 3;")
    two_and_diverged = VariantResult("d", {}, two.runs, {3: "loss nan"})  # rerunning would not add seed 3
    assert "over 2 to 3 seeds per variant (the study plans 3; the others diverged)" in \
        interval_note([three, two_and_diverged], planned=3)


def test_the_recipe_line_names_the_ema_cycles_plain_epochs_crops_precise_bn_sam_label_smoothing_and_distillation_when_used():
    from mnist_ops.study_report.tables import recipe_extras

    spec = parse_spec({"name": "s", "seeds": 1, "variant": [
        {"name": "a", "preset": "seed-lean"},
        {"name": "b", "preset": "lean-8k", "label_smoothing": 0.1, "teacher": "/t/a.pt,/t/b.pt", "distill_weight": 0.5,
         "plain_epochs": 2, "epochs": 16, "cycles": 2, "precise_bn": 5120},
        {"name": "c", "preset": "seed-lean", "model": "fast-8k", "dropout": 0.0, "train_crop": 24},
    ]}, "s.toml")
    plain, other, cropped = (variant.config.to_dict() for variant in spec.variants)
    assert recipe_extras([plain]) == ""
    assert recipe_extras([plain, cropped]) == "; augmented epochs on random 0 / 24-pixel crops (0: whole images)"
    assert recipe_extras([plain, {**plain, "sam": 0.05}]) == "; sharpness-aware minimization (SAM), rho 0 / 0.05"
    assert recipe_extras([plain, other]) == ("; EMA of the weights 0 / 0.999; 1 / 2 OneCycle cycles (warm restarts); "
                                             "the last 0 / 2 epoch(s) without "
                                             "augmentation; BatchNorm statistics recomputed over 0 / 5,120 plain "
                                             "training images before each evaluation (precise BN); "
                                             "label smoothing 0 / 0.1; distilled from "
                                             "0 / 2 teacher(s) (weight 0 / 0.5, temperature 4)")
    stored_before_the_keys = {key: value for key, value in other.items()
                              if key not in ("teacher", "distill_weight", "distill_temperature", "label_smoothing",
                                             "plain_epochs", "cycles", "precise_bn", "train_crop", "sam")}
    assert recipe_extras([stored_before_the_keys]) == "; EMA of the weights 0.999"


def test_two_variants_whose_every_seed_ended_the_same_get_no_interval_and_no_verdict():
    from mnist_ops.study_report.stats import welch_interval
    from mnist_ops.study_report.tables import describe_interval, verdict

    constant = welch_interval([99.0, 99.0], [99.5, 99.5])  # a point: 4 seeds at 0.01-point steps can do this
    assert verdict(constant) == "cannot tell" and describe_interval(constant).startswith("none")
    spread = welch_interval([99.0, 99.1], [99.5, 99.6])
    assert verdict(spread) == "distinguishable from noise" and describe_interval(spread).startswith("+")


def test_the_interval_note_says_what_welch_ignores_and_warns_of_many_steps():
    two = [variant(name, [(90.0, 97.0)], [(90.0, 97.5)]) for name in "ab"]
    note = interval_note(two, 2)
    assert note.startswith("Intervals are Welch t intervals over 2 seeds per variant, which do not use that the "
                           "variants ran on the same seeds, and paired t intervals") and "Each of" not in note
    four = [variant(name, [(90.0, 97.0)], [(90.0, 97.5)]) for name in "abcd"]
    assert "Each of the 3 steps has its own 95% interval" in interval_note(four, 2)
    assert "about 14% of the time" in interval_note(four, 2)  # 1 - 0.95 ** 3


def test_a_step_gets_a_paired_interval_over_the_seeds_both_variants_ended_which_sees_what_welch_cannot():
    from mnist_ops.study_report.tables import comparison_table, paired_by_seed

    # seed luck of +-0.1 shared by both variants; the recipe adds 0.05 on every seed but one (0.04)
    before = variant("a", [(99.0, 99.30)], [(99.0, 99.50)], [(99.0, 99.40)])
    after = variant("b", [(99.0, 99.35)], [(99.0, 99.55)], [(99.0, 99.44)])
    interval, seeds = paired_by_seed(before, after)
    assert seeds == 3 and interval.excludes_zero and abs(interval.difference - 0.14 / 3) < 1e-9
    row = comparison_table([before, after]).rows[0]
    assert row[4] == "not distinguishable from noise"  # Welch: the seeds' spread swamps the step
    assert row[5].endswith("(3 seeds)") and row[6] == "distinguishable from noise"
    assert "seed by seed (paired 95% interval +" in observations([before, after])


def test_the_paired_interval_pairs_runs_by_seed_and_leaves_out_a_seed_one_variant_lacks():
    from mnist_ops.study_report.tables import comparison_table, paired_by_seed

    before = variant("a", [(99.0, 99.30)], [(99.0, 99.50)], [(99.0, 99.40)], [(99.0, 99.20)])
    after = variant("b", [(99.0, 99.35)], [(99.0, 99.54)], [(99.0, 99.45)])  # seeds 1-3: +0.05, +0.04, +0.05
    after.runs.reverse()  # the order runs are listed in must not matter: pairs are by seed
    interval, seeds = paired_by_seed(before, after)
    assert seeds == 3 and abs(interval.difference - 0.14 / 3) < 1e-9 and interval.excludes_zero  # not by place
    lone = variant("c", [(99.0, 99.3)])
    assert paired_by_seed(before, lone)[0] is None
    assert comparison_table([before, lone]).rows[0][5] == "n/a (1 seed in common; needs >= 2)"
