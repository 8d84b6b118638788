"""The records tables (README, docs/records.md): each seed's test accuracy in a study's last K epochs.

A record is "held" only if every one of the last K epochs reaches the bar, on every seed: no epoch
or seed is picked on the test set. `benchmarks/records.py` prints these for study directories, and
with --pool one line over the seeds of several studies of one recipe: how many held the bar, and
the exact (Clopper-Pearson) interval for the chance that a new seed does; with --paired two studies
of one recipe each on the same seeds, seed by seed, with the paired t interval of their difference.
"""

from __future__ import annotations

import os

from mnist_ops.errors import UserError
from mnist_ops.config import changed_keys
from mnist_ops.study_report.load import held_target, load_study, worst_of_last
from mnist_ops.study_report.stats import paired_interval, share_interval
from mnist_ops.study_report.tables import mean_std_min, percent, plural


def records_markdown(study_dir: str | os.PathLike, bar: float | None = None) -> str:
    """One block per variant: parameters, a seed x last-K-epochs table, mean ± std (min), seeds held."""
    spec, variants, info = load_study(study_dir)
    bar = spec.target_accuracy if bar is None else bar
    blocks = []
    for variant in variants:
        diverged = "".join(f" Seed {seed} diverged: {what}." for seed, what in sorted(variant.diverged.items()))
        if not variant.runs:
            blocks.append(f"**{variant.name}**: held ≥ {bar}% on 0 of {variant.seeds_finished} seeds.{diverged}")
            continue
        epochs = {tuple(record["epoch"] for record in run.records[-spec.last_k:]) for run in variant.runs}
        if len(epochs) != 1:
            raise UserError(f"{study_dir}: the runs of {variant.name} end at different epochs; "
                            "finish the study first")
        held = sum(held_target(run.records, bar, spec.last_k) for run in variant.runs)
        judged = epochs.pop()  # the last last_k epochs, or every epoch of a shorter run
        lines = [f"**{variant.name}**: {variant.runs[0].summary['parameters']:,} parameters, "
                 f"{len(variant.runs[0].records)} epochs; test % in the last {plural(len(judged), 'epoch')} of "
                 f"{len(variant.runs)} seeds: {mean_std_min(variant.last_epochs_test(spec.last_k), one='1 epoch')}; "
                 f"held ≥ {bar}% on {held} of {variant.seeds_finished} seeds.{diverged}",
                 "",
                 "| seed | " + " | ".join(f"epoch {epoch}" for epoch in judged) + " | min |",
                 "|---:|" + "---:|" * (len(judged) + 1)]
        for run in variant.runs:
            values = [record["test_accuracy"] for record in run.records[-spec.last_k:]]
            lines.append(f"| {run.seed} | " + " | ".join(map(percent, values)) + f" | {percent(min(values))} |")
        lines += ["", f"`{info.get('command', 'mnist-ops study --spec ' + str(study_dir) + '/spec.toml')}`"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def seed_ranges(seeds: list[int]) -> str:
    """[1, 2, 3, 5, 11, 12] -> '1-3, 5, 11-12'."""
    parts: list[list[int]] = []
    for seed in sorted(seeds):
        if parts and seed == parts[-1][-1] + 1:
            parts[-1].append(seed)
        else:
            parts.append([seed])
    return ", ".join(f"{part[0]}-{part[-1]}" if len(part) > 1 else f"{part[0]}" for part in parts)


def pooled_markdown(study_dirs: list[str | os.PathLike], bar: float | None = None, confidence: float = 0.95) -> str:
    """Every run of every variant of the studies given, pooled as one recipe: the seeds that held the bar
    in each of the last K epochs, and the interval for a new seed's chance of holding it.

    Refused unless every variant trained the same config (the seed, its best.pt target and result-neutral keys
    aside) and the studies judge the same last K epochs and target (or `bar` is given): pooling two recipes
    would credit one with the other's seeds.
    """
    studies = [(study_dir, *load_study(study_dir)) for study_dir in study_dirs]
    first_dir, first_spec, first_variants, _ = studies[0]
    asked = bar
    bar = first_spec.target_accuracy if bar is None else bar
    ignored = {"seed", "target_accuracy"}  # a run's target only picks which epoch is best.pt
    recipe = first_variants[0].config
    held = finished = 0
    seeds: list[int] = []
    values: list[float] = []
    for study_dir, spec, variants, _ in studies:
        refuse_other_judging("pool", study_dir, spec, first_dir, first_spec, bar_given=asked is not None)
        for variant in variants:
            config = variant.config
            differ = sorted(changed_keys(recipe, config, ignored))
            if differ:
                shown = ", ".join(f"{key} ({recipe.get(key)!r} against {config.get(key)!r})" for key in differ)
                raise UserError(f"cannot pool {study_dir}:{variant.name} with {first_dir}:{first_variants[0].name}: "
                                f"they differ in {shown}; pool only runs of one recipe")
            held += sum(held_target(run.records, bar, spec.last_k) for run in variant.runs)
            finished += variant.seeds_finished
            seeds += [run.seed for run in variant.runs] + list(variant.diverged)
            values += variant.last_epochs_test(spec.last_k)
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise UserError(f"seed(s) {', '.join(map(str, repeated))} appear in more than one run: "
                        "pool studies of different seeds, or a seed would count twice")
    low, high = share_interval(held, finished, confidence)
    spread = f"test % in those epochs {mean_std_min(values, one='1 epoch')}" if values else "every run diverged"
    return (f"**Pooled over {len(studies)} {'study' if len(studies) == 1 else 'studies'}** "
            f"({first_variants[0].config['model']}, seeds {seed_ranges(seeds)}): "
            f"held ≥ {bar}% in each of the last {first_spec.last_k} epochs on {held} of {finished} seeds; "
            f"{spread}. "
            f"The chance that a new seed holds it: {confidence:.0%} interval {low * 100:.1f}-{high * 100:.1f}% "
            f"(Clopper-Pearson).")


def refuse_other_judging(verb: str, study_dir, spec, first_dir, first_spec, bar_given: bool) -> None:
    """A UserError unless `spec` judges the same last K epochs as `first_spec`, and the same target
    (unless a bar is given): studies to `verb` (pool, pair) must count their seeds the same way."""
    if spec.last_k != first_spec.last_k:
        raise UserError(f"cannot {verb} {study_dir} (last {spec.last_k} epochs) with {first_dir} "
                        f"(last {first_spec.last_k}): {verb} studies judged on the same epochs")
    if spec.target_accuracy != first_spec.target_accuracy and not bar_given:
        raise UserError(f"cannot {verb} {study_dir} (target {spec.target_accuracy}%) with {first_dir} "
                        f"(target {first_spec.target_accuracy}%): give the bar to count against with --bar")


def paired_markdown(first_dir: str | os.PathLike, second_dir: str | os.PathLike, bar: float | None = None,
                    confidence: float = 0.95) -> str:
    """Two studies of one variant each, run on the same seeds: each seed's minimum test accuracy over the
    last K epochs (what a record is judged on), and the paired t interval of second minus first.

    Refused unless both judge the same last K epochs and target (or `bar` is given), no seed diverged and
    their finished seeds are the same: a pair needs one run of each recipe per seed, or each seed's luck
    would not cancel.
    """
    studies = [(study_dir, *load_study(study_dir)) for study_dir in (first_dir, second_dir)]
    for study_dir, _, variants, _ in studies:
        if len(variants) != 1:
            raise UserError(f"{study_dir} holds {len(variants)} variants; pair studies of one variant each")
    (_, first_spec, (first,), _), (_, second_spec, (second,), _) = studies
    refuse_other_judging("pair", second_dir, second_spec, first_dir, first_spec, bar_given=bar is not None)
    for study_dir, variant in ((first_dir, first), (second_dir, second)):
        if variant.diverged:
            raise UserError(f"seed(s) {seed_ranges(sorted(variant.diverged))} diverged in {study_dir}: a pair needs a "
                            "finished run of each recipe on every seed")
    first_runs, second_runs = ({run.seed: run for run in variant.runs} for variant in (first, second))
    if sorted(first_runs) != sorted(second_runs):
        raise UserError(f"{first_dir} finished seeds {seed_ranges(sorted(first_runs)) or 'none'} and {second_dir} "
                        f"seeds {seed_ranges(sorted(second_runs)) or 'none'}: pair studies with the same finished seeds")
    seeds, last_k = sorted(first_runs), first_spec.last_k
    bar = first_spec.target_accuracy if bar is None else bar

    first_values, second_values = ([worst_of_last(runs[seed].records, last_k) for seed in seeds]
                                   for runs in (first_runs, second_runs))
    rows = [f"| {seed} | {percent(a)} | {percent(b)} | {b - a:+.2f} |"
            for seed, a, b in zip(seeds, first_values, second_values)]
    held = [sum(value >= bar for value in values) for values in (first_values, second_values)]  # as held_target
    interval = paired_interval(first_values, second_values, confidence)
    verdict = ("fewer than 2 seeds: no interval" if interval is None else
               interval.without_spread_phrase(len(seeds)) if interval.without_spread else
               f"{interval.difference:+.3f} points, paired {confidence:.0%} interval {interval.low:+.3f} to "
               f"{interval.high:+.3f} over {len(seeds)} seeds: {interval.verdict}")
    return "\n".join([
        f"**{second.name} minus {first.name}**, minimum test % over the last {last_k} epochs, "
        f"seeds {seed_ranges(seeds)}: {verdict}. Held ≥ {bar}%: {held[0]} and {held[1]} of {len(seeds)} seeds.",
        "",
        f"| seed | {first.name} | {second.name} | difference |",
        "|---:|---:|---:|---:|",
        *rows,
    ])
