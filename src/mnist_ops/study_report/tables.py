"""The report's tables and sentences, as text: every number formatted here, in one way.

Epochs are counted from 0 everywhere, as in metrics.jsonl and the console.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mnist_ops.config import Config, teacher_files
from mnist_ops.study import Spec
from mnist_ops.study_report.load import Run, VariantResult, first_epoch_reaching, held_target
from mnist_ops.study_report.render import Table
from mnist_ops.study_report.stats import Interval, paired_interval, welch_interval

THRESHOLDS = (99.0, 99.4)  # "first epoch at" columns
CHANCE_CEILING = 20.0  # percent: a variant ending at or below this did not learn (guessing gives 10%)


# ---------------------------------------------------------------------------- formatting

def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def signed(value: float, digits: int = 2) -> str:
    """'+0.52', '-0.02'; a value that rounds to zero prints as '+0.00', never '-0.00'."""
    return f"{value + 0.0 if round(value, digits) else 0.0:+.{digits}f}"


def plural(count: int | float, noun: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def mean_std_min(values: list[float], one: str = "1 seed") -> str:
    if len(values) == 1:
        return f"{percent(values[0])} ({one})"
    return f"{percent(float(np.mean(values)))} ± {percent(float(np.std(values, ddof=1)))} (min {percent(min(values))})"


def describe_first_epoch(runs: list[Run], threshold: float) -> str:
    """Mean over seeds of the first epoch at the threshold, and how many seeds never reached it."""
    reached = [first_epoch_reaching(run.records, threshold) for run in runs]
    epochs = [value for value in reached if value is not None]
    if not epochs:
        return "never"
    text = f"{np.mean(epochs):.1f}"
    missed = len(reached) - len(epochs)
    return text if missed == 0 else f"{text} ({missed} of {len(reached)} never)"


def describe_interval(interval: Interval | None) -> str:
    if interval is None:
        return "n/a (needs >= 2 seeds per variant)"
    if interval.without_spread:
        return "none (every seed of each variant ended the same)"
    return f"{signed(interval.low)} to {signed(interval.high)}"


def verdict(interval: Interval | None) -> str:
    if interval is None or interval.without_spread:
        return "cannot tell"
    return "distinguishable from noise" if interval.excludes_zero else "not distinguishable from noise"


def distinct(configs: list[dict], key: str) -> str:
    """The key's value, or its values joined by ' / ' when the variants differ in it."""
    values = sorted({config[key] for config in configs}, key=str)
    return " / ".join(f"{value:g}" if isinstance(value, float) else
                      f"{value:,}" if isinstance(value, int) else str(value) for value in values)


def mean_last_test(variant: VariantResult) -> float:
    return float(np.mean(variant.last_test()))


# ---------------------------------------------------------------------------- tables

def effective_dropout(config: dict) -> str:
    """The dropout the model really applies: some models ignore the config's dropout."""
    from torch import nn

    from mnist_ops.models import create_model

    model = create_model(config["model"], defaults={"dropout": config["dropout"]})
    rates = sorted({module.p for module in model.modules() if isinstance(module, nn.Dropout) and module.p > 0})
    return ", ".join(f"{rate:g}" for rate in rates) or "none"


def augment_label(config: dict) -> str:
    """The Augment column: the kind, and how many last epochs trained on plain images (a config stored
    before plain_epochs existed augmented every epoch)."""
    plain = config.get("plain_epochs", 0)
    return f"{config['augment']} (last {plain} plain)" if plain and config["augment"] != "none" else config["augment"]


