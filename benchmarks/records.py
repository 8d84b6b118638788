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
from mnist_ops.study_report.records import records_markdown


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
