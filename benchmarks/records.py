"""The README's records tables, from finished study directories (their copies in docs/ will do).

    python benchmarks/records.py docs/lean-2k
    python benchmarks/records.py --bar 99.5 docs/lean-8k      # count the seeds against another bar

For each study and variant: the parameters, every seed's test accuracy in each of the last K
epochs (the study's `last_k`), their mean ± std and minimum over all seeds, how many seeds held
the target (the study's, or --bar) in each of those epochs, and the study's command. Printed as markdown.
"""

from __future__ import annotations

import argparse
import sys

from mnist_ops.errors import UserError
from mnist_ops.study_report.load import held_target, load_study
from mnist_ops.study_report.tables import mean_std_min, percent


def records_markdown(study_dir: str, bar: float | None = None) -> str:
    spec, variants, info = load_study(study_dir)
    bar = spec.target_accuracy if bar is None else bar
    blocks = []
    for variant in variants:
        epochs = {tuple(record["epoch"] for record in run.records[-spec.last_k:]) for run in variant.runs}
        if len(epochs) != 1:
            raise UserError(f"{study_dir}: the runs of {variant.name} end at different epochs; finish the study first")
        held = sum(held_target(run.records, bar, spec.last_k) for run in variant.runs)
        lines = [f"**{variant.name}**: {variant.runs[0].summary['parameters']:,} parameters, "
                 f"{len(variant.runs[0].records)} epochs; test % in the last {spec.last_k} epochs of {len(variant.runs)} "
                 f"seeds: {mean_std_min(variant.last_epochs_test(spec.last_k), one='1 epoch')}; "
                 f"held ≥ {bar}% on {held} of {len(variant.runs)} seeds.",
                 "",
                 "| seed | " + " | ".join(f"epoch {epoch}" for epoch in epochs.pop()) + " | min |",
                 "|---:|" + "---:|" * (spec.last_k + 1)]
        for run in variant.runs:
            values = [record["test_accuracy"] for record in run.records[-spec.last_k:]]
            lines.append(f"| {run.seed} | " + " | ".join(map(percent, values)) + f" | {percent(min(values))} |")
        lines += ["", f"`{info.get('command', 'mnist-ops study --spec ' + str(study_dir) + '/spec.toml')}`"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study directories")
    parser.add_argument("--bar", type=float, help="count the seeds that held this accuracy (default: each study's target)")
    args = parser.parse_args()
    try:
        print("\n\n".join(records_markdown(study, args.bar) for study in args.studies))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
