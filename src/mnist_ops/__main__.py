"""`python -m mnist_ops`: the `mnist-ops` command."""
import sys

from mnist_ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