def accuracy_table(variants: list[VariantResult], spec: Spec) -> Table:
    header = ["Variant", "Model", "Parameters", "Augment", "Dropout", "Best test % (mean ± std, min)",
              "Last test % (mean ± std, min)", "Last train % (mean ± std, min)", "Seeds"]
    rows = []
    for variant in variants:
        seeds = f"{len(variant.runs)} of {len(spec.seeds)}" + (f", {len(variant.diverged)} diverged"
                                                                 if variant.diverged else "")
        if not variant.runs:
            rows.append([variant.name, variant.config["model"], "", augment_label(variant.config),
                         effective_dropout(variant.config), "diverged", "diverged", "diverged", seeds])
            continue
        rows.append([variant.name, variant.config["model"], f"{variant.runs[0].summary['parameters']:,}",
                     augment_label(variant.config), effective_dropout(variant.config), mean_std_min(variant.best_test()),
                     mean_std_min(variant.last_test()), mean_std_min(variant.final("train_accuracy")), seeds])
    return Table(header, rows)


def diverged_note(variants: list[VariantResult]) -> str:
    runs = "; ".join(f"{variant.name} seed {seed}: {what}" for variant in variants
                     for seed, what in sorted(variant.diverged.items()))
    return (f"Diverged (the loss became NaN or infinite; a seeded run would diverge again, so it is not retried): "
            f"{runs}. These runs are left out of every mean and figure, and count as seeds that did not hold "
            "the target; a variant whose every run diverged is left out of the step comparison.")


def loss_not_comparable(variant: VariantResult) -> str | None:
    """Why the variant's train loss is not the cross-entropy its test loss is, or None: label smoothing and the
    teachers' term are in the loss it trains on (its floor, with smoothing 0.02, is about 0.14, not 0)."""
    config = variant.config
    if config.get("label_smoothing", 0.0) > 0:
        return "label smoothing"
    if config.get("teacher") and config.get("distill_weight", 0.0) > 0:
        return "distillation"
    return None


def generalization_table(variants: list[VariantResult], spec: Spec) -> Table:
    epochs = [len(run.records) for variant in variants for run in variant.runs]
    shorter = " (every epoch of a shorter run)" if epochs and min(epochs) < spec.last_k else ""
    header = ["Variant", "Gap at end: train − test acc (pp)", "Gap at end: test − train loss",
              *[f"First epoch ≥ {threshold}% (mean)" for threshold in THRESHOLDS],
              f"Test % in the last {plural(spec.last_k, 'epoch')}{shorter}, every seed (mean ± std, min)",
              f"Held ≥ {spec.target_accuracy}% in each of the last {plural(spec.last_k, 'epoch')}{shorter}"]
    rows = []
    for variant in variants:
        held = sum(held_target(run.records, spec.target_accuracy, spec.last_k) for run in variant.runs)
        if not variant.runs:
            rows.append([variant.name, *["diverged"] * (len(header) - 2), f"0/{variant.seeds_finished} seeds"])
            continue
        other_loss = loss_not_comparable(variant)
        rows.append([variant.name, signed(float(np.mean(variant.accuracy_gap()))),
                     f"n/a ({other_loss} in the train loss)" if other_loss else signed(float(np.mean(variant.loss_gap())), 4),
                     *[describe_first_epoch(variant.runs, threshold) for threshold in THRESHOLDS],
                     mean_std_min(variant.last_epochs_test(spec.last_k), one="1 epoch"),
                     f"{held}/{variant.seeds_finished} seeds"])
    return Table(header, rows)


def paired_by_seed(before: VariantResult, after: VariantResult) -> tuple[Interval | None, int]:
    """The paired t interval of after minus before over the seeds both trained to the end, and how many those are.
    A seed fixes the initial weights and the batch order, so two close variants can share each seed's luck, and
    their difference seed by seed then shows what the recipe change did. Measured here they sometimes do (lean-5k,
    gray or black rotation corners: the 8 seeds' accuracies correlate at 0.67) and sometimes do not (lean-8k, the
    same change: -0.02; docs/studies.md), so the report shows both intervals."""
    ended = {run.seed: run.last["test_accuracy"] for run in before.runs}
    pairs = [(ended[run.seed], run.last["test_accuracy"]) for run in after.runs if run.seed in ended]
    return paired_interval([first for first, _ in pairs], [second for _, second in pairs]), len(pairs)


