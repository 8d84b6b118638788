import sys

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


STUDENT_NET = '''
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """As a course student writes it: two convs, two linear layers, a log_softmax head."""

    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(32 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 32 * 5 * 5)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def build(width=8, num_classes=10):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''


@pytest.fixture
def student_net(tmp_path):
    """A student's model file, `nets.py`, with `Net` (log_softmax head) and `build(width, num_classes)`."""
    path = tmp_path / "student" / "nets.py"
    path.parent.mkdir()
    path.write_text(STUDENT_NET)
    return path


@pytest.fixture
def installed_package(tmp_path, monkeypatch):
    """A package `mnist_zoo` 1.0, installed as pip would leave it: a dist-info with an entry point."""
    site = tmp_path / "site"
    (site / "mnist_zoo").mkdir(parents=True)
    (site / "mnist_zoo" / "__init__.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    info = site / "mnist_zoo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mnist-zoo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mnist_ops.models]\nzoo-tiny = mnist_zoo:tiny\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("mnist_zoo", None)
