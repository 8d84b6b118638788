import pytest

from mnist_ops.data import DATASETS, default_root


@pytest.fixture(scope="session")
def mnist_root():
    """The real MNIST files, placed by `mnist-ops data fetch` (the test command runs it first)."""
    root = default_root()
    missing = [name for name in DATASETS["mnist"].md5 if not (root / "mnist" / name).is_file()]
    if missing:
        pytest.fail(f"MNIST not found under {root}: run `mnist-ops data fetch` first (missing {missing})")
    return root