def adjacent_intervals(variants: list[VariantResult]) -> list[tuple[VariantResult, VariantResult, Interval | None,
                                                                       tuple[Interval | None, int]]]:
    return [(before, after, welch_interval(before.last_test(), after.last_test()), paired_by_seed(before, after))
            for before, after in zip(variants, variants[1:])]


def describe_paired(paired: tuple[Interval | None, int]) -> str:
    interval, seeds = paired
    if interval is None:
        return f"n/a ({plural(seeds, 'seed')} in common; needs >= 2)"
    if interval.without_spread:
        return f"none ({interval.difference:+.2f} on each of the {seeds} seeds)"
    return f"{signed(interval.low)} to {signed(interval.high)} ({seeds} seeds)"


def comparison_table(variants: list[VariantResult]) -> Table:
    header = ["Step", "Δ mean last test acc (pp)", "95% interval (Welch)", "Welch df", "Verdict (Welch)",
              "95% interval (paired by seed)", "Verdict (paired)"]
    rows = []
    for before, after, interval, paired in adjacent_intervals(variants):
        difference = mean_last_test(after) - mean_last_test(before)
        degrees = "n/a" if interval is None else f"{interval.degrees_of_freedom:.1f}"
        rows.append([f"{after.name} vs {before.name}", signed(difference), describe_interval(interval), degrees,
                     verdict(interval), describe_paired(paired), verdict(paired[0])])
    return Table(header, rows)


def per_epoch_table(variants: list[VariantResult]) -> Table:
    """One row per run: its test accuracy (%) after each epoch, headed by the epoch numbers of metrics.jsonl."""
    longest = max((run for variant in variants for run in variant.runs), key=lambda run: len(run.records))
    width = len(longest.records)  # a variant of fewer epochs fills its row with "": rows were ragged (a review)
    rows = [[variant.name, str(run.seed), *(percent(record["test_accuracy"]) for record in run.records),
             *[""] * (width - len(run.records))] for variant in variants for run in variant.runs]
    return Table(["Variant", "Seed", *(str(record["epoch"]) for record in longest.records)], rows)


# ---------------------------------------------------------------------------- sentences

def overfitting_sentence(variants: list[VariantResult]) -> str:
    """From the means over seeds, as the table's gap column; the runs whose own gap says otherwise are counted."""
    gaps = {variant.name: float(np.mean(variant.accuracy_gap())) for variant in variants}
    loss_gaps = {variant.name: float(np.mean(variant.loss_gap())) for variant in variants}
    most, least = max(gaps, key=gaps.get), min(gaps, key=gaps.get)
    weights = " and the trained weights, not their average that the test reads" if any(
        variant.config.get("ema", 0.0) > 0 for variant in variants) else ""
    if gaps[most] <= 0:
        run_gaps = [gap for variant in variants for gap in variant.accuracy_gap()]
        above = [gap for gap in run_gaps if gap > 0]
        runs = (f" In {len(above)} of the {len(run_gaps)} runs train accuracy did end above test accuracy, by up "
                f"to {percent(max(above))} pp.") if above else ""
        return (f"No variant overfits at the end, on average over its seeds: mean train accuracy (measured with "
                f"dropout and augmentation on, but for any plain last epochs{weights}) stays below mean test accuracy "
                f"in every variant, by at least {percent(-gaps[most])} pp ({most}).{runs}")
    other_loss = loss_not_comparable(next(variant for variant in variants if variant.name == most))
    loss = "" if other_loss else f" (test − train loss {signed(loss_gaps[most], 4)})"
    sentence = (f"{most} overfits most: at the end its mean train accuracy exceeds its mean test accuracy by "
                f"{percent(gaps[most])} pp{loss}")
    if least != most:
        sentence += f", against {signed(gaps[least])} pp for {least}"
    return sentence + "."


