import sys

from mnist_ops.cli import main

sys.exit(main())
