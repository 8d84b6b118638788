"""The README's records tables, from finished study directories (their copies in docs/ will do).

    python benchmarks/records.py docs/lean-2k
    python benchmarks/records.py --bar 99.5 docs/lean-8k      # count the seeds against another bar
    python benchmarks/records.py --pool docs/lean-5k-ema-alone docs/lean-5k-ema-more-seeds   # one recipe, pooled
    python benchmarks/records.py --paired docs/lean-8k-muon-seeds-31-40 docs/lean-8k-plain3-seeds-31-40

For each study and variant: the parameters, every seed's test accuracy in each of the last K
epochs (the study's `last_k`), their mean ± std and minimum over all seeds, how many seeds held
the target (the study's, or --bar) in each of those epochs, and the study's command. Printed as markdown.
--pool adds one line over all the studies given (one recipe, different seeds; refused otherwise): the
seeds that held, and the 95% Clopper-Pearson interval for the chance that a new seed holds.
--paired prints, instead, two studies of one recipe each on the same seeds side by side: each seed's
minimum over the last K epochs and the paired 95% t interval of the second minus the first.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnist_ops.errors import UserError
from mnist_ops.study_report.records import paired_markdown, pooled_markdown, records_markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study directories")
    parser.add_argument("--bar", type=float, help="count the seeds that held this accuracy (default: each study's target)")
    parser.add_argument("--pool", action="store_true",
                        help="also one line over every study given, as one recipe: seeds held and a 95%% interval")
    parser.add_argument("--paired", action="store_true",
                        help="two studies of one recipe each, on the same seeds: seed by seed, with a paired 95%% interval")
    args = parser.parse_args()
    if args.bar is not None and not 0 <= args.bar <= 100:  # nan too: "held >= nan% on 0 of 5 seeds" (a review)
        parser.error(f"--bar must be a percentage from 0 to 100, got {args.bar}")
    try:
        if args.paired:
            if len(args.studies) != 2 or args.pool:
                raise UserError("--paired takes exactly two study directories, and no --pool")
            print(paired_markdown(*args.studies, bar=args.bar))
            return 0
        blocks = [records_markdown(study, args.bar) for study in args.studies]
        print("\n\n".join(blocks + ([pooled_markdown(args.studies, args.bar)] if args.pool else [])))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more (a traceback before: a review)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