def step_sentence(before: VariantResult, after: VariantResult, interval: Interval | None,
                  paired: tuple[Interval | None, int]) -> str:
    difference = mean_last_test(after) - mean_last_test(before)
    sentence = f"Going from {before.name} to {after.name} changed mean last test accuracy by {signed(difference)} pp"
    if interval is None:
        return sentence + "; with a single seed there is no spread to judge it against."
    sentence += f" (Welch 95% interval {describe_interval(interval)}): {verdict(interval)}"
    if paired[0] is None:
        return sentence + "."
    return sentence + f"; seed by seed (paired 95% interval {describe_paired(paired)}): {verdict(paired[0])}."


def observations(variants: list[VariantResult]) -> str:
    """Sentences generated from the numbers; each cites a value shown in the tables."""
    sentences = [f"{variant.name} did not learn: its mean last test accuracy is {percent(mean_last_test(variant))}%, "
                 "where guessing gives 10%." for variant in variants if mean_last_test(variant) <= CHANCE_CEILING]
    learned = [variant for variant in variants if mean_last_test(variant) > CHANCE_CEILING]
    if learned:  # a net at chance has no fit to compare (an EMA that lags its trained weights reads so, too)
        sentences.append(overfitting_sentence(learned))
    sentences += [step_sentence(*step) for step in adjacent_intervals(variants)]
    best = max(variants, key=mean_last_test)
    sentences.append(f"{best.name} ends highest, with a mean last test accuracy of {percent(mean_last_test(best))}%.")
    return " ".join(sentences)


def interval_note(variants: list[VariantResult], planned: int) -> str:
    """How many seeds the intervals rest on: the runs trained to the end. A study stopped partway has
    fewer (rerunning it trains them), and so does one with diverged runs (rerunning changes nothing)."""
    counts = sorted({len(variant.runs) for variant in variants})
    unfinished = ""
    if min(variant.seeds_finished for variant in variants) < planned:
        # the study's own spec.toml: the command of one invocation may name only some of its runs (a review)
        unfinished = (f" (the study plans {planned}; to finish it, run `mnist-ops study --spec spec.toml --out .` in "
                      "the study's directory, with its --storage if it ran on one)")
    elif counts[0] < planned:
        unfinished = f" (the study plans {planned}; the others diverged)"
    if counts[-1] < 2:
        return (f"With 1 seed per variant{unfinished} there is no spread to build an interval from: "
                "run with --seeds 3 or more.")
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    steps = len(variants) - 1
    several = (f" Each of the {steps} steps has its own 95% interval: with no real difference anywhere, some one of "
               f"them would exclude 0 by chance about {1 - 0.95 ** steps:.0%} of the time (were the steps "
               "independent).") if steps >= 3 else ""
    return (f"Intervals are Welch t intervals over {seeds} seeds per variant{unfinished}, which do not use that the "
            "variants ran on the same seeds, and paired t intervals over the seeds both variants of a step trained to "
            "the end, which do. A seed fixes the initial weights and the batch order: where two variants keep that "
            "seed's luck the paired interval is the narrower, and where training drifts apart anyway (another net, "
            "another precision) it tends to be the wider, with half the degrees of freedom. Choose the one you will "
            "read before you look: keeping whichever excludes 0 makes each 95% interval a weaker one. With so few "
            "seeds both are wide, and a step counts as distinguishable from noise only if its interval excludes "
            f"0.{several}")


def run_values(runs: list[Run], key: str, machine: dict) -> str:
    """The runs' own record of a key (environment.json), with how many runs had each value if they differ;
    study.json's machine (the last invocation's) for runs that recorded none."""
    counts = Counter(str(run.environment.get(key, machine.get(key, "not recorded"))) for run in runs)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({plural(count, 'run')})" for value, count in sorted(counts.items()))


def _interrupted(invocations: list[dict]) -> str:
    count = sum(entry.get("completed") is False for entry in invocations)
    return f", {count} of them interrupted" if count else ""


