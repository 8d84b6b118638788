"""The records tables (README, docs/records.md): each seed's test accuracy in a study's last K epochs.

A record is "held" only if every one of the last K epochs reaches the bar, on every seed: no epoch
or seed is picked on the test set. `benchmarks/records.py` prints these for study directories.
"""

from __future__ import annotations

import os

from mnist_ops.errors import UserError
from mnist_ops.study_report.load import held_target, load_study
from mnist_ops.study_report.tables import mean_std_min, percent


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
        lines = [f"**{variant.name}**: {variant.runs[0].summary['parameters']:,} parameters, "
                 f"{len(variant.runs[0].records)} epochs; test % in the last {spec.last_k} epochs of "
                 f"{len(variant.runs)} seeds: {mean_std_min(variant.last_epochs_test(spec.last_k), one='1 epoch')}; "
                 f"held ≥ {bar}% on {held} of {variant.seeds_finished} seeds.{diverged}",
                 "",
                 "| seed | " + " | ".join(f"epoch {epoch}" for epoch in epochs.pop()) + " | min |",
                 "|---:|" + "---:|" * (spec.last_k + 1)]
        for run in variant.runs:
            values = [record["test_accuracy"] for record in run.records[-spec.last_k:]]
            lines.append(f"| {run.seed} | " + " | ".join(map(percent, values)) + f" | {percent(min(values))} |")
        lines += ["", f"`{info.get('command', 'mnist-ops study --spec ' + str(study_dir) + '/spec.toml')}`"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