def recipe_extras(configs: list[dict]) -> str:
    """What else shapes the recipe, when some variant uses it: the EMA of the weights, cycles, plain last epochs,
    training crops, precise BN, SAM, label smoothing, distillation (a config stored before a key existed ran its default: off)."""
    filled = [{**Config().to_dict(), **config} for config in configs]
    for config in filled:
        config["teachers"] = len(teacher_files(config["teacher"]))
    parts = []
    if any(config["ema"] for config in filled):
        parts.append(f"EMA of the weights {distinct(filled, 'ema')}")
    if any(config["cycles"] > 1 for config in filled):
        parts.append(f"{distinct(filled, 'cycles')} OneCycle cycles (warm restarts)")
    if any(config["plain_epochs"] for config in filled):
        parts.append(f"the last {distinct(filled, 'plain_epochs')} epoch(s) without augmentation")
    if any(config["train_crop"] for config in filled):
        parts.append(f"augmented epochs on random {distinct(filled, 'train_crop')}-pixel crops (0: whole images)")
    if any(config["precise_bn"] for config in filled):
        parts.append(f"BatchNorm statistics recomputed over {distinct(filled, 'precise_bn')} plain training images "
                     "before each evaluation (precise BN)")
    if any(config["sam"] for config in filled):
        parts.append(f"sharpness-aware minimization (SAM), rho {distinct(filled, 'sam')}")
    if any(config["label_smoothing"] for config in filled):
        parts.append(f"label smoothing {distinct(filled, 'label_smoothing')}")
    if any(config["distill_weight"] for config in filled):
        parts.append(f"distilled from {distinct(filled, 'teachers')} teacher(s) (weight {distinct(filled, 'distill_weight')}, "
                     f"temperature {distinct(filled, 'distill_temperature')})")
    return "".join(f"; {part}" for part in parts)


def context_lines(spec: Spec, variants: list[VariantResult], info: dict, test_images: int) -> list[str]:
    """Command, data, recipe, seeds, machine, code and time: what the numbers depend on."""
    machine = info.get("machine", {})
    configs = [variant.config for variant in variants]
    train_images = [{"train_images": info.get("train_images", {}).get(variant.name, "?")} for variant in variants]
    runs = [run for variant in variants for run in variant.runs]
    training_minutes = sum(run.summary["seconds"] for run in runs) / 60
    invocations = info.get("invocations", [])
    wall_minutes = sum(entry["seconds"] for entry in invocations) / 60
    epochs = sorted({config["epochs"] for config in configs})
    threads = run_values(runs, "threads", machine)
    return [
        f"Command: `{info.get('command', 'unknown (study.json missing)')}`",
        f"Data: {distinct(configs, 'dataset')}, {distinct(train_images, 'train_images')} train images; "
        f"tested on the {test_images:,}-image test split",
        f"Recipe: {distinct(configs, 'optimizer')} lr {distinct(configs, 'lr')} "
        f"(momentum {distinct(configs, 'momentum')}), {distinct(configs, 'schedule')} schedule, "
        f"batch {distinct(configs, 'batch_size')}, {distinct(configs, 'epochs')} "
        f"{'epoch' if epochs == [1] else 'epochs'} (numbered from 0)" + recipe_extras(configs),
        f"Seeds: {', '.join(map(str, spec.seeds))}",
        f"Machine: {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), "
        f"torch {run_values(runs, 'torch', machine)}, "
        + (f"{plural(int(threads), 'thread')} per run" if threads.isdigit() else f"threads per run: {threads}"),
        f"Code: {run_values(runs, 'code_version', machine)}",
        f"Total time: {training_minutes:.1f} min of training over {plural(len(runs), 'run')} "
        f"({wall_minutes:.1f} min wall clock over {len(invocations)} invocation(s)"
        f"{_interrupted(invocations)})",
    ]
